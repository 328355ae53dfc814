"""Issue 11, section 4, across the package: complex arrays refused at every entry point, options checked
before anything changes, small helpers checking their inputs, and save/load at exactly the path given.

Module-specific cases (MoG, EP, slice sampler, partition estimators, gradcheck) are in those modules' test
files; this file holds the checks shared by every model and the ones for MLP, NADE, RBM, compression and
the data helpers.
"""
import os

import numpy as np
import pytest

from kd_ref import datasets, download, toydata
from kd_ref._validation import (as_float_array, check_binary_dataset, check_dataset, check_index, check_labels,
                                check_permutation, check_training_options)
from kd_ref.distill import objective
from kd_ref.distill.compression import (CrossEntropyLoss, DerivativeSquareErrorLoss, EnsembleTeacher, Labels,
                                        MLPTeacher, SquareErrorLoss, log_probs_of, teacher_targets)
from kd_ref.metrics import Score, mean_2se, paired_difference, score
from kd_ref.mlp import MLP
from kd_ref.mog import MoG
from kd_ref.nade import NADE, fit_nade, log_likelihood_objective
from kd_ref.optim import Adadelta, MinibatchDrawer, SGD
from kd_ref.outputs import DotProduct
from kd_ref.rbm import RBM, GibbsSampler, cd_objective, fit_cd, hill_climb

COMPLEX = "expected real numbers, received a complex array"


# ------------------------------------------------------------------------------- the root checks
@pytest.mark.parametrize("value, match", [
    (np.array([1.0 + 0j]), COMPLEX),                       # even a zero imaginary part
    ([1.0, 2j], COMPLEX),
    (np.array([1j], dtype=object), r"received an entry 1j \(complex\)"),
    (np.array(["1.5"]), "received dtype <U3"),             # numpy alone would parse the string
    (np.array([None, 1.0]), r"received an entry None"),    # numpy alone would make it NaN
    (np.array(["2020-01-01"], dtype="datetime64[D]"), "received dtype datetime64"),
    ([[1.0, 2.0], [3.0]], r"expected an array of real numbers, received list"),
])
def test_as_float_array_refuses_everything_but_real_numbers(value, match):
    with pytest.raises(TypeError, match=f"x: {match}" if match == COMPLEX else match):
        as_float_array(value, "x", finite=False)


def test_real_inputs_convert_as_before():
    np.testing.assert_array_equal(as_float_array([True, 2, np.uint8(3), 4.5], "x"), [1.0, 2.0, 3.0, 4.5])
    from fractions import Fraction
    assert as_float_array([Fraction(1, 4)], "x")[0] == 0.25
    data = np.zeros((3, 2), dtype=np.uint8)
    assert check_dataset(data, "data") is data and check_binary_dataset(data, "data", 2) is data


def test_checks_that_do_not_convert_refuse_complex_too(rng):
    with pytest.raises(TypeError, match=f"data: {COMPLEX}"):
        check_binary_dataset(np.zeros((2, 3), dtype=complex), "data", 3)
    with pytest.raises(TypeError, match=f"data: {COMPLEX}"):
        MinibatchDrawer(np.ones((4, 2)) * (1 + 1j), 2, rng)
    with pytest.raises(ValueError, match=r"order: expected an integer array of shape \(3,\), received complex128"):
        check_permutation(np.arange(3) + 0j, "order", 3)
    with pytest.raises(ValueError, match=r"order: expected an integer array of shape \(3,\), received list"):
        check_permutation([[0, 1], [2]], "order", 3)


