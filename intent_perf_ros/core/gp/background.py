"""Online re-tuning of the place GP in a child process, off the node's thread.

A re-tuning replays the place's windows for each candidate (``retune.retune_place``): seconds of
numpy work. In the node's process it would hold the GIL for milliseconds at a time, beside the
executor thread. So ``BackgroundRetune`` starts ``python -m intent_perf_ros.core.gp.background``,
pickles the snapshot to its stdin and reads the result from its stdout, all from a helper thread;
the child runs at ``SCHED_IDLE`` (it gets a core only when nothing else wants it) with one BLAS
thread, imports numpy and the GP core only, and exits after one job. The refitted factor (8 MB at
capacity 1000) comes back as ``.npy`` files in an owner-only scratch directory that the node maps
read-only and copies into its existing buffers: unpickled, it cost the node's heap 24 MB that glibc
kept (RSS 83 -> 108 MB over five adoptions, then flat; ``out/s5/rss_cycles.py``). The node's
thread takes the snapshot and adopts the result between two predictions.
"""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import threading

import numpy as np

from intent_perf_ros.core.gp.retune import PlaceRetune, PlaceSnapshot


class BackgroundRetune:
    """One re-tuning at a time in a child process; ``poll()`` hands over its result once."""

    def __init__(self, timeout_s: float = 300.0) -> None:
        self.timeout_s = timeout_s
        self.failures = 0
        self.last_error = ""
        self._thread: threading.Thread | None = None
        self._process: subprocess.Popen | None = None
        self._result: PlaceRetune | None = None
        self._lock = threading.Lock()
        self._closed = False

    @property
    def busy(self) -> bool:
        return self._thread is not None

    def start(self, snapshot: PlaceSnapshot) -> None:
        if self._closed:
            raise RuntimeError("closed: no more re-tunings")
        if self.busy:
            raise RuntimeError("a re-tuning is already running: poll() until it is done")
        self._thread = threading.Thread(target=self._run, args=(pickle.dumps(snapshot, protocol=5),),
                                        name="place_retune", daemon=True)
        self._thread.start()

    def _run(self, payload: bytes) -> None:
        result, error = None, ""
        scratch = tempfile.mkdtemp(prefix="intent_perf_retune_")  # mode 0700
        try:
            with self._lock:
                if self._closed:  # close() came before the child was started
                    return
                self._process = subprocess.Popen([sys.executable, "-m", __name__, scratch], stdin=subprocess.PIPE,
                                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            out, err = self._process.communicate(payload, timeout=self.timeout_s)
            if self._process.returncode == 0:
                result, names = pickle.loads(out)
                if names:  # mapped, not read: the pages go when the result does (the files are unlinked below)
                    result.state = {name: np.load(os.path.join(scratch, f"{name}.npy"), mmap_mode="r")
                                    for name in names}
            else:
                error = f"exit code {self._process.returncode}: {err.decode(errors='replace')[-500:]}"
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.communicate()
            error = f"no result within {self.timeout_s} s"
        except (OSError, ValueError, pickle.UnpicklingError, EOFError) as exc:
            error = str(exc)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        with self._lock:
            self._process = None
            self._result = result
            if error:
                self.failures += 1
                self.last_error = error

    def poll(self) -> PlaceRetune | None:
        """The finished re-tuning's result (once), or None while it runs, after a failure, or idle."""
        if self._thread is None or self._thread.is_alive():
            return None
        self._thread.join()
        self._thread = None
        result, self._result = self._result, None
        return result

    def close(self) -> None:
        """Stop a running re-tuning (node shutdown): the child is killed, nothing is adopted."""
        with self._lock:
            self._closed = True
            if self._process is not None and self._process.poll() is None:
                self._process.kill()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        self._result = None


def _child(scratch: str) -> None:
    """Child process: one snapshot on stdin; the refitted state's arrays as ``scratch/NAME.npy`` and the
    ``PlaceRetune`` without them, with their names, on stdout."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):  # not Linux: lowest niceness instead
        os.nice(19)
    from threadpoolctl import threadpool_limits

    from intent_perf_ros.core.gp.retune import retune_place

    snapshot = pickle.load(sys.stdin.buffer)
    with threadpool_limits(limits=1):
        result = retune_place(snapshot)
    state, result.state = result.state or {}, None
    for name, array in state.items():
        np.save(os.path.join(scratch, f"{name}.npy"), array)
    sys.stdout.buffer.write(pickle.dumps((result, sorted(state)), protocol=5))


if __name__ == "__main__":
    _child(sys.argv[1])
