"""kd_ref.distill.label_cache: the dataset generator's labels computed once, float32 on disk, resumable."""
import numpy as np
import pytest

from kd_ref.distill import objective
from kd_ref.distill.compression import (CrossEntropyLoss, DatasetGenerator, DerivativeSquareErrorLoss,
                                        EnsembleTeacher, Labels, teacher_targets)
from kd_ref.distill.label_cache import (LabelCache, LabelledDatasetGenerator, build_label_cache, chunk_bounds,
                                        label_chunk, labelled_objective)
from kd_ref.mlp import MLP
from kd_ref.optim import Adadelta, train

NAMES = ["relu", "relu", "log_softmax"]


def _ensemble(rng, combine, d=12, c=4):
    return EnsembleTeacher([MLP([d, 9, 7, c], NAMES, rng) for _ in range(3)], combine=combine)


class _InterruptedAfter:
    """A teacher that raises KeyboardInterrupt on its ``n``-th call (a Ctrl-C in the middle of a build)."""

    def __init__(self, teacher, n):
        self.teacher, self.n, self.calls = teacher, n, 0
        self.n_inputs, self.n_outputs = teacher.n_inputs, teacher.n_outputs

    def label(self, x, derivatives=False):
        self.calls += 1
        if self.calls == self.n:
            raise KeyboardInterrupt
        return self.teacher.label(x, derivatives)


def test_the_cache_holds_the_teachers_labels_rounded_to_float32(tmp_path, rng):
    teacher = _ensemble(rng, "log_mean_exp")
    x = rng.uniform(size=(23, 12))
    cache = build_label_cache(tmp_path / "labels", teacher, x, True, chunk=10, progress=False)
    assert cache.probs.dtype == cache.d_log_probs.dtype == np.float32 and isinstance(cache.probs, np.memmap)
    assert chunk_bounds(23, 10) == [(0, 10), (10, 20), (20, 23)]
    for start, stop in chunk_bounds(23, 10):           # exactly the chunk's float64 labels, rounded to float32
        probs, d = label_chunk(teacher, x[start:stop], True)
        np.testing.assert_array_equal(cache.probs[start:stop], probs)
        np.testing.assert_array_equal(cache.d_log_probs[start:stop], d)
    rows = rng.permutation(23)[:5]
    exact, got = teacher.label(x[rows], derivatives=True), cache[rows]
    assert got.probs.dtype == np.float64 and got.d_log_probs.shape == (5, 4, 12)
    half_ulp = 2.0**-24 * (1 + 1e-9)                   # + BLAS's 1e-14: labels of 5 rows, not of the chunk's 10
    assert np.all(np.abs(got.probs - exact.probs) <= half_ulp * np.abs(exact.probs) + 1e-13)
    assert np.all(np.abs(got.d_log_probs - exact.d_log_probs) <= half_ulp * np.abs(exact.d_log_probs) + 1e-12)
    assert not np.array_equal(got.probs, exact.probs)  # control: float32 is not float64
    again = LabelCache.open(tmp_path / "labels")       # a second run opens it as it is
    np.testing.assert_array_equal(again.d_log_probs, cache.d_log_probs)
    probs_only = build_label_cache(tmp_path / "ce", _ensemble(rng, "mean"), x, False, progress=False)
    assert probs_only.d_log_probs is None and probs_only[rows].d_log_probs is None


def test_an_interrupted_build_resumes_with_the_chunks_not_done(tmp_path, rng):
    teacher = _ensemble(rng, "log_mean_exp")
    x = rng.uniform(size=(35, 12))
    whole = build_label_cache(tmp_path / "whole", teacher, x, True, chunk=10, progress=False)
    with pytest.raises(KeyboardInterrupt):
        build_label_cache(tmp_path / "cut", _InterruptedAfter(teacher, 3), x, True, chunk=10, progress=False)
    partial = tmp_path / "cut.partial"
    assert not (tmp_path / "cut").exists() and sorted(p.name for p in partial.glob("done_*")) == ["done_0", "done_1"]
    counting = _InterruptedAfter(teacher, 0)
    cut = build_label_cache(tmp_path / "cut", counting, x, True, chunk=10, progress=False)
    assert counting.calls == 2 and not partial.exists()        # chunks 2 and 3 only
    np.testing.assert_array_equal(cut.probs, whole.probs)
    np.testing.assert_array_equal(cut.d_log_probs, whole.d_log_probs)
    # a partial build for other data (another shape) is not resumed but started again
    with pytest.raises(KeyboardInterrupt):
        build_label_cache(tmp_path / "other", _InterruptedAfter(teacher, 2), x[:20], True, chunk=10, progress=False)
    other = build_label_cache(tmp_path / "other", teacher, x, True, chunk=10, progress=False)
    np.testing.assert_array_equal(other.d_log_probs, whole.d_log_probs)