def test_indices_labels_and_training_options():
    assert check_index(np.int64(2), "i", 3) == 2
    for bad in (True, 1.0, "1"):
        with pytest.raises(TypeError, match=f"i: expected an integer index in 0..2, received {bad!r}"):
            check_index(bad, "i", 3)
    with pytest.raises(ValueError, match="i: expected an integer index in 0..2, received -1"):
        check_index(-1, "i", 3)
    with pytest.raises(ValueError, match=r"labels: expected labels in 0..2, received labels in -1..2"):
        check_labels([0, -1, 2], "labels", 3)
    with pytest.raises(ValueError, match=r"labels: expected an integer array of shape \(2,\), received bool"):
        check_labels([True, False], "labels", 3, n=2)
    with pytest.raises(TypeError, match=r"optimizer: expected an optimiser .* received int without step"):
        check_training_options(optimizer=3)
    with pytest.raises(TypeError, match=r"callback: expected a callable \(step, loss\) -> bool or None, received 1"):
        check_training_options(callback=1)
    with pytest.raises(TypeError, match="progress: expected True or False, received 'no'"):
        check_training_options(progress="no")
    with pytest.raises(TypeError, match=r"checkpoint: expected a file path \(str or os.PathLike\) or None"):
        check_training_options(checkpoint=5)
    with pytest.raises(TypeError, match="label: expected a str, received 3"):
        check_training_options(label=3)


# ------------------------------------------------------------------- complex input, every family
def _mlp(rng, last="log_softmax"):
    return MLP([3, 4, 2], ["relu", last], rng)


def test_complex_input_is_refused_by_the_mlp(rng):
    net, x = _mlp(rng), rng.normal(size=(5, 3))
    out = DotProduct(np.ones((5, 2)))
    calls = [lambda: net.forward(x + 0j), lambda: net.predict(x * 1j), lambda: net.grad(x + 0j, out),
             lambda: net.hvp(x + 0j, out, v_params=np.ones(net.n_params)),
             lambda: net.hvp(x, out, v_params=np.ones(net.n_params) + 0j),
             lambda: net.jacobian(x + 0j), lambda: net.set_params(np.zeros(net.n_params) + 0j),
             lambda: net.backprop(net.forward(x), np.ones((5, 2)) + 0j)]
    for call in calls:
        with pytest.raises(TypeError, match=COMPLEX):
            call()


def test_complex_input_is_refused_by_nade_and_rbm(rng):
    nade, rbm, x = NADE(4, 3, rng, init_std=1.0), RBM(4, 3, rng, init_std=1.0), np.zeros((2, 4))
    for model in (nade, rbm):
        value = model.log_prob if model is nade else model.log_phi
        for call in (lambda: value(x + 0j), lambda: value(x + 0j, continuous=True),
                     lambda: model.grad(x + 0j), lambda: model.grad(x, weights=np.ones(2) + 0j),
                     lambda: model.hvp(x, v_params=np.ones(model.n_params) + 0j),
                     lambda: model.hvp(x, v_x=x + 0j, continuous=True),
                     lambda: model.set_params(np.zeros(model.n_params) + 0j)):
            with pytest.raises(TypeError, match=COMPLEX):
                call()
        with pytest.raises(TypeError, match="flat: expected a real array, received dtype complex128"):
            model.param_views(np.zeros(model.n_params, dtype=complex))
    with pytest.raises(TypeError, match=f"data: {COMPLEX}"):
        nade.fit(np.zeros((5, 4), dtype=complex), rng, n_steps=1, progress=False)
    with pytest.raises(TypeError, match=f"data: {COMPLEX}"):
        nade.set_biases_from_data(np.zeros((5, 4), dtype=complex))
    with pytest.raises(TypeError, match=f"data: {COMPLEX}"):
        fit_cd(rbm, np.zeros((5, 4), dtype=complex), rng, n_steps=1, progress=False)
    with pytest.raises(TypeError, match=f"init: {COMPLEX}"):
        GibbsSampler(rbm, rng, init=np.zeros((2, 4)) + 0j)
    with pytest.raises(TypeError, match=f"init: {COMPLEX}"):
        hill_climb(rbm, rng, init=np.zeros((1, 4)) + 0j)
    with pytest.raises(TypeError, match=f"x: {COMPLEX}"):
        rbm.hidden_probs(x + 0j)
    with pytest.raises(TypeError, match=f"W: {COMPLEX}"):
        RBM.from_arrays(np.zeros((4, 3)) + 0j, np.zeros(4), np.zeros(3))


