"""``kd-ref run gped-toy`` end to end on tiny settings, and its batched log posterior against the MLP's."""
import os

import numpy as np

from kd_ref.experiments import gped_toy
from kd_ref.mcmc import mlp_log_posterior_gradient

TINY = gped_toy.Settings.quick(truth_chains=2, truth_burn_in=3, truth_samples=4, truth_thin=1, sgld_steps=80,
                               sgld_burn_in=20, thin=10, map_steps=20, grid=8, n_inputs=20, batch_size=5,
                               students=((3,), (2, 2)), progress=False)


def test_batched_log_posterior_matches_the_mlp_one_theta_at_a_time():
    rng = np.random.default_rng(0)
    net = gped_toy.teacher_net(TINY, rng)
    x, labels = rng.normal(size=(7, 2)), rng.integers(0, 2, 7)
    thetas = rng.normal(size=(5, net.n_params))
    ref = mlp_log_posterior_gradient(net, x, labels, 1.3)
    got = gped_toy.batched_log_posterior(net, x, labels, 1.3)(thetas)
    np.testing.assert_allclose(got, [ref.log_posterior(t) for t in thetas], rtol=1e-12)
    wrong = gped_toy.batched_log_posterior(net, x, 1 - labels, 1.3)(thetas)      # control: other labels differ
    assert not np.allclose(wrong, got)


def test_tiny_run_writes_table_maps_and_resumes_from_its_cache(tmp_path):
    out = gped_toy.run(TINY, str(tmp_path), np.random.default_rng(0))
    rows = {r["model"]: r for r in out["table"]}
    assert rows["ground truth (slice)"]["kl"] == 0 and rows["ground truth (slice)"]["eu_mae"] == 0
    assert rows["SGLD ensemble"]["kl"] > 0 and rows["plug-in (SGD/MAP)"]["kl"] > 0
    assert np.isnan(rows["2-3-2 entropy U_o"]["kl"]) and np.isnan(rows["2-3-2 predictive U_s"]["eu_mae"])
    assert len(rows) == 3 + 2 * len(gped_toy.TARGETS)
    assert all(os.path.exists(f) for f in out["files"].values()) and "maps_2-2-2-2" in out["files"]
    assert out["conclusions"] and "BDK's and GPED's conclusions" in out["tables"]
    assert list(out["window_kls"]) == [1] and "How slowly the SGLD chain mixes" in out["tables"]   # 6 kept states
    again = gped_toy.run(TINY, str(tmp_path), np.random.default_rng(0))         # every component from the cache
    for a, b in zip(again["table"], out["table"]):
        assert a["model"] == b["model"]
        np.testing.assert_array_equal([a[k] for k in ("kl", "eu_mae", "tu_mae")], [b[k] for k in ("kl", "eu_mae", "tu_mae")])


def test_window_kls_of_the_whole_chain_is_the_sgld_ensembles_kl_and_one_state_is_worse():
    rng = np.random.default_rng(3)
    net = gped_toy.teacher_net(TINY, rng)
    truth, chain = rng.normal(size=(30, net.n_params)), rng.normal(size=(12, net.n_params))
    grid = rng.uniform(-6, 6, size=(50, 2))
    truth_log_p = gped_toy.ensemble(net, truth, grid)[0]
    got = gped_toy.window_kls(net, chain, grid, truth_log_p, windows=(1, 12, 13))
    whole = np.mean(gped_toy.bernoulli_kl(truth_log_p, gped_toy.ensemble(net, chain, grid)[0]))
    assert list(got) == [1, 12] and got[12] == whole
    assert got[1] > got[12]         # one random state is further from a 30-state average than 12 are
