"""Persist fitted predictors in a ``diskcache`` store so a node starts warm.

Key: sha256 of the format version, the predictor settings (JSON, sorted keys) and a digest of the
training data; never Python's ``hash()``, which changes between processes. Value: a dict with the
JSON metadata, the arrays as ``.npz`` bytes and a sha256 digest of both.
On load: a missing key raises ``KeyError``; a digest mismatch (corrupt entry) or a format/settings
mismatch (stale entry) raises ``StoreError``; ``default_predictor`` then warns and rebuilds.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from intent_perf_ros.core.storage import owner_only_directory

FORMAT_VERSION = 3  # 2: unsteadiness gain, variance model chosen out of place, heading place features; 3: place stride


class StoreError(ValueError):
    """A stored model is corrupt or stale; delete it or let ``default_predictor`` rebuild it."""


def settings_key(config, data_digest: str = "") -> str:
    """Content-derived key of a model: format, every setting and the training data digest."""
    text = json.dumps(
        {"format": FORMAT_VERSION, "config": asdict(config), "data": data_digest},
        sort_keys=True,
        default=list,
    )
    return "gp-predictor-" + hashlib.sha256(text.encode()).hexdigest()


def data_digest(directory: Path, names: list[str]) -> str:
    """sha256 over the names and bytes of the training files: new data makes stored models stale."""
    h = hashlib.sha256()
    for name in names:
        h.update(name.encode())
        h.update((Path(directory) / name).read_bytes())
    return h.hexdigest()


def pack_arrays(arrays: dict[str, np.ndarray]) -> bytes:
    """Arrays as ``.npz`` bytes: numpy's own format, read back without unpickling."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _write_entry(directory: str, key: str, meta: dict, arrays: dict[str, np.ndarray]) -> None:
    """One entry: JSON metadata, the arrays as ``.npz`` bytes and a sha256 over both."""
    import diskcache

    meta_text = json.dumps(meta, sort_keys=True, default=list)
    blob = pack_arrays(arrays)
    digest = hashlib.sha256(meta_text.encode() + blob).hexdigest()
    with diskcache.Cache(owner_only_directory(directory)) as cache:
        cache.set(key, {"meta": meta_text, "arrays": blob, "digest": digest})


