"""Reference-data loaders, binarisation, built-in datasets and ``kd-ref data``."""
import gzip
import itertools
import struct

import numpy as np
import pytest
from scipy.io import savemat

from kd_ref import cli, datasets, download
from kd_ref.datasets import binarize, binarize_stochastic, few_shot_indices, load_binarized_mnist, load_mnist, load_rbm
from kd_ref.toydata import bars_and_stripes, noisy_prototypes, noisy_prototypes_log_prob, synthetic_digits


# ------------------------------------------------------------------ reference files
@pytest.mark.data
def test_mnist_loads_with_documented_shapes_dtypes_and_labels(data_dir):
    (x_train, y_train), (x_test, y_test) = load_mnist(data_dir)
    assert x_train.shape == (60000, 784) and x_test.shape == (10000, 784)
    assert x_train.dtype == np.float64 and 0.0 <= x_train.min() and x_train.max() == 1.0
    assert y_train.dtype == np.int64 and y_train[0] == 5
    assert np.bincount(y_test).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert x_train.mean() == pytest.approx(0.1307, abs=1e-4)
    (raw_x, raw_y), _ = load_mnist(data_dir, flatten=False, scale=False)
    assert raw_x.shape == (60000, 28, 28) and raw_x.dtype == np.uint8 and raw_y.dtype == np.uint8
    np.testing.assert_array_equal(raw_x.reshape(60000, -1)[:5] / 255.0, x_train[:5])
    assert datasets.mnist_available(data_dir)


@pytest.mark.data
def test_binarized_mnist_and_rbm_load_with_documented_shapes(data_dir):
    x_train, x_test = load_binarized_mnist(data_dir, dtype=np.uint8)
    assert x_train.shape == (60000, 784) and x_test.shape == (10000, 784) and x_test.dtype == np.uint8
    assert set(np.unique(x_test)) == {0, 1}
    assert x_train.mean() == pytest.approx(0.1307, abs=1e-4) and x_test.mean() == pytest.approx(0.1324, abs=1e-4)
    arrays = load_rbm(data_dir)
    assert {k: (v.shape, v.dtype) for k, v in arrays.items()} == {
        "W": ((784, 500), np.float64), "b_visible": ((784,), np.float64), "b_hidden": ((500,), np.float64)}


@pytest.mark.data
def test_array_checksums_match_the_readme(data_dir):
    for name in (datasets.RBM_FILE, datasets.BINARIZED_FILE):
        assert all(datasets.verify_checksums(name, data_dir).values())


@pytest.mark.data
def test_loaders_read_kd_ref_data(data_dir, monkeypatch):
    monkeypatch.setenv(datasets.ENV_VAR, str(data_dir))
    assert load_rbm()["W"].shape == (784, 500)
    assert cli.main(["data", "info"]) == 0


@pytest.mark.data
def test_make_resampled_binarized(data_dir, tmp_path):
    target = download.make_resampled_binarized(data_dir, tmp_path, np.random.default_rng(0), log=lambda s: None)
    x_train, x_test = load_binarized_mnist(target, dtype=np.uint8)
    assert x_train.shape == (60000, 784) and x_test.shape == (10000, 784)
    assert x_test.mean() == pytest.approx(0.1325, abs=2e-3)               # grey level / 255 on average
    (_, _), (grey, _) = load_mnist(data_dir)
    assert np.all(x_test[grey == 0] == 0)                                  # black pixels never turn on


def test_missing_files_say_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.delenv(datasets.ENV_VAR, raising=False)
    with pytest.raises(FileNotFoundError, match=r"KD_REF_DATA is not set.*kd-ref data download"):
        load_mnist()
    assert not datasets.mnist_available()
    with pytest.raises(FileNotFoundError, match=r"expected rbm_cd25_500.npz at .*no such file"):
        load_rbm(tmp_path)
    monkeypatch.setenv(datasets.ENV_VAR, str(tmp_path))
    with pytest.raises(FileNotFoundError, match="binarized_mnist.npz: not found in KD_REF_DATA"):
        load_binarized_mnist()
    assert cli.main(["data", "info"]) == 1


