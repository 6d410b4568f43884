"""MA-fBM: the linear system against quadrature, errors, variances, gradients."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate

from ppltk.errors import ArgumentError
from ppltk.sde import MarkovFBM, fbm_scale, gammainc, gammaincc, optimal_omega
from ppltk.sde.markov_fbm import _norm_const


def _kernel_z(kind, gamma, t, s):
    """OU kernel of Z_k(t) = int k(t, s) dW(s)."""
    if kind == "II":
        return math.exp(-gamma * (t - s)) if 0 <= s <= t else 0.0
    return (math.exp(-gamma * (t - s)) if s <= t else 0.0) - (math.exp(gamma * s) if s < 0 else 0.0)


def _kernel_b(kind, hurst, c, t, s):
    """fBM kernel c [(t-s)_+^{H-1/2} - (-s)_+^{H-1/2}] (Type II: s in [0, t] only)."""
    a1 = hurst - 0.5
    if kind == "II":
        return c * (t - s) ** a1 if 0 <= s < t else 0.0
    return c * (((t - s) ** a1 if s < t else 0.0) - ((-s) ** a1 if s < 0 else 0.0))


def _ito_product(kind, f, g, t):
    """E[int f dW int g dW] = int f g ds over the support (-inf, t]."""
    pts = [0.0] if t > 0 else None
    val = integrate.quad(lambda s: f(s) * g(s), 0.0, t, limit=200, points=pts)[0]
    if kind == "I":
        val += integrate.quad(lambda s: f(s) * g(s), -np.inf, 0.0, limit=200)[0]
    return val


@pytest.mark.parametrize("kind", ["II", "I"])
@pytest.mark.parametrize("hurst", [0.3, 0.7])
def test_sde_system_matches_quadrature(kind, hurst):
    """A_ij = int_0^T E[Z_i Z_j] dt and b_k = int_0^T E[B_H Z_k] dt from the kernels."""
    T = 1.5
    m = MarkovFBM(hurst, num_processes=3, gamma_min=0.5, gamma_max=8.0, horizon=T, kind=kind)
    A, b = m.system()
    g = m.gammas.tolist()
    c = float(_norm_const(torch.tensor(hurst, dtype=torch.float64), kind, "standard"))

    def a_entry(i, j):
        def inner(t):
            return _ito_product(
                kind,
                lambda s: _kernel_z(kind, g[i], t, s),
                lambda s: _kernel_z(kind, g[j], t, s),
                t,
            )

        return integrate.quad(inner, 0, T, limit=100)[0]

    def b_entry(k):
        def inner(t):
            return _ito_product(
                kind,
                lambda s: _kernel_b(kind, hurst, c, t, s),
                lambda s: _kernel_z(kind, g[k], t, s),
                t,
            )

        return integrate.quad(inner, 0, T, limit=100)[0]

    A_q = np.array([[a_entry(i, j) for j in range(3)] for i in range(3)])
    b_q = np.array([b_entry(k) for k in range(3)])
    np.testing.assert_allclose(A.numpy(), A_q, rtol=1e-6)
    np.testing.assert_allclose(b.numpy(), b_q, rtol=1e-5)


@pytest.mark.parametrize("kind", ["II", "I"])
@pytest.mark.parametrize("hurst", [0.25, 0.8])
def test_sde_standard_normalisation_has_unit_variance(kind, hurst):
    """Var B_H(1) = int kernel^2 = 1 under the standard normalisation (quadrature)."""
    c = float(_norm_const(torch.tensor(hurst, dtype=torch.float64), kind, "standard"))
    var = _ito_product(kind, lambda s: _kernel_b(kind, hurst, c, 1.0, s) ** 2, lambda s: 1.0, 1.0)
    assert var == pytest.approx(1.0, rel=1e-6)
    rl = fbm_scale(hurst, kind, "riemann_liouville")
    assert float(rl) == pytest.approx(var / c**2 / math.gamma(hurst + 0.5) ** 2, rel=1e-6)


def test_sde_l2_error_vanishes_for_brownian_type_two():
    """At H = 1/2 Type II targets W itself; the slowest OU speeds reproduce it almost exactly."""
    err_bm = MarkovFBM(0.5, num_processes=5, horizon=1.0, kind="II").approximation_error(True)
    err_rough = MarkovFBM(0.2, num_processes=5, horizon=1.0, kind="II").approximation_error(True)
    assert 0 <= float(err_bm) < 1e-6
    assert float(err_rough) > 1e3 * float(err_bm)
    exact = MarkovFBM(0.5, gammas=torch.zeros(1), horizon=2.0)
    assert float(exact.omega) == pytest.approx(1.0, abs=1e-12)
    assert float(exact.approximation_error()) == pytest.approx(0.0, abs=1e-12)


def test_sde_l2_error_matches_quadrature():
    """The closed-form error equals int_0^T Var(B_H - B_hat) dt by quadrature of the kernels."""
    m = MarkovFBM(0.3, num_processes=3, gamma_min=0.5, gamma_max=20.0, horizon=1.0, kind="II")
    c = float(_norm_const(torch.tensor(0.3, dtype=torch.float64), "II", "standard"))
    w, g = m.omega.tolist(), m.gammas.tolist()

    def diff(t, s):
        return _kernel_b("II", 0.3, c, t, s) - sum(
            wk * _kernel_z("II", gk, t, s) for wk, gk in zip(w, g)
        )

    err = integrate.quad(
        lambda t: integrate.quad(lambda s: diff(t, s) ** 2, 0, t, limit=200)[0], 0, 1, limit=100
    )[0]
    assert float(m.approximation_error()) == pytest.approx(err, rel=1e-4)


@pytest.mark.parametrize("kind", ["II", "I"])
def test_sde_variance_at_horizon_matches_closed_form(kind):
    """Monte Carlo variance of sampled paths vs omega^T E[Z(T) Z(T)^T] omega.

    The sample variance of N Gaussian draws has standard error var * sqrt(2 / (N - 1)); we allow
    4 standard errors. The closed form is also within the approximation error of T^{2H}.
    """
    T, n = 2.0, 4000
    m = MarkovFBM(0.7, num_processes=5, gamma_min=0.02, gamma_max=50.0, horizon=T, kind=kind)
    ts = torch.linspace(0, T, 9, dtype=torch.float64)
    paths = m.sample(ts, n, seed=3)
    var_closed = float(m.variance(torch.tensor([T]))[0])
    se = var_closed * math.sqrt(2 / (n - 1))
    assert float(paths[:, -1].var()) == pytest.approx(var_closed, abs=4 * se)
    if kind == "II":  # (Type I needs slower speeds for H = 0.7; its L2 error here is ~10%)
        assert var_closed == pytest.approx(T**1.4, rel=0.05)
    cov = m.covariance(ts[1:])
    assert torch.allclose(cov.diagonal(), m.variance(ts[1:]))
    emp = torch.cov(paths[:, 1:].T)
    # covariance entries: SE <= sqrt((C_ii C_jj + C_ij^2) / N) <= var_max * sqrt(2 / N)
    assert float((emp - cov).abs().max()) < 4 * float(cov.diagonal().max()) * math.sqrt(2 / n)


@pytest.mark.parametrize("kind", ["II", "I"])
def test_sde_omega_gradcheck(kind):
    gammas = torch.tensor([0.3, 2.0, 12.0, 70.0], dtype=torch.float64)
    for h in (0.3, 0.7):
        hurst = torch.tensor(h, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda x: optimal_omega(x, gammas, 1.0, kind), (hurst,))


def test_sde_incomplete_gamma_gradcheck():
    a = torch.tensor([0.55, 0.9, 1.4], dtype=torch.float64, requires_grad=True)
    x = torch.tensor([0.05, 4.0, 35.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(gammainc, (a, x))
    assert torch.autograd.gradcheck(gammaincc, (a, x))
    total = gammainc(a, x) + gammaincc(a, x)
    assert torch.allclose(total, torch.ones_like(total))


def test_sde_markov_fbm_validates_arguments():
    with pytest.raises(ArgumentError, match="hurst"):
        MarkovFBM(1.2)
    with pytest.raises(ArgumentError, match="kind"):
        MarkovFBM(0.3, kind="III")
    with pytest.raises(ArgumentError, match="gammas"):
        MarkovFBM(0.3, gammas=torch.tensor([0.0, 1.0]), kind="I")
    m = MarkovFBM(0.3, num_processes=4)
    assert m.gammas.dtype == torch.float64 and m.omega.dtype == torch.float64
    assert m.gammas.shape == (4,) and m.omega.shape == (4,)


def test_sde_omega_adjoint_gradient_equals_autograd_through_solve():
    """OmegaFunction's adjoint backward equals differentiating A^{-1} b(H) by autograd."""
    from ppltk.sde import omega_system

    gammas = torch.tensor([0.3, 2.0, 12.0, 70.0], dtype=torch.float64)
    weights = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=torch.float64)
    for kind in ("II", "I"):
        h = torch.tensor(0.37, dtype=torch.float64, requires_grad=True)
        A, b = omega_system(h, gammas, 1.0, kind)
        direct = torch.autograd.grad(weights @ torch.linalg.solve(A, b), h)[0]
        adjoint = torch.autograd.grad(weights @ optimal_omega(h, gammas, 1.0, kind), h)[0]
        assert float(adjoint) == pytest.approx(float(direct), rel=1e-9)