def test_complex_input_is_refused_by_compression_losses_and_teachers(rng):
    student, teacher_net = _mlp(rng), _mlp(rng)
    x = rng.normal(size=(5, 3))
    labels = MLPTeacher(teacher_net).label(x, derivatives=True)
    for teacher in (MLPTeacher(teacher_net), EnsembleTeacher([teacher_net, _mlp(rng)], "log_mean_exp")):
        with pytest.raises(TypeError, match=COMPLEX):
            teacher.label(x + 0j, derivatives=True)
    for loss in (CrossEntropyLoss(), SquareErrorLoss(), DerivativeSquareErrorLoss()):
        with pytest.raises(TypeError, match=COMPLEX):
            loss(student, x + 0j, labels)
        with pytest.raises(TypeError, match=f"generator: {COMPLEX}"):
            objective(student, loss, teacher_targets(student, MLPTeacher(teacher_net), loss))(x + 0j)
    with pytest.raises(TypeError, match=f"probs: {COMPLEX}"):
        Labels.from_probs(np.full((2, 2), 0.5) + 0j)
    with pytest.raises(TypeError, match=f"log_probs: {COMPLEX}"):
        score(np.zeros((2, 2)) + 0j, np.array([0, 1]))
    with pytest.raises(TypeError, match=f"x: {COMPLEX}"):
        log_probs_of(student, x + 0j)


def test_complex_input_is_refused_by_the_data_helpers(rng):
    for call in (lambda: datasets.binarize(np.zeros(3) + 0j),
                 lambda: datasets.binarize_stochastic(np.zeros(3) + 0j, rng),
                 lambda: toydata.noisy_prototypes(3, rng, prototypes=np.zeros((2, 4)) + 0j),
                 lambda: toydata.noisy_prototypes_log_prob(np.zeros((1, 4)) + 0j, np.zeros((2, 4)), 0.1)):
        with pytest.raises(TypeError, match=COMPLEX):
            call()


# --------------------------------------------------------- options checked before anything changes
def _rbm_state(rbm, rng, optimizer):
    return rbm.params.copy(), rng.bit_generator.state, optimizer.state()


@pytest.mark.parametrize("kwargs, err, match", [
    ({"optimizer": "sgd"}, TypeError, "optimizer: expected an optimiser"),
    ({"monitor": 3.0}, TypeError, "monitor: expected a callable"),
    ({"monitor_every": 0}, ValueError, "monitor_every: expected an integer >= 1, received 0"),
    ({"progress": "yes"}, TypeError, "progress: expected True or False"),
    ({"checkpoint": 7}, TypeError, "checkpoint: expected a file path"),
    ({"label": None}, TypeError, "label: expected a str"),
    ({"batch_size": 0}, ValueError, "batch_size: expected an integer >= 1, received 0"),
    ({"k": 1.5}, TypeError, "k: expected an integer >= 1"),
])
def test_fit_cd_checks_every_option_before_the_data_are_shuffled(kwargs, err, match):
    rbm = RBM(4, 3, np.random.default_rng(0), init_std=1.0)
    rng = np.random.default_rng(1)
    opt = SGD(0.1)
    before = _rbm_state(rbm, rng, opt)
    kwargs = {"optimizer": opt, "progress": False, **kwargs}
    with pytest.raises(err, match=match):
        fit_cd(rbm, np.zeros((6, 4)), rng, n_steps=3, **kwargs)
    after = _rbm_state(rbm, rng, opt)
    assert np.array_equal(after[0], before[0]) and after[1] == before[1]
    assert all(np.array_equal(after[2][k], v) for k, v in before[2].items())


def test_rbm_samplers_and_hill_climbing_check_options_before_drawing():
    rbm = RBM(4, 3, np.random.default_rng(0), init_std=1.0)
    rng = np.random.default_rng(2)
    state, params = rng.bit_generator.state, rbm.params.copy()
    with pytest.raises(TypeError, match="include_zeros: expected True or False, received 1"):
        hill_climb(rbm, rng, include_zeros=1)
    with pytest.raises(TypeError, match="progress: expected True or False"):
        hill_climb(rbm, rng, progress="no")
    chains = GibbsSampler(rbm, np.random.default_rng(3), n_chains=2)
    x0 = chains.x.copy()
    with pytest.raises(TypeError, match="progress: expected True or False"):
        chains.sample(2, burn_in=3, progress="no")
    with pytest.raises(TypeError, match="rbm: expected a kd_ref.rbm.RBM, received NADE"):
        cd_objective(NADE(4, 3, None), 1, rng)
    with pytest.raises(TypeError, match="continuous: expected True or False, received 'yes'"):
        rbm.log_phi(np.zeros(4), continuous="yes")
    with pytest.raises(TypeError, match="param_grads: expected True or False, received None"):
        rbm.grad(np.zeros(4), param_grads=None)
    assert rng.bit_generator.state == state and np.array_equal(rbm.params, params)
    assert np.array_equal(chains.x, x0) and chains.sweeps == 0


