"""Shared test settings: hypothesis profiles and the reference-data fixture."""
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# Derivative checks run many numpy calls per example; deadlines would only add flakiness.
settings.register_profile("default", max_examples=60, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("thorough", max_examples=500, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("KD_REF_HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(scope="session")
def data_dir():
    """Folder with the reference data (``KD_REF_DATA``); tests that need it are skipped, with the reason, when unset."""
    path = os.environ.get("KD_REF_DATA")
    if not path:
        pytest.skip("KD_REF_DATA is not set: the reference-data tests need ../shared/data (see README)")
    path = Path(path)
    if not path.is_dir():
        pytest.fail(f"KD_REF_DATA={path} is not a folder")
    return path


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
