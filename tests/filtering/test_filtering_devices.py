"""Demo hook, dtype handling and the CUDA path of the filters."""

from __future__ import annotations

import pytest
import torch

from ppltk.datasets import simulate_neural_decoding
from ppltk.demo.filtering import run_demo
from ppltk.filtering import DiscriminativeKalmanFilter, KalmanFilter


def test_run_demo_fast(tmp_path):
    rows = run_demo(True, tmp_path)
    assert {"capability", "check", "value", "reference", "figure"} <= set(rows[0])
    assert (
        rows[0]["figure"] is not None and (tmp_path / "filtering_decoding.png").stat().st_size > 0
    )
    assert 0.0 < rows[0]["value"] < 1.0 and 0.0 < rows[0]["reference"] < 1.0


def test_float32_input_follows_dtype():
    X, Z = simulate_neural_decoding(15, 600, 20.0, seed=9, dtype=torch.float32)
    kf = KalmanFilter().fit(X, Z)
    means, covs = kf.filter(X[:50])
    assert means.dtype == covs.dtype == torch.float32
    ref, _ = KalmanFilter().fit(X.double(), Z.double()).filter(X[:50].double())
    # float32 rounding (~1e-7 relative) amplified by the conditioning of 15x15 solves
    torch.testing.assert_close(means.double(), ref, atol=1e-3, rtol=1e-3)


@pytest.mark.cuda
def test_cuda_batched_filters_match_cpu():
    X, Z = simulate_neural_decoding(20, 800, 20.0, seed=10)
    dkf = DiscriminativeKalmanFilter("nw", warn=False).fit(X[:600], Z[:600])
    kf = KalmanFilter().fit(X[:600], Z[:600])
    Xb = X[600:].reshape(4, 50, 20)
    cpu_dkf, cpu_kf = dkf.filter(Xb)[0], kf.filter(Xb)[0]
    Xc, Zc = X.cuda(), Z.cuda()
    dkf_c = DiscriminativeKalmanFilter("nw", warn=False).fit(Xc[:600], Zc[:600])
    kf_c = KalmanFilter().fit(Xc[:600], Zc[:600])
    out_dkf, out_kf = dkf_c.filter(Xb.cuda())[0], kf_c.filter(Xb.cuda())[0]
    assert out_dkf.device.type == "cuda"
    torch.testing.assert_close(out_kf.cpu(), cpu_kf, atol=1e-8, rtol=1e-8)
    torch.testing.assert_close(out_dkf.cpu(), cpu_dkf, atol=1e-6, rtol=1e-6)