@pytest.mark.parametrize("kwargs, err, match", [
    ({"optimizer": object()}, TypeError, "optimizer: expected an optimiser"),
    ({"callback": "stop"}, TypeError, r"callback: expected a callable \(step, loss\) -> bool"),
    ({"progress": 1}, TypeError, "progress: expected True or False, received 1"),
    ({"checkpoint": b"f"}, TypeError, "checkpoint: expected a file path"),
    ({"label": 0}, TypeError, "label: expected a str, received 0"),
    ({"init_biases": "yes"}, TypeError, "init_biases: expected True or False, received 'yes'"),
])
def test_nade_fit_checks_every_option_before_setting_biases_or_shuffling(kwargs, err, match):
    nade = NADE(4, 3, np.random.default_rng(0), init_std=1.0)
    rng, opt = np.random.default_rng(1), Adadelta()
    params, state = nade.params.copy(), rng.bit_generator.state
    kwargs = {"optimizer": opt, "progress": False, "init_biases": True, **kwargs}
    with pytest.raises(err, match=match):
        nade.fit(np.ones((6, 4)), rng, n_steps=3, **kwargs)
    assert np.array_equal(nade.params, params) and rng.bit_generator.state == state
    assert opt.state()["t"] == 0 and opt.mean_sq_grad is None


def test_nade_fit_that_fails_after_setting_the_biases_leaves_them_as_they_were(tmp_path):
    """init_biases sets b, then train refuses a damaged checkpoint file: b is back to what it was."""
    nade = NADE(4, 3, np.random.default_rng(0), init_std=1.0)
    params = nade.params.copy()
    broken = tmp_path / "ckpt.npz"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="checkpoint"):
        nade.fit(np.ones((6, 4)), np.random.default_rng(1), n_steps=3, progress=False, init_biases=True,
                 checkpoint=broken)
    assert np.array_equal(nade.params, params)
    # the control: without the failure the same call does set b (a step of 1e-300 leaves it as set)
    twin = NADE(4, 3, np.random.default_rng(0), init_std=1.0)
    twin.set_biases_from_data(np.ones((6, 4)))
    nade.fit(np.ones((6, 4)), np.random.default_rng(1), n_steps=1, progress=False, init_biases=True,
             optimizer=SGD(1e-300))
    assert np.array_equal(nade.b, twin.b) and not np.array_equal(nade.params, params)


def test_nade_helpers_check_their_arguments():
    nade = NADE(4, 3, np.random.default_rng(0))
    with pytest.raises(TypeError, match="nade: expected a kd_ref.nade.NADE, received RBM"):
        log_likelihood_objective(RBM(4, 3, None))
    with pytest.raises(TypeError, match=r"callback: expected a callable"):
        fit_nade(nade, lambda: np.zeros((2, 4)), 3, callback=True, progress=False)
    with pytest.raises(TypeError, match="input_grads: expected True or False, received 0"):
        nade.grad(np.zeros(4), input_grads=0)