def test_corrupt_or_mismatched_files_raise_clear_errors_and_stay_untouched(tmp_path):
    def check(filename, loader, match):
        before = (tmp_path / filename).read_bytes()
        with pytest.raises(ValueError, match=match):
            loader(tmp_path)
        assert (tmp_path / filename).read_bytes() == before          # loaders never modify or delete a file

    (tmp_path / "mnist.npz").write_bytes(b"PK\x03\x04 this is not really a zip archive")
    check("mnist.npz", load_mnist, r"mnist.npz: could not read .* damaged.*download or copy the file again")
    (tmp_path / "mnist.npz").write_bytes(b"plain garbage, neither zip nor .npy" * 20)   # numpy would try unpickling
    check("mnist.npz", load_mnist, r"mnist.npz: could not read .*mnist.npz.* as a .npz archive")
    np.save(tmp_path / "single.npy", np.zeros(3))
    (tmp_path / "mnist.npz").write_bytes((tmp_path / "single.npy").read_bytes())
    check("mnist.npz", load_mnist, "mnist.npz: expected a .npz archive, .* holds a single .npy array")
    np.savez(tmp_path / "rbm_cd25_500.npz", W=np.zeros((784, 400)), b_visible=np.zeros(784), b_hidden=np.zeros(500))
    check("rbm_cd25_500.npz", load_rbm, r"expected W of shape \(784, 500\).*received shape \(784, 400\)")
    np.savez(tmp_path / "rbm_cd25_500.npz", W=np.array([None, 1], dtype=object), b_visible=np.zeros(784),
             b_hidden=np.zeros(500))
    check("rbm_cd25_500.npz", load_rbm, "rbm_cd25_500.npz: could not read the arrays of .* object arrays")
    np.savez(tmp_path / "rbm_cd25_500.npz", W=np.full((784, 500), np.nan), b_visible=np.zeros(784),
             b_hidden=np.zeros(500))
    check("rbm_cd25_500.npz", load_rbm, "rbm_cd25_500.npz: W: expected finite values, received 392000 NaN")
    np.savez(tmp_path / "binarized_mnist.npz", x_train=np.zeros((60000, 784), np.uint8))
    check("binarized_mnist.npz", load_binarized_mnist, r"missing \['x_test'\]")
    np.savez_compressed(tmp_path / "binarized_mnist.npz", x_train=np.zeros((60000, 784), np.uint8),
                        x_test=np.full((10000, 784), 2, np.uint8))
    check("binarized_mnist.npz", load_binarized_mnist, "expected x_test with values 0 or 1, received maximum 2")


# -------------------------------------------------------------------- binarisation
def test_binarize_thresholds_and_checks_input():
    x = np.array([[0.0, 0.5, 0.51, 1.0]])
    np.testing.assert_array_equal(binarize(x), [[0, 0, 1, 1]])
    np.testing.assert_array_equal(binarize(x, threshold=0.2), [[0, 1, 1, 1]])
    with pytest.raises(ValueError, match="x: expected finite values"):
        binarize([np.nan])


def test_stochastic_binarisation_has_the_right_frequencies():
    p = np.array([0.0, 0.1, 0.5, 0.9, 1.0])
    x = binarize_stochastic(np.tile(p, (20000, 1)), np.random.default_rng(0))
    se = np.sqrt(p * (1 - p) / 20000)
    assert np.all(np.abs(x.mean(axis=0) - p) <= 5 * se + 1e-12)
    again = binarize_stochastic(np.tile(p, (20000, 1)), np.random.default_rng(0))
    np.testing.assert_array_equal(x, again)
    with pytest.raises(ValueError, match=r"x: expected probabilities in \[0, 1\], received values in \[0.0, 2.0\]"):
        binarize_stochastic([0.0, 2.0], np.random.default_rng(0))


