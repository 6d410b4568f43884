"""Pyro translations of posteriordb Stan models (stan-dev/posteriordb, ``models/stan``).

Each entry of :data:`POSTERIORS` maps a posteriordb posterior name to a function
``build(data) -> (model, args)``. The translations keep Stan's parametrisation and its
target density up to a constant:

* ``normal(mu, sigma)`` takes a standard deviation, as ``dist.Normal`` does;
* a ``<lower=0>`` parameter with a ``cauchy(0, s)`` / ``normal(0, s)`` statement is
  ``HalfCauchy(s)`` / ``HalfNormal(s)`` (the same density on the half line up to a constant);
* a parameter with no sampling statement has Stan's implicit flat prior on its support:
  ``ImproperUniform(support)`` (``real``, ``positive``, ``interval``, ``ordered``,
  ``positive_ordered``, ``simplex``), so that no extra density term appears;
* ``target += ...`` is ``pyro.factor``.

Transformed parameters that posteriordb stores in its reference draws (``theta`` of the
eight schools, ``f`` of the GP) are ``pyro.deterministic`` sites.
"""

from __future__ import annotations

import json
import math
import pathlib

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints

DATA_DIR = pathlib.Path(__file__).parent / "data"
DTYPE = torch.float64


def load_data(name: str) -> dict:
    """The stored data set ``name`` with lists as float64 tensors."""
    raw = json.loads((DATA_DIR / f"{name}.json").read_text())
    return {k: torch.tensor(v, dtype=DTYPE) if isinstance(v, list) else v for k, v in raw.items()}


def _flat(shape: tuple[int, ...] = (), support=constraints.real):
    """Stan's implicit (improper) flat prior on ``support`` with event shape ``shape``."""
    return dist.ImproperUniform(support, torch.Size(), torch.Size(shape))


def _zero(like: torch.Tensor) -> torch.Tensor:
    return torch.zeros((), dtype=like.dtype, device=like.device)


def _one(like: torch.Tensor) -> torch.Tensor:
    return torch.ones((), dtype=like.dtype, device=like.device)


def _linear_regression(y, columns, sigma_prior=None):
    """``y ~ normal(beta[1] + sum_k beta[k+1] * columns[k], sigma)`` with flat ``beta``."""
    design = torch.stack([torch.ones_like(y), *columns], -1)

    def model(design, y):
        beta = pyro.sample("beta", _flat((design.shape[-1],)))
        if sigma_prior is None:
            sigma = pyro.sample("sigma", _flat((), constraints.positive))
        else:
            sigma = pyro.sample("sigma", sigma_prior)
        mean = design @ beta
        with pyro.plate("n", y.shape[-1]):
            pyro.sample("y", dist.Normal(mean, sigma), obs=y)

    return model, (design, y)


# --- simple regressions --------------------------------------------------------------------


def kidscore_momiq(d):
    """kidiq-kidscore_momiq: ``sigma ~ cauchy(0, 2.5)``, flat ``beta``."""
    return _linear_regression(
        d["kid_score"], [d["mom_iq"]], dist.HalfCauchy(2.5 * _one(d["mom_iq"]))
    )


def kidscore_interaction(d):
    """kidiq-kidscore_interaction: mom_hs, mom_iq and their product."""
    hs, iq = d["mom_hs"], d["mom_iq"]
    return _linear_regression(d["kid_score"], [hs, iq, hs * iq], dist.HalfCauchy(2.5 * _one(iq)))


def kidscore_momhs(d):
    """kidiq-kidscore_momhs: mom_hs only."""
    return _linear_regression(
        d["kid_score"], [d["mom_hs"]], dist.HalfCauchy(2.5 * _one(d["mom_hs"]))
    )


def kidscore_momhsiq(d):
    """kidiq-kidscore_momhsiq: mom_hs and mom_iq."""
    return _linear_regression(
        d["kid_score"], [d["mom_hs"], d["mom_iq"]], dist.HalfCauchy(2.5 * _one(d["mom_iq"]))
    )


def mesquite(d):
    """mesquite-mesquite: weight on six raw predictors, flat priors."""
    cols = [d[k] for k in ("diam1", "diam2", "canopy_height", "total_height", "density", "group")]
    return _linear_regression(d["weight"], cols)


def logmesquite_logvolume(d):
    """mesquite-logmesquite_logvolume: log weight on log canopy volume, flat priors."""
    volume = torch.log(d["diam1"] * d["diam2"] * d["canopy_height"])
    return _linear_regression(torch.log(d["weight"]), [volume])


