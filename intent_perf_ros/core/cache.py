"""In-process caches for work that really repeats, bounded by bytes and keyed by content.

Why bytes and not entries: the values differ by orders of magnitude (a QP structure at horizon 50 is
about 100 kB, a hyperparameter fit a few dozen bytes), so an entry count bounds nothing useful.
Why content keys: Python's ``hash()`` is salted per process (PYTHONHASHSEED), so keys built on it never
match across restarts or between processes; ``content_key`` is a sha256 over the bytes, shapes and dtypes
of the inputs plus a canonical JSON of the settings and a version string, identical everywhere.

What is cached here: the index structure of the MPC QP per (horizon, dt, obstacle slots)
(``cached_problem``) and kernel hyperparameter fits per data set (``cached_hyperparameters``). What is
not: anything computed from live sensor input, which never repeats (see docs/caches.md).
"""

from __future__ import annotations

import copy
import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

if TYPE_CHECKING:
    from intent_perf_ros.core.mpc.qp import MPCProblem

T = TypeVar("T")
QP_STRUCTURE_VERSION = "mpc-qp-structure-v1"
HYPERPARAMETER_VERSION = "rbf-hyperparameters-v1"


def nbytes_of(value: object, _seen: set[int] | None = None) -> int:
    """Payload bytes of arrays, bytes, strings and numbers, recursing through containers and object fields.

    Interpreter overhead is not counted: the bound is meant for the data, which dominates. An object
    referenced twice counts once. Unsupported leaves raise ``TypeError`` (pass ``nbytes=`` instead).
    """
    seen = set() if _seen is None else _seen
    if id(value) in seen:
        return 0
    seen.add(id(value))
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if isinstance(value, bytes | bytearray):
        return len(value)
    if isinstance(value, memoryview):
        return value.nbytes
    if isinstance(value, str):
        return len(value.encode())
    if value is None or isinstance(value, bool | int | float | complex | np.generic):
        return 8
    if isinstance(value, Mapping):
        return sum(nbytes_of(k, seen) + nbytes_of(v, seen) for k, v in value.items())
    if isinstance(value, list | tuple | set | frozenset):
        return sum(nbytes_of(v, seen) for v in value)
    if hasattr(value, "__dict__"):
        return nbytes_of(vars(value), seen)
    raise TypeError(f"cannot size a {type(value).__name__}; pass nbytes= to put() or give ByteLRU a sizer")


def _canonical_json(value: object) -> object:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(
        f"setting of type {type(value).__name__} has no canonical JSON form; "
        "pass numbers, strings, bools, lists, dicts or numpy arrays"
    )


def content_key(*parts: np.ndarray | bytes, settings: Mapping[str, Any], version: str) -> str:
    """sha256 hex digest of ``version``, ``settings`` (sorted-key JSON) and each part's bytes.

    Arrays contribute dtype, shape and C-order bytes, so equal bytes with another shape or dtype
    give another key; every field is length-prefixed, so concatenations cannot collide.
    """
    if not version:
        raise ValueError("version must be a non-empty string; bump it whenever the cached format changes")
    h = hashlib.sha256()

    def field(tag: bytes, data: bytes) -> None:
        h.update(tag + len(data).to_bytes(8, "little") + data)

    field(b"v", version.encode())
    text = json.dumps(dict(settings), sort_keys=True, separators=(",", ":"), default=_canonical_json)
    field(b"s", text.encode())
    for part in parts:
        if isinstance(part, np.ndarray):
            if part.dtype.hasobject:
                raise TypeError("object arrays have no stable bytes; convert them to a numeric dtype")
            field(b"a", f"{part.dtype.str}{part.shape}".encode())
            field(b"d", np.ascontiguousarray(part).tobytes())
        elif isinstance(part, bytes | bytearray | memoryview):
            field(b"b", bytes(part))
        else:
            raise TypeError(f"key parts must be numpy arrays or bytes, got {type(part).__name__}")
    return h.hexdigest()


