"""The one .npz format: exact paths, atomic writes, kind and version tags, never unpickling."""
import os

import numpy as np
import pytest

from kd_ref import npzfile


def test_round_trip_at_exactly_the_given_path(tmp_path):
    path = tmp_path / "model"                         # no extension: numpy's savez alone would write model.npz
    w = np.random.default_rng(0).normal(size=(3, 4))
    npzfile.save(path, "test.Thing", 2, w=w, name=np.array("x"))
    assert sorted(os.listdir(tmp_path)) == ["model"]  # nothing else, no temporary file left behind
    back = npzfile.load(path, "test.Thing", {1, 2}, required=("w",))
    assert sorted(back) == ["name", "w"]
    np.testing.assert_array_equal(back["w"], w)
    assert back["w"].dtype == w.dtype


def test_tags_are_checked(tmp_path):
    path = tmp_path / "f.npz"
    npzfile.save(path, "test.Thing", 3, w=np.zeros(2))
    with pytest.raises(ValueError, match=r"expected a test.Other file, .* holds a test.Thing file"):
        npzfile.load(path, "test.Other", {3})
    with pytest.raises(ValueError, match=r"expected test.Thing format version \[1, 2\], .* has version 3"):
        npzfile.load(path, "test.Thing", {1, 2})
    with pytest.raises(ValueError, match=r"expected arrays \['w', 'v'\] .* missing \['v'\]"):
        npzfile.load(path, "test.Thing", {3}, required=("w", "v"))
    np.savez(tmp_path / "plain.npz", w=np.zeros(2))
    with pytest.raises(ValueError, match="no kind tag"):
        npzfile.load(tmp_path / "plain.npz", "test.Thing", {1})
    with pytest.raises(ValueError, match=r"arrays: expected names other than \['kind', 'version'\]"):
        npzfile.save(path, "test.Thing", 1, kind=np.zeros(1))


def test_never_unpickles_and_names_missing_files(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="could not read"):
        npzfile.read_arrays(tmp_path / "obj.npy", "model")
    np.savez(tmp_path / "obj.npz", o=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="object arrays"):
        npzfile.read_arrays(tmp_path / "obj.npz", "model")
    with pytest.raises(FileNotFoundError, match="model: no file at"):
        npzfile.read_arrays(tmp_path / "absent.npz", "model")


def test_a_failed_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "f.npz"
    npzfile.save(path, "test.Thing", 1, w=np.ones(2))
    with pytest.raises(ValueError, match=r"expected plain \(non-object\) arrays, received object arrays \['w'\]"):
        npzfile.save(path, "test.Thing", 1, w=np.array([{"a": 1}], dtype=object))
    np.testing.assert_array_equal(npzfile.load(path, "test.Thing", {1})["w"], np.ones(2))
    assert sorted(os.listdir(tmp_path)) == ["f.npz"]