def logmesquite(d):
    """mesquite-logmesquite: log weight on the logs of five predictors and group."""
    names = ("diam1", "diam2", "canopy_height", "total_height", "density")
    cols = [torch.log(d[k]) for k in names] + [d["group"]]
    return _linear_regression(torch.log(d["weight"]), cols)


def logmesquite_logva(d):
    """mesquite-logmesquite_logva: log canopy volume, log canopy area and group."""
    cols = [
        torch.log(d["diam1"] * d["diam2"] * d["canopy_height"]),
        torch.log(d["diam1"] * d["diam2"]),
        d["group"],
    ]
    return _linear_regression(torch.log(d["weight"]), cols)


def logmesquite_logvash(d):
    """mesquite-logmesquite_logvash: log volume, area, shape, total height and group."""
    cols = [
        torch.log(d["diam1"] * d["diam2"] * d["canopy_height"]),
        torch.log(d["diam1"] * d["diam2"]),
        torch.log(d["diam1"] / d["diam2"]),
        torch.log(d["total_height"]),
        d["group"],
    ]
    return _linear_regression(torch.log(d["weight"]), cols)


def kilpisjarvi(d):
    """kilpisjarvi_mod-kilpisjarvi: informative normal priors on intercept and slope."""

    def model(x, y):
        alpha = pyro.sample("alpha", dist.Normal(d["pmualpha"] * _one(x), d["psalpha"]))
        beta = pyro.sample("beta", dist.Normal(d["pmubeta"] * _one(x), d["psbeta"]))
        sigma = pyro.sample("sigma", _flat((), constraints.positive))
        with pyro.plate("n", y.shape[-1]):
            pyro.sample("y", dist.Normal(alpha + beta * x, sigma), obs=y)

    return model, (d["x"], d["y"])


# --- more regressions: categorical dummies, standardised inputs, poor scaling / conditioning --


def logmesquite_logvas(d):
    """mesquite-logmesquite_logvas: log volume, area, shape, height, density and group."""
    cols = [
        torch.log(d["diam1"] * d["diam2"] * d["canopy_height"]),
        torch.log(d["diam1"] * d["diam2"]),
        torch.log(d["diam1"] / d["diam2"]),
        torch.log(d["total_height"]),
        torch.log(d["density"]),
        d["group"],
    ]
    return _linear_regression(torch.log(d["weight"]), cols)


def kidscore_mom_work(d):
    """kidiq_with_mom_work-kidscore_mom_work: dummies of a four-level factor, flat priors."""
    work = d["mom_work"]
    cols = [(work == level).to(DTYPE) for level in (2.0, 3.0, 4.0)]
    return _linear_regression(d["kid_score"], cols)


def _std(x, scale=1.0):
    """``(x - mean(x)) / (scale * sd(x))`` with Stan's ``sd`` (``N - 1`` denominator)."""
    return (x - x.mean()) / (scale * x.std(unbiased=True))


def kidscore_interaction_z(d):
    """kidiq_with_mom_work-kidscore_interaction_z: inputs centred and scaled by 2 sd."""
    hs, iq = _std(d["mom_hs"], 2.0), _std(d["mom_iq"], 2.0)
    return _linear_regression(d["kid_score"], [hs, iq, hs * iq])


def earn_height(d):
    """earnings-earn_height: earnings in dollars on uncentred height, flat priors. Poorly
    conditioned: intercept and slope have posterior correlation -0.998 (condition number of
    the posterior correlation matrix ~10^3) and sds of ~10^4 and ~10^2."""
    return _linear_regression(d["earn"], [d["height"]])


def logearn_interaction_z(d):
    """earnings-logearn_interaction_z: log earnings, standardised height, male, interaction."""
    z = _std(d["height"])
    return _linear_regression(torch.log(d["earn"]), [z, d["male"], z * d["male"]])


def nes(d):
    """nes2000-nes: party identification on ideology, race, age dummies, education, gender and
    income, flat priors."""
    age = d["age_discrete"]
    cols = [d["real_ideo"], d["race_adj"]]
    cols += [(age == level).to(DTYPE) for level in (2.0, 3.0, 4.0)]
    cols += [d["educ1"], d["gender"], d["income"]]
    return _linear_regression(d["partyid7"], cols)


