"""The chapter-3 experiments end to end on tiny settings: files, tables and the numbers they are built from."""
import os
from dataclasses import replace

import numpy as np
import pytest

from kd_ref.distill.predictive import TRUE_MEANS
from kd_ref.experiments import bayes_logreg, bayes_mog


def test_kl_on_grid_matches_the_closed_form_for_two_gaussians():
    """KL(N(0, 1) || N(1, 4)) = log 2 + (1 + 1) / 8 - 1/2, and the trapezoid rule on a fine grid gets it."""
    grid = np.linspace(-20, 20, 8001)
    log_p = -0.5 * grid**2 - 0.5 * np.log(2 * np.pi)
    log_q = -0.5 * (grid - 1) ** 2 / 4 - 0.5 * np.log(2 * np.pi * 4)
    exact = np.log(2.0) + 2.0 / 8.0 - 0.5
    assert np.isclose(bayes_mog.kl_on_grid(log_p, log_q, grid), exact, rtol=1e-8)
    assert bayes_mog.kl_on_grid(log_p, log_p, grid) == 0.0


@pytest.fixture(scope="module")
def mog_run(tmp_path_factory):
    settings = bayes_mog.Settings.quick(ns=(5, 200), n_samples=300, burn_in=40, n_y=300, online_steps=20,
                                        online_batch=50, em_restarts=1, grid_points=801)
    out = tmp_path_factory.mktemp("mog")
    return settings, out, bayes_mog.run(settings, str(out), np.random.default_rng(0))


def test_bayes_mog_writes_figures_and_tables(mog_run):
    settings, out, res = mog_run
    for name in ("mog_N5.png", "mog_N200.png", "kl_vs_N.png", "kl.md", "kl.csv", "memory.md", "memory.csv"):
        assert (out / name).is_file() and os.path.getsize(out / name) > 0, name
    assert [r["N"] for r in res["kl_table"]] == [5, 200]
    assert "| N | max_abs_mean_error | KL_batch | KL_online | em_iterations | em_converged |" in (out / "kl.md").read_text()
    assert all(r["em_converged"] for r in res["kl_table"])          # batch EM ran to convergence
    for r in res["results"]:
        assert r["samples"].shape == (300, 3)
        assert 0 <= r["kl_batch"] < 0.2 and 0 <= r["kl_online"] < 0.2
        # the Monte Carlo predictive integrates to one on the grid
        density, grid = np.exp(r["log_mc"]), r["grid"]
        assert np.isclose(np.sum(0.5 * (density[1:] + density[:-1]) * np.diff(grid)), 1.0, atol=1e-6)


def test_bayes_mog_memory_table_measures_what_each_method_holds(mog_run):
    settings, out, res = mog_run
    batch, online, ratio = res["memory_table"]
    assert batch["stored_samples_bytes"] == (300 * 3 + 300) * 8          # S means and M values of y
    assert online["stored_samples_bytes"] == 50 * (3 + 1) * 8            # one minibatch of (mu, y) pairs
    assert ratio["stored_samples_bytes"] == round(batch["stored_samples_bytes"] / online["stored_samples_bytes"], 1)
    # tracemalloc saw at least the stored samples, and online held less than batch
    assert batch["tracemalloc_peak_bytes"] >= batch["stored_samples_bytes"]
    assert 0 < online["tracemalloc_peak_bytes"] < batch["tracemalloc_peak_bytes"]
    last = res["results"][-1]
    assert np.all(np.abs(last["posterior_mean"] - TRUE_MEANS) < 1.0)    # N = 200: the posterior has concentrated


@pytest.fixture(scope="module")
def logreg_run(tmp_path_factory):
    settings = bayes_logreg.Settings.quick(n_samples=400, burn_in=50, n_steps=150, online_chains=5, grid_points=21,
                                           n_eval=400, n_timing=500)
    out = tmp_path_factory.mktemp("logreg")
    return settings, out, bayes_logreg.run(settings, str(out), np.random.default_rng(1))