# ---------------------------------------------------------------- built-in datasets
@pytest.mark.parametrize("side", [1, 2, 3, 4])
def test_bars_and_stripes_are_all_the_distinct_images(side):
    x = bars_and_stripes(side)
    assert x.shape == (2 ** (side + 1) - 2 if side > 1 else 2, side * side)
    assert len({row.tobytes() for row in x}) == x.shape[0]
    imgs = x.reshape(-1, side, side)
    rows_const = np.all(imgs == imgs[:, :, :1], axis=(1, 2))
    cols_const = np.all(imgs == imgs[:, :1, :], axis=(1, 2))
    assert np.all(rows_const | cols_const)
    everything = [np.array(b, float).reshape(side, side) for b in itertools.product([0, 1], repeat=side * side)]
    expected = sum(bool(np.all(i == i[:, :1]) or np.all(i == i[:1, :])) for i in everything)
    assert expected == x.shape[0]


def test_noisy_prototypes_and_their_exact_log_probabilities():
    rng = np.random.default_rng(0)
    x, labels, protos = noisy_prototypes(5000, rng, dim=6, n_prototypes=3, flip_prob=0.1)
    assert x.shape == (5000, 6) and protos.shape == (3, 6) and set(np.unique(x)) <= {0.0, 1.0}
    assert np.mean(x != protos[labels]) == pytest.approx(0.1, abs=0.01)
    everything = np.array(list(itertools.product([0.0, 1.0], repeat=6)))
    assert np.exp(noisy_prototypes_log_prob(everything, protos, 0.1)).sum() == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="flip_prob"):
        noisy_prototypes(3, rng, flip_prob=0.7)
    with pytest.raises(ValueError, match=r"prototypes: expected binary values \(0 or 1\), received 1 other .* 0.5$"):
        noisy_prototypes(3, rng, prototypes=[[0.0, 0.5]])
    with pytest.raises(ValueError, match=r"prototypes: expected at least one row, received shape \(0, 4\)"):
        noisy_prototypes(3, rng, prototypes=np.zeros((0, 4)))


def test_synthetic_digits_carry_their_labels():
    (x_tr, y_tr), (x_te, y_te) = synthetic_digits(1000, 300, np.random.default_rng(0))
    assert x_tr.shape == (1000, 784) and x_te.shape == (300, 784) and y_tr.dtype == np.int64
    assert x_tr.min() >= 0.0 and x_tr.max() <= 1.0 and set(np.unique(y_tr)) == set(range(10))
    assert 0.05 < x_tr.mean() < 0.3                           # mostly background, like MNIST (0.13)
    means = np.stack([x_tr[y_tr == c].mean(axis=0) for c in range(10)])
    pred = np.argmin(((x_te[:, None, :] - means[None]) ** 2).sum(axis=2), axis=1)
    assert np.mean(pred == y_te) > 0.6                        # nearest class mean; chance is 0.1
    (again, _), _ = synthetic_digits(1000, 300, np.random.default_rng(0))
    np.testing.assert_array_equal(again, x_tr)
    (small, _), _ = synthetic_digits(5, 5, np.random.default_rng(1), side=12)
    assert small.shape == (5, 144)