def blr(d):
    """sblrc-blr / sblri-blr: ``beta ~ normal(0, 10)``, ``sigma ~ normal(0, 10)`` on
    ``sigma > 0``; simulated designs with correlated (``sblrc``, condition number 5) and
    independent (``sblri``, 1.5) columns."""

    def model(x, y):
        beta = pyro.sample("beta", dist.Normal(_zero(y), 10.0).expand([x.shape[-1]]).to_event(1))
        sigma = pyro.sample("sigma", dist.HalfNormal(10.0 * _one(y)))
        with pyro.plate("n", y.shape[-1]):
            pyro.sample("y", dist.Normal(x @ beta, sigma), obs=y)

    return model, (d["X"], d["y"])


# --- hierarchical --------------------------------------------------------------------------


def eight_schools_noncentered(d):
    """eight_schools-eight_schools_noncentered: ``theta = mu + tau * theta_trans``."""

    def model(y, sigma):
        j = y.shape[-1]
        theta_trans = pyro.sample("theta_trans", dist.Normal(_zero(y), 1.0).expand([j]).to_event(1))
        mu = pyro.sample("mu", dist.Normal(_zero(y), 5.0))
        tau = pyro.sample("tau", dist.HalfCauchy(5.0 * _one(y)))
        theta = pyro.deterministic("theta", theta_trans * tau + mu)
        with pyro.plate("j", j):
            pyro.sample("y", dist.Normal(theta, sigma), obs=y)

    return model, (d["y"], d["sigma"])


# --- time series ---------------------------------------------------------------------------


def ark(d):
    """arK-arK: AR(K) with ``alpha, beta ~ normal(0, 10)``, ``sigma ~ cauchy(0, 2.5)``."""
    k, y = int(d["K"]), d["y"]
    t = y.shape[-1]
    # lags[t - K, k] = y[t - k - 1] for t = K .. T-1 (0-based)
    lags = torch.stack([y[k - 1 - i : t - 1 - i] for i in range(k)], -1)

    def model(lags, y_obs):
        alpha = pyro.sample("alpha", dist.Normal(_zero(y_obs), 10.0))
        beta = pyro.sample(
            "beta", dist.Normal(_zero(y_obs), 10.0).expand([lags.shape[-1]]).to_event(1)
        )
        sigma = pyro.sample("sigma", dist.HalfCauchy(2.5 * _one(y_obs)))
        with pyro.plate("t", y_obs.shape[-1]):
            pyro.sample("y", dist.Normal(alpha + lags @ beta, sigma), obs=y_obs)

    return model, (lags, y[k:])


def _linear_recursion(coef, drive):
    """``x[t] = drive[t] + coef * x[t - 1]`` (``x[0] = drive[0]``), i.e.
    ``x[t] = sum_{s <= t} coef^(t - s) drive[s]``, by a log-depth scan (Hillis-Steele): after
    the step with shift ``2^k`` every ``x[t]`` holds the terms ``s > t - 2^(k+1)``. ``log2 T``
    batched steps instead of ``T`` sequential ones; the same sum up to rounding."""
    t = drive.shape[-1]
    x, power, shift = drive, coef.unsqueeze(-1), 1
    while shift < t:
        shifted = torch.cat([torch.zeros_like(x[..., :shift]), x[..., : t - shift]], -1)
        x = x + power * shifted
        power, shift = power * power, 2 * shift
    return x


def arma11(d):
    """arma-arma11: ARMA(1, 1) with the error recursion ``err[1] = y[1] - (mu + phi * mu)``,
    ``err[t] = y[t] - (mu + phi * y[t-1] + theta * err[t-1])`` (solved in closed form)."""

    def model(y):
        mu = pyro.sample("mu", dist.Normal(_zero(y), 10.0))
        phi = pyro.sample("phi", dist.Normal(_zero(y), 2.0))
        theta = pyro.sample("theta", dist.Normal(_zero(y), 2.0))
        sigma = pyro.sample("sigma", dist.HalfCauchy(2.5 * _one(y)))
        previous = torch.cat([mu.unsqueeze(-1), y[:-1]], -1)
        err = _linear_recursion(-theta, y - (mu + phi * previous))
        pyro.factor("err", dist.Normal(_zero(y), sigma).log_prob(err).sum(-1))

    return model, (d["y"],)


