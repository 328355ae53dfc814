"""Every public model and estimator carries a docstring example, and pytest runs them (``--doctest-modules``)."""
import configparser
import sys
from pathlib import Path

import pytest

from kd_ref import ep, gradcheck, mcmc, metrics, mlp, mog, nade, optim, partition, posterior, rbm
from kd_ref.distill import gped

ROOT = Path(__file__).resolve().parents[1]

WITH_EXAMPLES = [
    mlp.MLP, nade.NADE, rbm.RBM, rbm.GibbsSampler, mog.MoG, mog.fit_em, mog.OnlineEM, mcmc.SliceSampler,
    ep.ep_logistic_regression, partition.importance_sampling, partition.bridge_sampling, partition.ais_rbm,
    optim.train, gradcheck.check_gradient, metrics.score, mcmc.SGLD, posterior.OnlineAverage,
    posterior.EnsembleAccumulator, metrics.entropy, gped.gped_distill,
]


def _docstring_with_class(obj):
    """A class's example may sit on the class or on its module (the tour of the model)."""
    return (obj.__doc__ or "") + (sys.modules[obj.__module__].__doc__ or "" if isinstance(obj, type) else "")


@pytest.mark.parametrize("obj", WITH_EXAMPLES, ids=[o.__qualname__ for o in WITH_EXAMPLES])
def test_public_model_or_estimator_has_an_example(obj):
    assert ">>>" in _docstring_with_class(obj), f"{obj.__module__}.{obj.__qualname__}: expected a docstring example"


def test_the_test_command_runs_the_docstring_examples():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    pytest_config = config["tool:pytest"]
    assert "kd_ref" in pytest_config["testpaths"].split()
    assert "--doctest-modules" in pytest_config["addopts"].split()