# --------------------------------------------------------------------------- MLP Jacobian indices
@pytest.mark.parametrize("outputs, err, match", [
    ([True], TypeError, r"outputs: expected indices in 0..1, received True at position 0 \(bool"),
    ([0, 1.0], TypeError, r"received 1.0 at position 1 \(float, not an integer\)"),
    ([2], ValueError, r"outputs: expected indices in 0..1, received 2 at position 0"),
    ([-1], ValueError, r"received -1 at position 0"),
    ([], ValueError, "outputs: expected at least one index in 0..1, received an empty sequence"),
    (1, TypeError, "outputs: expected a sequence of integer indices in 0..1, received 1"),
    ("01", TypeError, "outputs: expected a sequence of integer indices"),
])
def test_jacobian_output_indices_are_integers_in_range(outputs, err, match, rng):
    net = _mlp(rng, last="softmax")
    with pytest.raises(err, match=match):
        net.jacobian(rng.normal(size=(2, 3)), outputs)
    np.testing.assert_array_equal(net.jacobian(np.ones((2, 3)), np.array([1, 0]))[:, 0],
                                  net.jacobian(np.ones((2, 3)), [1])[:, 0])


# ------------------------------------------------------------------- scoring and summary helpers
def test_scoring_helpers_refuse_empty_and_out_of_range_input(rng):
    with pytest.raises(ValueError, match="values: expected at least one value to average, received none"):
        mean_2se([])
    with pytest.raises(ValueError, match="values: expected real numbers without NaN"):
        mean_2se([1.0, np.nan])
    with pytest.raises(ValueError, match=r"log_probs: expected at least one example and one class, received shape \(0, 3\)"):
        score(np.zeros((0, 3)), np.zeros(0, dtype=int))
    with pytest.raises(ValueError, match=r"labels: expected labels in 0..1, received labels in -1..0"):
        score(np.log(np.full((2, 2), 0.5)), np.array([0, -1]))        # numpy alone would read column -1
    with pytest.raises(ValueError, match=r"labels: expected labels in 0..1, received labels in 0..2"):
        score(np.log(np.full((2, 2), 0.5)), np.array([0, 2]))
    with pytest.raises(ValueError, match=r"labels: expected an integer array of shape \(2,\), received float64"):
        score(np.log(np.full((2, 2), 0.5)), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="log_probs: expected log-probabilities .* received NaN or \\+inf"):
        score(np.array([[0.0, np.inf]]), np.array([0]))
    with pytest.raises(TypeError, match="b: expected a Score"):
        paired_difference(score(np.zeros((1, 1)), np.array([0])), {"correct": np.ones(1)})
    net = _mlp(rng)
    with pytest.raises(ValueError, match=r"x: expected shape \(N, 3\) with N >= 1, received shape \(0, 3\)"):
        log_probs_of(net, np.zeros((0, 3)))
    with pytest.raises(ValueError, match=r"x: expected shape \(N, 3\) with N >= 1, received shape \(2, 4\)"):
        log_probs_of(MLPTeacher(net), np.zeros((2, 4)))
    with pytest.raises(TypeError, match="teacher: expected an object with label"):
        log_probs_of(object(), np.zeros((2, 3)))


def test_summaries_are_never_nan():
    """One value, or a log-probability of 0, used to give a NaN standard error; now it is unbounded (inf)."""
    assert mean_2se([3.0]) == (3.0, np.inf)
    assert mean_2se([-np.inf, -1.0]) == (-np.inf, np.inf)
    mean, two_se = mean_2se([1.0, 2.0, 4.0])
    assert mean == pytest.approx(7 / 3) and two_se == pytest.approx(2 * np.std([1, 2, 4], ddof=1) / np.sqrt(3))
    with np.errstate(divide="ignore"):
        s = score(np.log(np.array([[1.0, 0.0], [0.5, 0.5]])), np.array([1, 0]))
    assert s.log_prob == -np.inf and s.log_prob_2se == np.inf
    one = score(np.log(np.array([[0.25, 0.75]])), np.array([1]))
    assert one.accuracy == 100.0 and one.accuracy_2se == np.inf and one.log_prob == pytest.approx(np.log(0.75))
    with pytest.raises(ValueError, match="a, b: expected log-probabilities whose differences are defined"):
        paired_difference(s, s)
    assert isinstance(one, Score)