def garch11(d):
    """garch-garch11: flat priors, ``beta1`` in ``(0, 1 - alpha1)`` (a dependent bound);
    ``sigma[t]^2 = alpha0 + alpha1 (y[t-1] - mu)^2 + beta1 sigma[t-1]^2`` (closed form)."""

    def model(y, sigma1):
        mu = pyro.sample("mu", _flat())
        alpha0 = pyro.sample("alpha0", _flat((), constraints.positive))
        alpha1 = pyro.sample("alpha1", _flat((), constraints.unit_interval))
        beta1 = pyro.sample("beta1", _flat((), constraints.interval(_zero(y), 1 - alpha1)))
        first = (sigma1 * sigma1 * _one(y)).unsqueeze(-1)
        drive = torch.cat([first, alpha0 + alpha1 * (y[:-1] - mu) ** 2], -1)
        sigma = _linear_recursion(beta1, drive).sqrt()
        with pyro.plate("t", y.shape[-1]):
            pyro.sample("y", dist.Normal(mu, sigma), obs=y)

    return model, (d["y"], d["sigma1"])


def _log_matmul(a, b):
    """Log-semiring matrix product: ``out[i, k] = log sum_j exp(a[i, j] + b[j, k])``."""
    return torch.logsumexp(a.unsqueeze(-1) + b.unsqueeze(-3), -2)


def _log_chain_product(mats):
    """Ordered log-semiring product ``M_1 M_2 ... M_T`` of ``mats [T, K, K]`` by pairwise
    (tree) reduction: ``log2 T`` batched steps instead of ``T`` sequential ones. The forward
    recursion ``gamma_t = gamma_{t-1} M_t`` is associative, so this is the same sum."""
    while mats.shape[-3] > 1:
        n = mats.shape[-3]
        pairs = _log_matmul(mats[..., 0 : n - 1 : 2, :, :], mats[..., 1:n:2, :, :])
        mats = torch.cat([pairs, mats[..., n - 1 :, :, :]], -3) if n % 2 else pairs
    return mats[..., 0, :, :]


def _hmm_drive(emission, support):
    """The two bball_drive HMMs: ``dirichlet(alpha[k])`` transition rows, rates/means ``phi``
    (1/speed) and ``lambda`` (hoop distance) on ``support`` with ``target += normal_lpdf``
    priors ``N(0, 1)``, ``N(3, 1)``; forward algorithm, written as the associative log-semiring
    product of the per-step matrices ``log theta[j, k] + emit[t, k]``."""

    def model(u, v, alpha, *scales):
        theta1 = pyro.sample("theta1", dist.Dirichlet(alpha[0]))
        theta2 = pyro.sample("theta2", dist.Dirichlet(alpha[1]))
        phi = pyro.sample("phi", _flat((2,), support))
        lam = pyro.sample("lambda", _flat((2,), support))
        prior_loc = phi.new_tensor([0.0, 3.0])
        pyro.factor("phi_prior", dist.Normal(prior_loc, 1.0).log_prob(phi).sum(-1))
        pyro.factor("lambda_prior", dist.Normal(prior_loc, 1.0).log_prob(lam).sum(-1))
        log_theta = torch.log(torch.stack([theta1, theta2], -2))  # [j, k]
        emit = emission(u, v, phi, lam, *scales)  # [N, K]
        steps = log_theta.unsqueeze(-3) + emit[1:].unsqueeze(-2)  # [N - 1, j, k]
        gamma_n = torch.logsumexp(emit[0][:, None] + _log_chain_product(steps), -2)
        pyro.factor("y", torch.logsumexp(gamma_n, -1))

    return model


def hmm_drive_0(d):
    """bball_drive_event_0-hmm_drive_0: exponential emissions, ``positive_ordered`` rates."""

    def emission(u, v, phi, lam):
        return dist.Exponential(phi).log_prob(u[:, None]) + dist.Exponential(lam).log_prob(
            v[:, None]
        )

    model = _hmm_drive(emission, constraints.positive_ordered_vector)
    return model, (d["u"], d["v"], d["alpha"])


def hmm_drive_1(d):
    """bball_drive_event_1-hmm_drive_1: normal emissions (sd ``tau``, ``rho``), ``ordered``
    means."""

    def emission(u, v, phi, lam, tau, rho):
        return dist.Normal(phi, tau).log_prob(u[:, None]) + dist.Normal(lam, rho).log_prob(
            v[:, None]
        )

    model = _hmm_drive(emission, constraints.ordered_vector)
    return model, (d["u"], d["v"], d["alpha"], d["tau"], d["rho"])


