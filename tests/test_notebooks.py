"""Every notebook in notebooks/ runs headless, top to bottom, in its quick settings and shows its figures inline.

Each notebook runs once; the table below says what else it must leave behind.
"""
import os
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat", reason="the test extra installs nbformat")
nbclient = pytest.importorskip("nbclient", reason="the test extra installs nbclient")

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))

# name: (least number of inline PNG figures, strings the printed output must hold, files it must write)
EXPECTED = {
    "appendix_b_backprop": (1, ["relative error", "largest difference: 0.0"], []),
    "appendix_c_nade": (1, ["from the hand computation: 0.0e+00", "relative error"], []),
    "bayes_mog": (2, [], ["kd_ref_runs/bayes_mog_notebook"]),
    "bayes_logreg": (2, ["relative error"], ["kd_ref_runs/bayes_logreg_notebook"]),
    "compression": (3, ["relative error", "2C = 20"], ["compress_run/tables.md"]),
    "linear_distillation": (3, ["after 400 SGD epochs:  ", "largest relative error", "KS p-value"], []),
    "posterior_expectations": (3, ["finite-step law (S3.3)", "RMS error of U_s", "KU >= 0 everywhere: True",
                                   "entropy MAE (EU)"], []),
    "pruning": (2, ["relative error vs brute force", "within 2 of them from brute force"], []),
    "temperature_kd": (2, ["relative error", "(does not converge)"], []),
    "rbm_nade": (5, ["relative error", "exact KL(p || q)"], ["kd_ref_runs/rbm_nade_notebook/tables.md"]),
}


def test_every_notebook_has_expectations():
    assert sorted(p.stem for p in NOTEBOOKS) == sorted(EXPECTED)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_and_shows_figures(path, tmp_path, monkeypatch):
    # the kernel imports this working tree's kd_ref and writes into tmp_path; inline figures, quick settings
    monkeypatch.setenv("PYTHONPATH", str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    monkeypatch.setenv("KD_REF_QUICK", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    errors = [o for o in outputs if o.output_type == "error"]
    assert not errors, "\n".join(f"{e.ename}: {e.evalue}" for e in errors)
    n_images, texts, files = EXPECTED[path.stem]
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= n_images, f"{path.stem}: expected at least {n_images} inline figures, found {len(images)}"
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    for text in texts:
        assert text in printed, f"{path.stem}: expected {text!r} in the printed output"
    for name in files:
        assert (tmp_path / name).exists(), f"{path.stem}: expected it to write {name}"
