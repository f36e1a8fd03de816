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


def test_predictor_with_numpy_backend_does_not_import_torch() -> None:
    code = (
        "import sys, numpy as np\n"
        "from intent_perf_ros.core.gp.predictor import TrajectoryPredictor, PredictorConfig\n"
        "p = TrajectoryPredictor(PredictorConfig(backend='numpy', max_humans=2)); p.warmup()\n"
        "assert 'torch' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
