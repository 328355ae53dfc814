"""MUNGE pseudo-data (S1.8): exact blocked nearest neighbours, swap rate, local variance, generator state."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import stats

from kd_ref.distill import distill
from kd_ref.distill.compression import CrossEntropyLoss, MLPTeacher, teacher_targets
from kd_ref.distill.munge import MungeGenerator, munge, nearest_neighbours, reference_nearest_neighbours
from kd_ref.mlp import MLP
from kd_ref.optim import SGD


@given(st.integers(0, 2**32 - 1), st.integers(2, 60), st.integers(1, 20), st.integers(1, 7),
       st.sampled_from([1, 3, 16]), st.booleans())
def test_blocked_search_equals_the_plain_search(seed, n, d, block, dims, duplicates):
    """Lower-bound screening in a principal subspace changes the work, not the answer (ties to the lowest index)."""
    rng = np.random.default_rng(seed)
    data = rng.normal(size=(n, d))
    if duplicates:           # exact ties: copies of rows, and a grid
        data[n // 2:] = data[: n - n // 2]
        data = np.round(data)
    got = nearest_neighbours(data, block=block, dims=dims, chunk=max(1, block // 2))
    assert np.array_equal(got, reference_nearest_neighbours(data))


def test_p_zero_returns_the_data_and_p_one_swaps_everything(rng):
    data = rng.normal(size=(30, 5))
    nn = nearest_neighbours(data)
    rows = rng.permutation(30)
    assert np.array_equal(munge(data, nn, rows, 0.0, 2.0, rng), data[rows])
    out = munge(data, nn, rows, 1.0, 1e12, rng)                    # s huge: the draw is e' itself
    np.testing.assert_allclose(out, data[nn[rows]], rtol=0, atol=1e-10)


def test_swap_rate_is_p_within_4_standard_errors(rng):
    data = rng.normal(size=(200, 50))
    nn = nearest_neighbours(data)
    p, m = 0.3, 200 * 50 * 5
    rows = np.tile(np.arange(200), 5)
    swapped = munge(data, nn, rows, p, 2.0, rng) != data[rows]
    se = np.sqrt(p * (1 - p) / m)
    assert abs(swapped.mean() - p) < 4 * se
    assert abs(swapped.mean() - 0.35) > 4 * se                       # the control: a wrong rate is resolved


def test_local_variance_on_two_points_follows_the_normal_law_and_a_wrong_variance_fails(rng):
    """Two points e, e': a swapped attribute of e is N(e'_a, (|e_a - e'_a|/s)^2) (KS test, fixed seed)."""
    e, e2, s = np.array([0.0, 1.0]), np.array([3.0, -1.0]), 4.0
    data = np.stack([e, e2])
    nn = nearest_neighbours(data)
    assert list(nn) == [1, 0]
    out = munge(data, nn, np.zeros(20000, dtype=int), 1.0, s, rng)
    for a in range(2):
        sd = abs(e[a] - e2[a]) / s
        assert stats.kstest(out[:, a], "norm", args=(e2[a], sd)).pvalue > 1e-3
        assert stats.kstest(out[:, a], "norm", args=(e2[a], 1.2 * sd)).pvalue < 1e-6     # control must fail


def test_generator_passes_resumes_and_trains_a_student(rng):
    data = rng.normal(size=(40, 3))
    gen = MungeGenerator(data, 0.2, 2.0, 7, np.random.default_rng(1))
    assert gen.dim == 3 and gen.n == 40 and gen().shape == (7, 3)
    state = gen.state()
    a = gen()
    gen.load_state(state)
    assert np.array_equal(gen(), a)
    same = MungeGenerator(data, 0.2, 2.0, 7, np.random.default_rng(1), neighbours=gen.neighbours)
    same()
    assert np.array_equal(same(), a)
    student = MLP([3, 4, 2], ["logistic", "log_softmax"], rng)
    teacher = MLPTeacher(MLP([3, 5, 2], ["relu", "log_softmax"], rng))
    loss = CrossEntropyLoss()
    before = gen.examples_drawn
    result = distill(student, loss, gen, teacher_targets(student, teacher, loss), SGD(0.1), 20, progress=False)
    assert np.all(np.isfinite(result.losses)) and gen.examples_drawn == before + 20 * 7


def test_bad_input_is_refused_by_name(rng):
    data = rng.normal(size=(10, 2))
    with pytest.raises(ValueError, match="^p: "):
        MungeGenerator(data, 1.5, 2.0, 5, rng)
    with pytest.raises(ValueError, match="^s: "):
        MungeGenerator(data, 0.5, 0.0, 5, rng)
    with pytest.raises(ValueError, match="^data: expected at least 2 rows"):
        MungeGenerator(data[:1], 0.5, 2.0, 5, rng)
    with pytest.raises(ValueError, match="^neighbours: "):
        MungeGenerator(data, 0.5, 2.0, 5, rng, neighbours=np.arange(10))
    with pytest.raises(TypeError, match="^rng: "):
        munge(data, nearest_neighbours(data), np.arange(3), 0.5, 2.0, 0)