def _read_entry(directory: str, key: str, what: str) -> tuple[dict, dict[str, np.ndarray]]:
    """Metadata and arrays of an entry: KeyError if there is none, StoreError if it is corrupt."""
    import diskcache

    # diskcache unpickles its entries: only ever from a directory no other user can write.
    with diskcache.Cache(owner_only_directory(directory)) as cache:
        entry = cache.get(key)
    if entry is None:
        raise KeyError(f"no {what} for these settings in {directory}")
    try:
        meta_text, blob, digest = entry["meta"], entry["arrays"], entry["digest"]
        if hashlib.sha256(meta_text.encode() + blob).hexdigest() != digest:
            raise StoreError(f"{what} {key} fails its checksum (corrupt); it will be rebuilt")
        meta = json.loads(meta_text)
        with np.load(io.BytesIO(blob), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except StoreError:
        raise
    except Exception as exc:  # malformed entry of any kind is treated as corrupt
        raise StoreError(f"{what} {key} is unreadable ({exc}); it will be rebuilt") from exc
    return meta, arrays


def save_predictor(pred, directory: str, data_digest: str = "") -> str:
    """Write ``pred`` under its key in the diskcache at ``directory``; returns the key."""
    if pred.motion_model_ is None:
        raise ValueError("nothing to save: fit() the predictor first")
    model = pred.motion_model_
    p = pred.motion_params_
    arrays = {f"motion/{k}": v for k, v in model.state().items()}
    arrays.update(
        {
            "col_scale": pred.col_scale_,
            "col_var": pred.col_var_,
            "calibration": pred.calibration_,
            "motion_ls": p.lengthscales,
            "place_ls": pred.place_params_.lengthscales,
            "motion_shrink": pred.motion_shrink_,
            "place_shrink": pred.place_shrink_,
            "d2_reference": pred.d2_reference_,
        }
    )
    meta = {
        "format": FORMAT_VERSION,
        "config": asdict(pred.config),
        "kind": type(model).__name__,
        "motion": [p.signal_var, p.noise_var],
        "place": [pred.place_params_.signal_var, pred.place_params_.noise_var],
        "n_windows_fitted": pred.n_windows_fitted_,
        "speed_gain": pred.speed_gain_,
        "unsteady_gain": pred.unsteady_gain_,
        "use_motion_variance": pred.use_motion_variance_,
        "place_stride": pred.place_stride_,
    }
    key = settings_key(pred.config, data_digest)
    _write_entry(directory, key, meta, arrays)
    return key


def load_predictor(directory: str, config, data_digest: str = ""):
    """Rebuild the predictor stored for ``config`` (see module docstring for the failure modes)."""
    from intent_perf_ros.core.gp.kernels import RBFParams
    from intent_perf_ros.core.gp.predictor import TrajectoryPredictor
    from intent_perf_ros.core.gp.sparse import SparseGP

    key = settings_key(config, data_digest)
    meta, arrays = _read_entry(directory, key, "stored model")
    if meta.get("format") != FORMAT_VERSION or meta.get("config") != json.loads(
        json.dumps(asdict(config), default=list)
    ):
        raise StoreError(f"stored model {key} was written by another format or settings (stale)")
    pred = TrajectoryPredictor(config)
    pred.motion_params_ = RBFParams(arrays["motion_ls"], *meta["motion"])
    pred.place_params_ = RBFParams(arrays["place_ls"], *meta["place"])
    state = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("motion/")}
    if meta["kind"] == "SparseGP":
        model = SparseGP(pred.motion_params_, jitter=config.jitter, dtype=config.dtype)
    else:  # ExactGP or TorchExactGP, as the config's backend chooses
        model = pred._exact_model(pred.motion_params_)
    pred.motion_model_ = model.set_state(state)
    # float64 whatever was stored: the compiled loops the predictor hands these to check no dtypes
    pred.col_scale_ = np.asarray(arrays["col_scale"], dtype=np.float64)
    pred.col_var_ = np.asarray(arrays["col_var"], dtype=np.float64)
    pred.calibration_ = arrays["calibration"]
    pred.n_windows_fitted_ = int(meta["n_windows_fitted"])
    pred.speed_gain_ = float(meta["speed_gain"])
    pred.unsteady_gain_ = float(meta["unsteady_gain"])
    pred.use_motion_variance_ = bool(meta["use_motion_variance"])
    pred.place_stride_ = int(meta["place_stride"])
    pred.motion_shrink_ = np.asarray(arrays["motion_shrink"], dtype=np.float64)
    pred.place_shrink_ = np.asarray(arrays["place_shrink"], dtype=np.float64)
    pred.d2_reference_ = np.asarray(arrays["d2_reference"], dtype=np.float64)
    pred._reset_variance_adaptation()
    return pred


def _place_key(config, site: str) -> str:
    return "gp-place-" + hashlib.sha256((settings_key(config) + "\0" + site).encode()).hexdigest()


def save_place_windows(directory: str, config, site: str, windows: np.ndarray) -> str:
    """Store the windows a predictor learned at ``site`` (``learned_windows()``); returns the key.

    Raw windows rather than the place GP's features and targets: those are residuals of the offline
    model, so after a refit on new data the same windows still rebuild a consistent place model.
    """
    key = _place_key(config, site)
    _write_entry(directory, key, {"format": FORMAT_VERSION, "site": site},
                 {"windows": np.asarray(windows, dtype=np.float64)})
    return key


def load_place_windows(directory: str, config, site: str) -> np.ndarray:
    """The windows stored for ``site`` and these settings: KeyError if none, StoreError if corrupt."""
    key = _place_key(config, site)
    _, arrays = _read_entry(directory, key, f"learned windows of site '{site}'")
    windows = arrays.get("windows", np.empty(0))
    steps = config.obs_steps + config.pred_steps
    if windows.ndim != 3 or windows.shape[1:] != (steps, 2) or not np.isfinite(windows).all():
        raise StoreError(f"learned windows {key} have shape {windows.shape}, expected (K, {steps}, 2) finite")
    return windows