class ByteLRU:
    """Least-recently-used map whose values together hold at most ``max_bytes`` payload bytes.

    Thread-safe (one lock), because node callbacks and background fits may share an instance.
    A value larger than the whole budget is not stored (counted as ``oversized``) rather than
    flushing everything else for nothing. Callers must not mutate values they get back.
    """

    def __init__(self, max_bytes: int, sizer: Callable[[object], int] = nbytes_of) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be a positive number of bytes, got {max_bytes}")
        self.max_bytes = int(max_bytes)
        self._sizer = sizer
        self._items: OrderedDict[str, tuple[object, int]] = OrderedDict()
        self._lock = threading.Lock()
        self._bytes = 0
        self._hits = self._misses = self._evictions = self._oversized = 0

    def get(self, key: str) -> object | None:
        """The value stored under ``key`` (now the most recently used), or None."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self._misses += 1
                return None
            self._items.move_to_end(key)
            self._hits += 1
            return item[0]

    def put(self, key: str, value: object, nbytes: int | None = None) -> bool:
        """Store ``value`` (size from ``nbytes`` or the sizer), evicting the least recently used.

        Returns False if the value alone exceeds ``max_bytes`` and was not stored.
        """
        if value is None:
            raise ValueError("None cannot be cached: get() returns None for a miss")
        size = self._sizer(value) if nbytes is None else int(nbytes)
        if size < 0:
            raise ValueError(f"nbytes must be >= 0, got {size}")
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            if size > self.max_bytes:
                self._oversized += 1
                return False
            while self._bytes + size > self.max_bytes:
                _, (_, evicted) = self._items.popitem(last=False)
                self._bytes -= evicted
                self._evictions += 1
            self._items[key] = (value, size)
            self._bytes += size
            return True

    def __len__(self) -> int:
        return len(self._items)

    def stats(self) -> dict:
        """Counters for the node statistics (hit_rate is 0.0 before the first lookup)."""
        with self._lock:
            lookups = self._hits + self._misses
            return {
                "hits": self._hits,
                "misses": self._misses,
                "hit_rate": self._hits / lookups if lookups else 0.0,
                "bytes": self._bytes,
                "max_bytes": self.max_bytes,
                "entries": len(self._items),
                "evictions": self._evictions,
                "oversized": self._oversized,
            }


# Process-wide instances: a controller or predictor has no handle to pass a cache through.
QP_STRUCTURES = ByteLRU(16 << 20)
HYPERPARAMETERS = ByteLRU(1 << 20)

# MPCProblem attributes that depend only on (horizon, dt, slots) and are never written after __init__:
# shared between clones. Every other array attribute is per-controller state and is copied.
_QP_SHARED = ("ax_idx", "a_matrix", "x_shift", "y_shift")
_QP_COPIED = ("p_diag", "q", "lo", "hi")


def cached_problem(
    horizon: int, dt: float, slots: int, settings: dict, cache: ByteLRU = QP_STRUCTURES
) -> MPCProblem:
    """An ``MPCProblem`` equal to ``MPCProblem(horizon, dt, slots, settings)``, its structure reused.

    The structure (sparsity pattern, positions of the changing entries, fixed values of A, shift maps)
    is built by a Python loop over every nonzero; a second controller with the same horizon, dt and
    slots copies only the per-controller vectors. The OSQP factorisation is not shared: it holds
    mutable solver state and depends on the controller's weights (``setup()`` still runs per clone).
    """
    from intent_perf_ros.core.mpc.qp import MPCProblem

    key = content_key(
        settings={"horizon": int(horizon), "dt": float(dt), "slots": int(slots)}, version=QP_STRUCTURE_VERSION
    )
    template = cache.get(key)
    if template is None:
        template = MPCProblem(horizon, dt, slots, {})
        # Only A is made read-only: the index arrays go to numba kernels, which type read-only arrays
        # differently and would refuse them (test_cache checks that a closed loop leaves them unchanged).
        for arr in (template.a_matrix.data, template.a_matrix.indices, template.a_matrix.indptr):
            arr.flags.writeable = False
        size = sum(nbytes_of(getattr(template, n)) for n in (*_QP_SHARED, *_QP_COPIED, "ax"))
        cache.put(key, template, nbytes=size)
    clone = copy.copy(template)
    for name in _QP_COPIED:
        setattr(clone, name, getattr(template, name).copy())
    clone.ax = np.zeros_like(template.ax)
    clone.ax_dyn = clone.ax[: 4 * clone.horizon].reshape(clone.horizon, 4)
    clone.ax_hum = clone.ax[4 * clone.horizon :].reshape(clone.horizon, clone.slots, 2)
    clone._settings = settings
    clone.solver = None
    clone._ext = None
    return clone


def _flat_arrays(data: np.ndarray | Sequence) -> list[np.ndarray]:
    if isinstance(data, np.ndarray):
        return [data]
    if isinstance(data, list | tuple):
        return [a for item in data for a in _flat_arrays(item)]
    raise TypeError(f"data must be numpy arrays or (nested) lists/tuples of them, got {type(data).__name__}")


def cached_hyperparameters(
    windows: np.ndarray | Sequence,
    settings: Mapping[str, Any],
    fit_fn: Callable[..., T],
    cache: ByteLRU = HYPERPARAMETERS,
) -> T:
    """``fit_fn(windows, **settings)``, computed once per data set, settings and fit function.

    ``windows`` is the training data as passed to ``fit_fn`` (an array, or nested lists/tuples of
    arrays such as ``fit_hyperparameters``' [(X, Y), ...] groups); the key covers every array's bytes,
    so the same windows fitted again (another predictor setting that does not touch the fit, a
    re-evaluation of the same fold) skip an L-BFGS run of seconds. Returns a deep copy so callers
    own what they get.
    """
    key = content_key(
        *_flat_arrays(windows),
        settings={"fn": f"{fit_fn.__module__}.{fit_fn.__qualname__}", "settings": dict(settings)},
        version=HYPERPARAMETER_VERSION,
    )
    result = cache.get(key)
    if result is None:
        result = fit_fn(windows, **settings)
        cache.put(key, result)
    return copy.deepcopy(result)