def test_two_processes_build_the_same_cache(tmp_path, rng):
    teacher = _ensemble(rng, "log_mean_exp")
    x = rng.uniform(size=(30, 12))
    one = build_label_cache(tmp_path / "one", teacher, x, True, chunk=8, progress=False)
    two = build_label_cache(tmp_path / "two", teacher, x, True, chunk=8, jobs=2, progress=False)
    np.testing.assert_array_equal(one.d_log_probs, two.d_log_probs)
    np.testing.assert_array_equal(one.probs, two.probs)


class _ChunkedRoundedTeacher:
    """The uncached path the cache must reproduce: at every minibatch, label *all* images afresh in the cache's
    chunks (so BLAS rounds each image's labels as when the cache was built), round them to float32 as the cache
    does, and return the minibatch's rows (found by their pixels)."""

    def __init__(self, teacher, x, chunk):
        self.teacher, self.x, self.chunk = teacher, x, chunk
        self.n_inputs, self.n_outputs = teacher.n_inputs, teacher.n_outputs
        self.row = {r.tobytes(): j for j, r in enumerate(x)}

    def label(self, xb, derivatives=False):
        parts = [label_chunk(self.teacher, self.x[a:b], derivatives) for a, b in chunk_bounds(len(self.x), self.chunk)]
        rows = [self.row[r.tobytes()] for r in xb]
        probs = np.concatenate([p for p, _ in parts])[rows].astype(np.float64)
        d = np.concatenate([g for _, g in parts])[rows].astype(np.float64) if derivatives else None
        with np.errstate(divide="ignore"):
            return Labels(probs, np.log(probs), d)


@pytest.mark.parametrize("loss_class, combine", [(CrossEntropyLoss, "mean"), (DerivativeSquareErrorLoss, "log_mean_exp")])
def test_students_are_those_of_the_uncached_path_that_rounds_the_same_way(tmp_path, rng, loss_class, combine):
    teacher = _ensemble(rng, combine)
    x = rng.uniform(size=(26, 12))
    loss = loss_class()
    cache = build_label_cache(tmp_path / "labels", teacher, x, loss.needs_derivatives, chunk=10, progress=False)

    def student(cached, reference=None):
        net = MLP([12, 5, 4, 4], NAMES, np.random.default_rng(3))
        if cached:
            gen = LabelledDatasetGenerator(x, cache, 4, np.random.default_rng(4))
            fn = labelled_objective(net, loss)
        else:
            gen = DatasetGenerator(x, 4, np.random.default_rng(4))
            fn = objective(net, loss, teacher_targets(net, reference, loss))
        train(net.params, fn, gen, Adadelta(), 30, progress=False)
        return net.params

    cached = student(True)
    np.testing.assert_array_equal(cached, student(False, _ChunkedRoundedTeacher(teacher, x, 10)))
    plain = student(False, teacher)                  # float64 labels of each minibatch: close, not identical
    assert not np.array_equal(cached, plain)
    np.testing.assert_allclose(cached, plain, rtol=0, atol=1e-4)


def test_bad_input_is_named(tmp_path, rng):
    teacher = _ensemble(rng, "log_mean_exp")
    x = rng.uniform(size=(6, 12))
    with pytest.raises(ValueError, match=r"generator: expected minibatches of shape \(N, 12\), received shape \(6, 5\)"):
        build_label_cache(tmp_path / "a", teacher, x[:, :5], True, progress=False)
    assert not (tmp_path / "a.partial").exists()
    probs_only = build_label_cache(tmp_path / "b", _ensemble(rng, "mean"), x, False, progress=False)
    with pytest.raises(ValueError, match="labels: expected a cache of 5 rows like data, received 6"):
        LabelledDatasetGenerator(x[:5], probs_only, 2, rng)
    net = MLP([12, 4, 4], ["relu", "log_softmax"], rng)
    fn = labelled_objective(net, DerivativeSquareErrorLoss())
    with pytest.raises(ValueError, match="labels: expected a label cache with input derivatives"):
        fn(LabelledDatasetGenerator(x, probs_only, 2, rng)())
    (tmp_path / "c").mkdir()
    np.save(tmp_path / "c" / "probs.npy", np.zeros((3, 2)))
    with pytest.raises(ValueError, match="cache: expected 2-d float32 labels in .*probs.npy, received 2-d float64"):
        LabelCache.open(tmp_path / "c")