# ------------------------------------------------------------------------ download
def _idx(array):
    """Bytes of an IDX file of unsigned bytes."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(struct.pack(">I", s) for s in array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def _fake_mirror(folder, rng):
    arrays = {"x_train": rng.integers(0, 256, size=(5, 28, 28)), "y_train": rng.integers(0, 10, size=5),
              "x_test": rng.integers(0, 256, size=(3, 28, 28)), "y_test": rng.integers(0, 10, size=3)}
    folder.mkdir()
    for name, (fname, _) in download.MNIST_IDX.items():
        (folder / fname).write_bytes(gzip.compress(_idx(arrays[name])))
    return arrays


def test_download_writes_mnist_npz_from_idx_files(tmp_path, capsys):
    arrays = _fake_mirror(tmp_path / "mirror", np.random.default_rng(0))
    dest = tmp_path / "data"
    url = (tmp_path / "mirror").as_uri()
    assert cli.main(["data", "download", "--files", "mnist", "--dest", str(dest), "--source-url", url,
                     "--no-verify"]) == 0
    out = capsys.readouterr().out
    assert f"In {dest}: mnist.npz." in out and "rbm_cd25_500.npz has no direct download" in out
    assert "import-rbm" in out
    with np.load(dest / "mnist.npz", allow_pickle=False) as f:
        assert sorted(f.files) == ["x_test", "x_train", "y_test", "y_train"]
        for name, a in arrays.items():
            assert f[name].dtype == np.uint8
            np.testing.assert_array_equal(f[name], a)
    # an existing file is kept (bytes unchanged) unless --force
    before = (dest / "mnist.npz").read_bytes()
    _fake_mirror(tmp_path / "other", np.random.default_rng(1))
    other = (tmp_path / "other").as_uri()
    assert download.main(["download", "--files", "mnist", "--dest", str(dest), "--source-url", other,
                          "--no-verify"]) == 0
    assert "kept" in capsys.readouterr().out and (dest / "mnist.npz").read_bytes() == before
    with pytest.raises(FileExistsError, match="already exists"):
        download.download_mnist(dest, other, verify=False, log=lambda s: None)
    assert download.main(["download", "--files", "mnist", "--dest", str(dest), "--source-url", other,
                          "--no-verify", "--force"]) == 0
    assert (dest / "mnist.npz").read_bytes() != before


def test_download_checks_md5_unreachable_sources_and_bad_files(tmp_path, capsys):
    _fake_mirror(tmp_path / "mirror", np.random.default_rng(0))
    url = (tmp_path / "mirror").as_uri()
    assert download.main(["download", "--files", "mnist", "--dest", str(tmp_path / "a"), "--source-url", url]) == 1
    assert "expected the canonical MNIST file (md5" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()                                     # nothing written, not even the folder
    assert download.main(["download", "--files", "mnist", "--dest", str(tmp_path / "b"), "--source-url",
                          (tmp_path / "nowhere").as_uri()]) == 1
    assert "could not fetch" in capsys.readouterr().err
    with pytest.raises(ValueError, match="expected an IDX file"):
        download.read_idx(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match=r"expected 16 bytes for shape \(2, 2\), received 15"):
        download.read_idx(_idx(np.ones((2, 2)))[:15])
    with pytest.raises(ValueError, match=r"expected an IDX header of 12 bytes \(2 sizes\), received 11 bytes"):
        download.read_idx(_idx(np.ones((2, 2)))[:11])
    with pytest.raises(ValueError, match="expected at least 1 dimension in the IDX header, received 0"):
        download.read_idx(b"\x00\x00\x08\x00")


def _fake_thesis_repo(folder, x_train, x_test, dtype=np.float64):
    """The thesis repository's data folder with randomly_binarized_mnist.mat: one column-major image per column."""
    P = download.COLUMN_TO_ROW_MAJOR
    (folder / "mnist").mkdir(parents=True)
    savemat(folder / download.BINARIZED_MAT, {"x_trn": x_train[:, P].T.astype(dtype),   # MATLAB doubles by default
                                              "x_tst": x_test[:, P].T.astype(np.uint8)})
    return folder.as_uri()


def test_pixel_order_conversion_is_the_readme_permutation():
    """Column-major entry c * 28 + r holds pixel (r, c); the permutation is its own inverse."""
    P = download.COLUMN_TO_ROW_MAJOR
    image = np.arange(784).reshape(28, 28)                   # value = row-major index
    column_major = image.T.ravel()                           # MATLAB's x(:) of the same picture
    np.testing.assert_array_equal(column_major[P], image.ravel())
    np.testing.assert_array_equal(P[P], np.arange(784))
    assert P[1] == 28 and P[28] == 1                         # pixel (0, 1) is MATLAB's entry 28