def test_data_helpers_check_their_options(tmp_path, rng):
    with pytest.raises(TypeError, match="flatten: expected True or False, received 'no'"):
        datasets.load_mnist(tmp_path, flatten="no")
    with pytest.raises(TypeError, match="dtype: expected a real numeric dtype"):
        datasets.load_binarized_mnist(tmp_path, dtype=complex)
    with pytest.raises(TypeError, match="path: expected a file path"):
        datasets.find_file("mnist.npz", 3)
    with pytest.raises(TypeError, match="a: expected an ndarray of plain"):
        datasets.array_sha256(np.array([object()]))
    with pytest.raises(TypeError, match="raw: expected the file's bytes, received str"):
        download.read_idx("abc")
    with pytest.raises(ValueError, match="x: expected binary values"):
        toydata.noisy_prototypes_log_prob(np.full((1, 4), 0.5), np.zeros((2, 4)), 0.1)
    with pytest.raises(ValueError, match=r"prototypes: expected at least one row, received shape \(0, 4\)"):
        toydata.noisy_prototypes_log_prob(np.zeros((1, 4)), np.zeros((0, 4)), 0.1)
    with pytest.raises(TypeError, match="force: expected True or False, received 1"):
        download.download_mnist(tmp_path, force=1)
    with pytest.raises(ValueError, match=r"timeout: expected a value in \(0.0, inf\), received 0.0"):
        download.download_binarized_mnist(tmp_path, timeout=0.0)
    with pytest.raises(TypeError, match="log: expected a callable"):
        download.import_rbm(tmp_path / "x.mat", tmp_path, log="print")
    assert os.listdir(tmp_path) == []                         # nothing fetched, nothing written


# ----------------------------------------------------------------- save/load at exactly the path
def _bare_round_trip(model, load, tmp_path):
    path = tmp_path / "model"                                 # no extension: numpy alone would add .npz
    model.save(path)
    assert os.listdir(tmp_path) == ["model"]                  # exactly this file, no temporary left over
    back = load(path)
    assert back.params.tobytes() == model.params.tobytes()
    assert back.params.dtype == np.float64
    return back


def test_mlp_saves_to_a_bare_name_and_loads_back_bit_for_bit(tmp_path, rng):
    net = MLP([3, 5, 2], ["probit", "softmax"], rng)
    back = _bare_round_trip(net, MLP.load, tmp_path)
    assert back.sizes == net.sizes and back.nonlinearities == net.nonlinearities
    other = MLP([3, 5, 2], ["probit", "softmax"], np.random.default_rng(99))
    other.restore(tmp_path / "model")
    assert other.params.tobytes() == net.params.tobytes()


def test_nade_saves_to_a_bare_name_and_loads_back_bit_for_bit(tmp_path, rng):
    nade = NADE(6, 3, rng, order=rng.permutation(6), init_std=1.0)
    back = _bare_round_trip(nade, NADE.load, tmp_path)
    np.testing.assert_array_equal(back.order, nade.order)


def test_rbm_saves_to_a_bare_name_and_loads_back_bit_for_bit(tmp_path, rng):
    rbm = RBM(5, 4, rng, init_std=1.0)
    rbm.b_visible[...] = rng.normal(size=5)
    _bare_round_trip(rbm, RBM.load, tmp_path)


def test_mog_saves_to_a_bare_name_and_loads_back_bit_for_bit(tmp_path, rng):
    A = rng.normal(size=(2, 3, 3))
    mog = MoG([0.3, 0.7], rng.normal(size=(2, 3)), A @ A.transpose(0, 2, 1) + np.eye(3))
    _bare_round_trip(mog, MoG.load, tmp_path)


def test_save_and_load_name_a_path_that_is_not_one(rng):
    from kd_ref import gradcheck
    for model, load in ((MLP([2, 2], ["softmax"], rng), MLP.load), (NADE(3, 2, None), NADE.load), (RBM(3, 2, None), RBM.load),
                        (MoG([1.0], [[0.0]], [[[1.0]]]), MoG.load)):
        with pytest.raises(TypeError, match=r"path: expected a file path \(str or os.PathLike\), received None"):
            model.save(None)
        with pytest.raises(TypeError, match=r"path: expected a file path \(str or os.PathLike\), received 3"):
            load(3)
    result = gradcheck.check_gradient(lambda x: float(np.sum(x)), np.ones_like, np.ones(2))
    with pytest.raises(ValueError, match=r"rtol: expected a value in \[0.0, inf\), received -1.0"):
        result.passed(-1)
