"""nodes.common: the real-time priority option every node process has."""
import json
import subprocess
import sys
import textwrap

PROBE = textwrap.dedent("""
    import json, os, threading
    from intent_perf_ros.nodes.common import set_realtime_priority
    release = threading.Event()
    worker = threading.Thread(target=release.wait)
    worker.start()
    refused = set_realtime_priority(7)
    policies = [os.sched_getscheduler(int(t)) for t in os.listdir("/proc/self/task")]
    release.set()
    worker.join()
    print(json.dumps({"refused": refused, "fifo": [p == os.SCHED_FIFO for p in policies],
                      "priority": os.sched_getparam(0).sched_priority}))
""")


def test_realtime_priority_reaches_every_thread_or_says_why_not():
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    if out["refused"] is None:
        assert len(out["fifo"]) >= 2 and all(out["fifo"]) and out["priority"] == 7
    else:  # a machine without CAP_SYS_NICE: refused with the fix named, nothing half-applied
        assert "CAP_SYS_NICE" in out["refused"] and not any(out["fifo"])