def test_download_binarized_converts_the_matlab_file_to_row_major(tmp_path, capsys):
    rng = np.random.default_rng(0)
    x_train = (rng.random((5, 784)) < 0.3).astype(np.uint8)
    x_test = np.zeros((3, 784), np.uint8)
    x_test[0].reshape(28, 28)[2, :] = 1                      # a horizontal bar in row 2: not symmetric
    url = _fake_thesis_repo(tmp_path / "thesis", x_train, x_test)
    dest = tmp_path / "data"
    # with verification on, the fake arrays fail the shape / sha256 checks and nothing is written
    assert download.main(["download", "--files", "binarized", "--dest", str(dest), "--thesis-url", url]) == 1
    assert "expected x_train of shape (60000, 784)" in capsys.readouterr().err
    assert not dest.exists()
    assert download.main(["download", "--files", "binarized", "--dest", str(dest), "--thesis-url", url,
                          "--no-verify"]) == 0
    with np.load(dest / "binarized_mnist.npz", allow_pickle=False) as f:   # not the reference shapes: np.load
        got_train, got_test = f["x_train"], f["x_test"]
    assert got_train.dtype == np.uint8 and got_test.dtype == np.uint8
    np.testing.assert_array_equal(got_train, x_train)
    np.testing.assert_array_equal(got_test, x_test)
    assert got_test[0].reshape(28, 28)[2].all() and got_test[0].sum() == 28


def test_download_binarized_rejects_foreign_matlab_files(tmp_path):
    (tmp_path / "mnist").mkdir()
    target = tmp_path / download.BINARIZED_MAT
    savemat(target, {"images": np.zeros((784, 2))})
    url = tmp_path.as_uri()
    with pytest.raises(ValueError, match=r"expected MATLAB variables \['x_trn', 'x_tst'\].*holds \['images"):
        download.download_binarized_mnist(tmp_path / "d", url, verify=False, log=lambda s: None)
    savemat(target, {"x_trn": np.zeros((100, 2)), "x_tst": np.zeros((784, 2))})
    with pytest.raises(ValueError, match=r"expected x_trn of shape \(784, n\), one image per column"):
        download.download_binarized_mnist(tmp_path / "d", url, verify=False, log=lambda s: None)
    savemat(target, {"x_trn": np.full((784, 2), 0.5), "x_tst": np.zeros((784, 2))})
    with pytest.raises(ValueError, match=r"x_trn \(transposed\): expected binary values \(0 or 1\), received 1568"):
        download.download_binarized_mnist(tmp_path / "d", url, verify=False, log=lambda s: None)
    target.write_bytes(b"MATLAB 7.3 MAT-file, but really just text")
    with pytest.raises(ValueError, match="could not read it as a MATLAB .mat file"):
        download.download_binarized_mnist(tmp_path / "d", url, verify=False, log=lambda s: None)
    assert not (tmp_path / "d").exists()


