"""Torch backend equals the numpy backend; numpy-only use never imports torch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from intent_perf_ros.core.gp.exact import ExactGP
from intent_perf_ros.core.gp.kernels import RBFParams

torch = pytest.importorskip("torch")

PARAMS = RBFParams(np.array([0.6, 1.1, 1.7]), 0.9, 0.02)


def test_torch_cpu_equals_numpy() -> None:
    from intent_perf_ros.core.gp.torch_backend import TorchExactGP

    rng = np.random.default_rng(4)
    x, y, xq = rng.normal(size=(300, 3)), rng.normal(size=(300, 5)), rng.normal(size=(40, 3))
    ref = ExactGP(PARAMS).fit(x, y)
    model = TorchExactGP(PARAMS, device="cpu").fit(x, y)
    model.reserve(40)
    for a, b in zip(model.predict(xq), ref.predict(xq), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-9)
    for a, b in zip(model.loo_residuals(), ref.loo_residuals(), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-8)
    mean, var = np.empty((40, 5)), np.empty(40)
    model.predict_into(xq[:1], mean, var, include_noise=False)  # the single-query shape and latent variance
    np.testing.assert_allclose(mean[:1], ref.predict(xq[:1])[0], atol=1e-9)
    np.testing.assert_allclose(var[:1], ref.predict(xq[:1], include_noise=False)[1], atol=1e-9)


def test_torch_predict_allocates_no_tensor_in_steady_state() -> None:
    """torch's CPU allocator is invisible to tracemalloc: its profiler records every tensor allocation."""
    from torch.profiler import ProfilerActivity, profile

    from intent_perf_ros.core.gp.torch_backend import TorchExactGP

    rng = np.random.default_rng(5)
    model = TorchExactGP(PARAMS, device="cpu").fit(rng.normal(size=(200, 3)), rng.normal(size=(200, 4)))
    model.reserve(16)
    xq, mean, var = rng.normal(size=(16, 3)), np.empty((16, 4)), np.empty(16)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        for m in (16, 1, 7):
            model.predict_into(xq[:m], mean, var)
    allocations = [e for e in prof.events() if e.name == "[memory]"]
    assert allocations == []
    # the check can fail: more queries than reserved grow the buffers, which the profiler sees
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        model.predict_into(rng.normal(size=(17, 3)), np.empty((17, 4)), np.empty(17))
    assert any(e.name == "[memory]" and e.cpu_memory_usage > 0 for e in prof.events())


def test_predictor_with_numpy_backend_does_not_import_torch() -> None:
    code = (
        "import sys, numpy as np\n"
        "from intent_perf_ros.core.gp.predictor import TrajectoryPredictor, PredictorConfig\n"
        "p = TrajectoryPredictor(PredictorConfig(backend='numpy', max_humans=2)); p.warmup()\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