def test_bayes_logreg_writes_figures_and_the_comparison_table(logreg_run):
    settings, out, res = logreg_run
    for name in ("posterior.png", "surfaces.png", "comparison.md", "comparison.csv"):
        assert (out / name).is_file() and os.path.getsize(out / name) > 0, name
    rows = {r["method"]: r for r in res["table"]}
    assert list(rows) == ["MCMC", "EP", "batch CE", "batch DSE", "online CE", "online DSE"]
    assert set(rows["EP"]) == {"method", "mean_abs_diff", "max_abs_diff", "mean_abs_diff_near_origin", "avg_KL",
                               "slope_at_origin", "predict_seconds_per_10k", "numbers_stored"}
    assert rows["MCMC"]["max_abs_diff"] == 0 and rows["MCMC"]["avg_KL"] == 0
    assert rows["MCMC"]["numbers_stored"] == 400 * 2 and rows["batch CE"]["numbers_stored"] == 10 * 2
    assert rows["EP"]["numbers_stored"] == 2 + 4
    for r in rows.values():
        assert r["avg_KL"] >= 0 and r["predict_seconds_per_10k"] > 0
        assert r["mean_abs_diff"] <= r["max_abs_diff"] <= 1
    assert rows["EP"]["mean_abs_diff"] < 0.1                       # a Gaussian posterior predicts much the same


def test_bayes_logreg_surfaces_and_slopes_are_those_of_the_models(logreg_run):
    settings, out, res = logreg_run
    grid, samples = res["grid"], res["samples"]
    mc = np.mean(1.0 / (1.0 + np.exp(-grid @ samples.T)), axis=1)
    assert np.allclose(res["surfaces"]["MCMC"], mc, rtol=1e-12)
    # at x = 0 every sigmoid has slope 1/4, so |dp/dx| = |mean of the weights| / 4
    rows = {r["method"]: r for r in res["table"]}
    assert np.isclose(rows["MCMC"]["slope_at_origin"], np.linalg.norm(samples.mean(axis=0)) / 4, rtol=1e-12)
    for (mode, loss), m in res["models"].items():
        net, name = m["net"], f"{mode} {bayes_logreg.SHORT[loss]}"
        assert np.allclose(res["surfaces"][name], net.predict(grid)[:, 0], rtol=1e-12)
        assert np.isclose(rows[name]["slope_at_origin"], np.linalg.norm(net.W[0].mean(axis=0)) / 4, rtol=1e-12)
        # only the first-layer weights were trained: output weights 1/K, biases 0 (3.44)
        assert np.all(net.W[1] == 1 / 10) and not np.any(net.b[0]) and not np.any(net.b[1])
        assert m["result"].steps == 150


def test_bayes_logreg_sweep_pairs_the_two_losses(tmp_path):
    # with a vanishing step both models stay at their common start, so a paired sweep shows equal slopes
    still = bayes_logreg.Settings.quick(n_samples=300, burn_in=30, n_steps=20, n_eval=200,
                                        eta0={"ce": 1e-12, "dse": 1e-12})
    rows = bayes_logreg.slope_sweep(still, [4, 5], str(tmp_path))
    assert [r["seed"] for r in rows] == [4, 5] and (tmp_path / "sweep.md").is_file()
    for r in rows:
        assert abs(r["DSE_minus_CE_slope"]) < 1e-9 and abs(r["DSE_KL"] - r["CE_KL"]) < 1e-9
        assert abs(r["DSE_near_origin_diff"] - r["CE_near_origin_diff"]) < 1e-9
        assert r["CE_final_loss"] > 0 and r["DSE_final_loss"] > 0
    # a real step moves them apart
    moving = replace(still, eta0=bayes_logreg.Settings().eta0)
    row = bayes_logreg.slope_sweep(moving, [4], str(tmp_path))[0]
    assert row["DSE_minus_CE_slope"] != 0 and row["CE_KL"] != row["DSE_KL"]
    assert row["MCMC_slope"] == rows[0]["MCMC_slope"]      # the seed fixes the posterior samples
