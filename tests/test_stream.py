"""The recorded training stream (record_stream, RecordedStream): the live stream's minibatches, bit for bit; students
trained on it are the students trained on the live stream; an interrupted recording resumes to the same bytes."""
import numpy as np
import pytest

from kd_ref import npzfile
from kd_ref.distill.generative import KLLoss, ChainStream, RecordedStream, distill_nade, record_stream
from kd_ref.nade import NADE
from kd_ref.optim import CheckpointError, Interrupted
from kd_ref.progress import Progress
from kd_ref.rbm import RBM

B, K, BURN, STEPS = 5, 15, 7, 24


def _rbm():
    return RBM(10, 4, np.random.default_rng(0), init_std=1.0)


def _record(tmp_path, name="stream.npz", dtype=np.float64, **kwargs):
    path = tmp_path / name
    record_stream(_rbm(), B, STEPS, np.random.default_rng(3), path, n_chains=K, burn_in=BURN, dtype=dtype, **kwargs)
    return path


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_recording_plays_back_the_live_stream(tmp_path, dtype):
    path = _record(tmp_path, dtype=dtype)
    live = ChainStream(_rbm(), B, np.random.default_rng(3), n_chains=K, burn_in=BURN, dtype=dtype)
    played = RecordedStream(path, dtype=dtype)
    assert (played.n_batches, played.batch_size, played.dim, played.n_chains) == (STEPS, B, 10, K)
    for _ in range(STEPS):
        batch = played()
        assert batch.dtype == dtype
        np.testing.assert_array_equal(batch, live())
    with pytest.raises(ValueError, match="stream: expected at most the 24 recorded minibatches"):
        played()
    # the control: another generator's stream differs
    other = ChainStream(_rbm(), B, np.random.default_rng(4), n_chains=K, burn_in=BURN, dtype=dtype)
    assert not all(np.array_equal(a, other()) for a in RecordedStream(path, dtype=dtype)._rows(0, STEPS * B)
                   .reshape(STEPS, B, 10))


def _student(stream, steps=STEPS, **kwargs):
    nade = NADE(10, 6, np.random.default_rng(8))
    result = distill_nade(nade, KLLoss(), stream, _rbm(), steps, bound_samples=K, rng=np.random.default_rng(9),
                          monitor_every=6, progress=False, **kwargs)
    return nade, result


def test_students_trained_on_the_recording_are_those_of_the_live_stream(tmp_path):
    path = _record(tmp_path)
    live, _ = _student(ChainStream(_rbm(), B, np.random.default_rng(3), n_chains=K, burn_in=BURN))
    played, result = _student(RecordedStream(path))
    np.testing.assert_array_equal(played.params, live.params)
    assert [step for step, _ in result.monitor] == [6, 12, 18, 24]
    assert all(np.isfinite(v["upper"]) and np.isfinite(v["lower"]) for _, v in result.monitor)
    # a checkpointed student resumes on the recording at the minibatch it stopped at
    class Cut(RecordedStream):                            # a Ctrl-C in the middle of step 11's minibatch
        def __call__(self):
            if self.position == 10:
                raise KeyboardInterrupt
            return super().__call__()
    with pytest.raises(Interrupted):
        _student(Cut(path), checkpoint=str(tmp_path / "nade.ckpt"), checkpoint_every=4)
    resumed, _ = _student(RecordedStream(path), checkpoint=str(tmp_path / "nade.ckpt"), checkpoint_every=4)
    np.testing.assert_array_equal(resumed.params, live.params)


# Each sweep makes two progress updates, the sweep's own and the recording's: update 2j ends sweep j (a Ctrl-C
# between sweeps, saved at j), update 2j + 1 is inside sweep j + 1 (saved at the last checkpoint, every 4 sweeps).
@pytest.mark.parametrize("at, saved", [(6, 3), (2 * (BURN + 5), BURN + 5), (2 * (BURN + STEPS - 1), BURN + STEPS - 1),
                                       (2 * (BURN + 5) + 1, 12)])    # burn-in, recording, near the end, mid-sweep
def test_an_interrupted_recording_resumes_to_the_same_bytes(tmp_path, monkeypatch, at, saved):
    whole = _record(tmp_path, "whole.npz")
    plain = Progress.update
    calls = {"n": 0}

    def update(self, done, **values):                     # the at-th sweep's progress line raises, as a Ctrl-C would
        calls["n"] += 1
        if calls["n"] == at:
            raise KeyboardInterrupt
        return plain(self, done, **values)
    monkeypatch.setattr(Progress, "update", update)
    ckpt = tmp_path / "stream.ckpt"
    with pytest.raises(Interrupted) as info:
        _record(tmp_path, "cut.npz", checkpoint=ckpt, checkpoint_every=4)
    assert info.value.saved_step == saved and ckpt.exists() and not (tmp_path / "cut.npz").exists()
    monkeypatch.setattr(Progress, "update", plain)
    _record(tmp_path, "cut.npz", checkpoint=ckpt, checkpoint_every=4)
    a, b = npzfile.load(whole, "kd_ref.recorded_stream", {1}), npzfile.load(tmp_path / "cut.npz", "kd_ref.recorded_stream", {1})
    np.testing.assert_array_equal(a["bits"], b["bits"])
    assert a["bits"].shape == (STEPS * B, 2) and a["bits"].dtype == np.uint8
    # the checkpoint (complete now) of other settings is refused, naming what differs
    with pytest.raises(CheckpointError, match="was made with other settings"):
        record_stream(_rbm(), B, STEPS + 1, np.random.default_rng(3), tmp_path / "x.npz", n_chains=K, burn_in=BURN,
                      checkpoint=ckpt)