LV_STEPS_PER_UNIT = 4


def _lotka_volterra_rk4(z0, theta, t_end, steps_per_unit=LV_STEPS_PER_UNIT):
    """Classical RK4 for ``du = (alpha - beta v) u``, ``dv = (-gamma + delta u) v`` from t = 0,
    states at t = 1, ..., t_end. Stan uses adaptive ``integrate_ode_rk45`` with rtol 1e-5 and
    atol 1e-3, whose error at the posterior mean is a relative 6e-4 against a 1e-11 solution;
    fixed step 1/4 is closer (5e-5 there, 3e-4 at parameters 3 sd away) at a fixed cost."""
    a, b, c, e = theta.unbind(-1)

    def rhs(z):
        u, v = z.unbind(-1)
        return torch.stack([(a - b * v) * u, (-c + e * u) * v], -1)

    h = 1.0 / steps_per_unit
    z, out = z0, []
    for _ in range(t_end):
        for _ in range(steps_per_unit):
            k1 = rhs(z)
            k2 = rhs(z + 0.5 * h * k1)
            k3 = rhs(z + 0.5 * h * k2)
            k4 = rhs(z + h * k3)
            z = z + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)
        out.append(z)
    return torch.stack(out, -2)  # [T, 2]


def lotka_volterra(d):
    """hudson_lynx_hare-lotka_volterra: ODE solution ``z`` at ``ts = 1..20``, lognormal
    measurement error; ``theta > 0`` with normal priors (truncation constant dropped, as in
    Stan), ``z_init, sigma > 0`` with lognormal priors."""
    t_end = int(d["ts"][-1].item())
    if not torch.equal(d["ts"], torch.arange(1, t_end + 1, dtype=DTYPE)):
        raise ValueError("lotka_volterra expects ts = 1, 2, ..., T")

    def model(y_init, y):
        theta = pyro.sample("theta", _flat((4,), constraints.positive))
        loc = theta.new_tensor([1.0, 0.05, 1.0, 0.05])
        scale = theta.new_tensor([0.5, 0.05, 0.5, 0.05])
        pyro.factor("theta_prior", dist.Normal(loc, scale).log_prob(theta).sum(-1))
        z_init = pyro.sample(
            "z_init", dist.LogNormal(math.log(10.0) * _one(y), 1.0).expand([2]).to_event(1)
        )
        sigma = pyro.sample("sigma", dist.LogNormal(-1.0 * _one(y), 1.0).expand([2]).to_event(1))
        z = _lotka_volterra_rk4(z_init, theta, y.shape[-2])
        pyro.sample("y_init", dist.LogNormal(torch.log(z_init), sigma).to_event(1), obs=y_init)
        pyro.sample("y", dist.LogNormal(torch.log(z), sigma).to_event(2), obs=y)

    return model, (d["y_init"], d["y"])


# --- GP / Cholesky ---------------------------------------------------------------------------


def _exp_quad(x, alpha, rho):
    diff = x[:, None] - x[None, :]
    return alpha**2 * torch.exp(-0.5 * diff**2 / rho**2)


def gp_pois_regr(d):
    """gp_pois_regr-gp_pois_regr: latent GP ``f = chol(K + 1e-10 I) f_tilde``, Poisson log link."""

    def model(x, k):
        n = x.shape[-1]
        rho = pyro.sample("rho", dist.Gamma(25.0 * _one(x), 4.0))
        alpha = pyro.sample("alpha", dist.HalfNormal(2.0 * _one(x)))
        f_tilde = pyro.sample("f_tilde", dist.Normal(_zero(x), 1.0).expand([n]).to_event(1))
        cov = _exp_quad(x, alpha, rho) + 1e-10 * torch.eye(n, dtype=x.dtype, device=x.device)
        f = pyro.deterministic("f", torch.linalg.cholesky(cov) @ f_tilde)
        with pyro.plate("n", n):
            pyro.sample("k", dist.Poisson(torch.exp(f)), obs=k)

    return model, (d["x"], d["k"])


