"""Round trips of memory-mapped and compressed arrays; permissions; pickle refused."""
import os
import stat

import numpy as np
import pytest

from intent_perf_ros.core.storage import ArrayStore, owner_only_directory


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_directory_is_created_owner_only(tmp_path):
    old = os.umask(0o022)
    try:
        store = ArrayStore(tmp_path / "a" / "store")
    finally:
        os.umask(old)
    assert _mode(store.root) == 0o700


def test_existing_directory_writable_by_others_is_refused(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(PermissionError, match="chmod 700"):
        owner_only_directory(shared)
    shared.chmod(0o755)
    assert owner_only_directory(shared) == shared
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        owner_only_directory(tmp_path / "file")


def test_mapped_array_round_trip_in_chunks(tmp_path):
    store = ArrayStore(tmp_path / "store")
    rng = np.random.default_rng(0)
    expected = rng.standard_normal((10_000, 6)).astype(np.float32)
    mapped = store.create_mapped("train_x", expected.shape, np.float32)
    assert isinstance(mapped, np.memmap)
    for start in range(0, len(expected), 3000):  # filled a chunk at a time, as a large set would be
        mapped[start : start + 3000] = expected[start : start + 3000]
    mapped.flush()
    del mapped
    assert _mode(store.root / "train_x.npy") == 0o600
    loaded = store.open_mapped("train_x")
    assert isinstance(loaded, np.memmap)
    assert loaded.dtype == np.float32 and loaded.shape == expected.shape
    np.testing.assert_array_equal(loaded, expected)
    np.testing.assert_array_equal(np.load(store.root / "train_x.npy"), expected)  # a plain .npy file
    with pytest.raises(ValueError, match="read-only"):
        loaded[0, 0] = 1.0
    writable = store.open_mapped("train_x", writable=True)
    writable[0, 0] = 42.0
    writable.flush()
    assert store.open_mapped("train_x")[0, 0] == 42.0


def test_compressed_round_trip_keeps_dtypes_shapes_and_metadata(tmp_path):
    store = ArrayStore(tmp_path / "store")
    snapshot = {
        "cholesky": np.tril(np.ones((300, 300))),
        "inducing": np.arange(40, dtype=np.int32).reshape(20, 2),
        "lengthscale": 0.75,
        "kernel": "rbf",
        "empty": np.zeros((0, 3)),
    }
    path = store.save_compressed("gp_snapshot", snapshot)
    assert _mode(path) == 0o600
    assert path.stat().st_size < snapshot["cholesky"].nbytes / 10  # compressed, not just stored
    loaded = store.load_compressed("gp_snapshot")
    assert loaded.keys() == snapshot.keys()
    for key, value in snapshot.items():
        expected = np.asarray(value)
        assert loaded[key].dtype == expected.dtype and loaded[key].shape == expected.shape
        np.testing.assert_array_equal(loaded[key], expected)
    assert loaded["lengthscale"].item() == 0.75 and loaded["kernel"].item() == "rbf"
    assert [p.name for p in store.root.iterdir()] == ["gp_snapshot.npz"]  # no temporary left behind


def test_object_arrays_are_refused_on_save_and_pickles_on_load(tmp_path):
    store = ArrayStore(tmp_path / "store")
    with pytest.raises(TypeError, match="pickle"):
        store.save_compressed("bad", {"objs": np.array([{"a": 1}], dtype=object)})
    np.savez(store.root / "planted.npz", payload=np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="allow_pickle"):
        store.load_compressed("planted")
    np.save(store.root / "planted_map.npy", np.array([1, "x"], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError):
        store.open_mapped("planted_map")


@pytest.mark.parametrize("name", ["../escape", "a/b", ".hidden", "", "x y"])
def test_names_cannot_leave_the_directory(tmp_path, name):
    store = ArrayStore(tmp_path / "store")
    with pytest.raises(ValueError, match="bad storage name"):
        store.save_compressed(name, {"a": np.zeros(1)})


def test_missing_files_say_how_to_create_them(tmp_path):
    store = ArrayStore(tmp_path / "store")
    with pytest.raises(FileNotFoundError, match="create_mapped"):
        store.open_mapped("nope")
    with pytest.raises(FileNotFoundError, match="save_compressed"):
        store.load_compressed("nope")
