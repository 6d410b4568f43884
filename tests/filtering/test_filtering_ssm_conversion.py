"""KalmanFilter <-> LinearGaussianSSM: the two conventions (predict first / observe x_0) give
every observation sequence the same evidence."""

import pytest
import torch

from ppltk.errors import ArgumentError, NotPositiveDefiniteError
from ppltk.filtering import KalmanFilter
from ppltk.smc import LinearGaussianSSM
from ppltk.smc._kalman import kalman_filter

D = torch.float64


def _kf():
    g = torch.Generator().manual_seed(0)
    A = 0.8 * torch.linalg.qr(torch.randn(2, 2, dtype=D, generator=g))[0]
    H = torch.randn(3, 2, dtype=D, generator=g)
    return KalmanFilter(
        A,
        0.3 * torch.eye(2, dtype=D),
        H,
        0.5 * torch.eye(3, dtype=D),
        None,
        torch.tensor([1.0, -0.5], dtype=D),
        torch.eye(2, dtype=D),
    )


def test_kalman_to_ssm_and_back_keeps_the_evidence():
    kf = _kf()
    ssm = LinearGaussianSSM.from_kalman(kf)
    _, ys = ssm.simulate(25, torch.Generator().manual_seed(1))
    reference = kalman_filter(ssm, ys)[2]  # the SMC package's own Kalman reference
    assert abs(float(kf.log_likelihood(ys)) - reference) < 1e-9
    back = KalmanFilter.from_state_space(ssm)
    torch.testing.assert_close(back.init_mean, kf.init_mean)
    torch.testing.assert_close(back.init_cov, kf.init_cov)
    assert abs(float(back.log_likelihood(ys)) - reference) < 1e-9


def test_conversion_refusals_are_named():
    kf = _kf()
    kf.b = torch.ones(3, dtype=D)
    with pytest.raises(ArgumentError, match="offset"):
        LinearGaussianSSM.from_kalman(kf)
    eye = torch.eye(1, dtype=D)
    tight = LinearGaussianSSM(0.9 * eye, eye, eye, eye, torch.zeros(1, dtype=D), 0.5 * eye)
    with pytest.raises(NotPositiveDefiniteError, match="P0 - Q"):
        KalmanFilter.from_state_space(tight)  # P0 < Q: no start before a first prediction