def gp_regr(d):
    """gp_pois_regr-gp_regr: marginal GP, ``cov = K + sigma I`` (sigma, not sigma^2, as in Stan)."""

    def model(x, y):
        n = x.shape[-1]
        rho = pyro.sample("rho", dist.Gamma(25.0 * _one(x), 4.0))
        alpha = pyro.sample("alpha", dist.HalfNormal(2.0 * _one(x)))
        sigma = pyro.sample("sigma", dist.HalfNormal(_one(x)))
        cov = _exp_quad(x, alpha, rho) + sigma * torch.eye(n, dtype=x.dtype, device=x.device)
        chol = torch.linalg.cholesky(cov)
        pyro.sample("y", dist.MultivariateNormal(torch.zeros_like(x), scale_tril=chol), obs=y)

    return model, (d["x"], d["y"])


# --- mixture / HMM (target +=) ---------------------------------------------------------------


def low_dim_gauss_mix(d):
    """low_dim_gauss_mix: two-component mixture, ``ordered[2] mu``, ``target += log_mix``."""

    def model(y):
        mu = pyro.sample("mu", _flat((2,), constraints.ordered_vector))
        pyro.factor("mu_prior", dist.Normal(_zero(y), 2.0).log_prob(mu).sum(-1))
        sigma = pyro.sample("sigma", dist.HalfNormal(2.0 * _one(y)).expand([2]).to_event(1))
        theta = pyro.sample("theta", dist.Beta(5.0 * _one(y), 5.0))
        comp = dist.Normal(mu, sigma).log_prob(y[:, None])  # [N, 2]
        weights = torch.stack([torch.log(theta), torch.log1p(-theta)], -1)
        pyro.factor("y", torch.logsumexp(comp + weights, -1).sum(-1))

    return model, (d["y"],)


def hmm_example(d):
    """hmm_example: two-state Gaussian HMM marginalised by the forward algorithm (as a
    log-semiring product, like the bball HMMs)."""

    def model(y):
        theta1 = pyro.sample("theta1", _flat((2,), constraints.simplex))
        theta2 = pyro.sample("theta2", _flat((2,), constraints.simplex))
        mu = pyro.sample("mu", _flat((2,), constraints.positive_ordered_vector))
        pyro.factor("mu_prior", dist.Normal(mu.new_tensor([3.0, 10.0]), 1.0).log_prob(mu).sum(-1))
        log_trans = torch.log(torch.stack([theta1, theta2], -2))  # [j, k]
        emit = dist.Normal(mu, 1.0).log_prob(y[:, None])  # [N, K]
        steps = log_trans.unsqueeze(-3) + emit[1:].unsqueeze(-2)  # [N - 1, j, k]
        gamma_n = torch.logsumexp(emit[0][:, None] + _log_chain_product(steps), -2)
        pyro.factor("y", torch.logsumexp(gamma_n, -1))

    return model, (d["y"],)


POSTERIORS = {
    "kidiq-kidscore_momiq": kidscore_momiq,
    "kidiq-kidscore_interaction": kidscore_interaction,
    "kidiq-kidscore_momhs": kidscore_momhs,
    "kidiq-kidscore_momhsiq": kidscore_momhsiq,
    "mesquite-mesquite": mesquite,
    "mesquite-logmesquite_logvolume": logmesquite_logvolume,
    "mesquite-logmesquite_logvash": logmesquite_logvash,
    "mesquite-logmesquite": logmesquite,
    "mesquite-logmesquite_logva": logmesquite_logva,
    "kilpisjarvi_mod-kilpisjarvi": kilpisjarvi,
    "eight_schools-eight_schools_noncentered": eight_schools_noncentered,
    "arK-arK": ark,
    "arma-arma11": arma11,
    "garch-garch11": garch11,
    "gp_pois_regr-gp_pois_regr": gp_pois_regr,
    "gp_pois_regr-gp_regr": gp_regr,
    "low_dim_gauss_mix-low_dim_gauss_mix": low_dim_gauss_mix,
    "hmm_example-hmm_example": hmm_example,
    "mesquite-logmesquite_logvas": logmesquite_logvas,
    "kidiq_with_mom_work-kidscore_mom_work": kidscore_mom_work,
    "kidiq_with_mom_work-kidscore_interaction_z": kidscore_interaction_z,
    "earnings-earn_height": earn_height,
    "earnings-logearn_interaction_z": logearn_interaction_z,
    "nes2000-nes": nes,
    "sblrc-blr": blr,
    "sblri-blr": blr,
    "bball_drive_event_0-hmm_drive_0": hmm_drive_0,
    "bball_drive_event_1-hmm_drive_1": hmm_drive_1,
    "hudson_lynx_hare-lotka_volterra": lotka_volterra,
}

__all__ = ["POSTERIORS", "load_data"]