def test_import_rbm_explains_the_matlab_export(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match=r"no file at .*In MATLAB.*W = rbm.W"):
        download.import_rbm(tmp_path / "absent.mat", tmp_path / "d")
    savemat(tmp_path / "object.mat", {"rbm": {"num_inputs": 784.0}})       # what a struct / object export holds
    # the user's file, not what was expected: a usage error (one line, status 2), naming what to do
    assert cli.main(["data", "import-rbm", str(tmp_path / "object.mat"), "--dest", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "expected MATLAB variables ['W', 'a', 'b']" in err and "holds ['rbm (struct)']" in err
    assert "save('rbm_arrays.mat', 'W', 'a', 'b', '-v7')" in err
    savemat(tmp_path / "small.mat", {"W": np.zeros((784, 50)), "a": np.zeros((784, 1)), "b": np.zeros((50, 1))})
    with pytest.raises(ValueError, match=r"expected W \(784, 500\).*received W \(784, 50\)"):
        download.import_rbm(tmp_path / "small.mat", tmp_path / "d")
    rng = np.random.default_rng(0)
    W, a, b = rng.normal(size=(784, 500)), rng.normal(size=(784, 1)), rng.normal(size=(500, 1))
    savemat(tmp_path / "random.mat", {"W": W, "a": a, "b": b})
    with pytest.raises(ValueError, match="expected W with the reference sha256"):
        download.import_rbm(tmp_path / "random.mat", tmp_path / "d")
    assert not (tmp_path / "d").exists()
    download.import_rbm(tmp_path / "random.mat", tmp_path / "d", verify=False, log=lambda s: None)
    arrays = load_rbm(tmp_path / "d")
    P = download.COLUMN_TO_ROW_MAJOR
    np.testing.assert_array_equal(arrays["W"], W[P])
    np.testing.assert_array_equal(arrays["b_visible"], a[P, 0])
    np.testing.assert_array_equal(arrays["b_hidden"], b[:, 0])


@pytest.mark.data
def test_converting_the_matlab_layout_reproduces_the_reference_files_exactly(data_dir, tmp_path):
    """Reference arrays put back into the thesis's MATLAB layout convert to arrays with the README's sha256."""
    x_train, x_test = load_binarized_mnist(data_dir, dtype=np.uint8)
    url = _fake_thesis_repo(tmp_path / "thesis", x_train, x_test, dtype=np.uint8)    # uint8: 8 times less to write
    download.download_binarized_mnist(tmp_path / "out", url, log=lambda s: None)        # verify=True
    ref = load_rbm(data_dir)
    P = download.COLUMN_TO_ROW_MAJOR
    savemat(tmp_path / "rbm_arrays.mat", {"W": ref["W"][P], "a": ref["b_visible"][P, None],
                                          "b": ref["b_hidden"][:, None]})
    assert download.main(["import-rbm", str(tmp_path / "rbm_arrays.mat"), "--dest", str(tmp_path / "out")]) == 0
    assert download.main(["verify", "--path", str(tmp_path / "out")]) == 1             # mnist.npz is absent
    for name in (datasets.BINARIZED_FILE, datasets.RBM_FILE):
        assert all(datasets.verify_checksums(name, tmp_path / "out").values())


def test_few_shot_indices_draw_exactly_shots_distinct_examples_per_class():
    labels = np.random.default_rng(0).integers(0, 4, size=200)
    idx = few_shot_indices(labels, 5, np.random.default_rng(1))
    assert idx.shape == (20,) and np.unique(idx).size == 20
    np.testing.assert_array_equal(labels[idx], np.repeat(np.arange(4), 5))
    np.testing.assert_array_equal(idx, few_shot_indices(labels, 5, np.random.default_rng(1)))
    assert not np.array_equal(idx, few_shot_indices(labels, 5, np.random.default_rng(2)))
    every = few_shot_indices(labels, int(np.bincount(labels).min()), np.random.default_rng(3))
    assert np.unique(every).size == every.size
    with pytest.raises(ValueError, match=r"shots: expected an integer >= 1, received 0"):
        few_shot_indices(labels, 0, np.random.default_rng(1))
    small = labels.copy()
    small[small == 2] = 1
    small[:3] = 2
    with pytest.raises(ValueError, match=r"shots: expected at most 3 \(the examples of class 2\), received 5"):
        few_shot_indices(small, 5, np.random.default_rng(1))
    with pytest.raises(ValueError, match=r"at most 0 \(the examples of class 4\)"):
        few_shot_indices(labels, 1, np.random.default_rng(1), n_classes=6)
    with pytest.raises(TypeError, match="rng"):
        few_shot_indices(labels, 1, None)
