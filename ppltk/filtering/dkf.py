r"""The discriminative Kalman filter (Burkhart et al., Neural Computation 32(5), 2020).

State model :math:`z_0 \sim N(0, S)`, :math:`z_t = A z_{t-1} + \eta_t`,
:math:`\eta_t \sim N(0, \Gamma)` with :math:`S = A S A^\top + \Gamma`. Instead of a generative
:math:`p(x \mid z)`, a regression gives :math:`p(z \mid x) \approx N(f(x), Q(x))`, and Bayes'
rule turns it into a likelihood :math:`p(x \mid z) \propto N(z; f(x), Q(x)) / N(z; 0, S)`.
The filter is then Gaussian in closed form:

.. math::
    \nu = A\mu_{t-1},\quad M = A\Sigma_{t-1}A^\top + \Gamma, \qquad
    \Sigma_t = (M^{-1} + Q(x_t)^{-1} - S^{-1})^{-1},\quad
    \mu_t = \Sigma_t (M^{-1}\nu + Q(x_t)^{-1} f(x_t)).

Equivalently a Kalman update with identity observation matrix, pseudo-observation
:math:`y = R\,Q^{-1} f(x)` and noise :math:`R = (Q^{-1} - S^{-1})^{-1}` (see
:func:`pseudo_observation`). With :math:`f` linear and :math:`Q` constant (the exact posterior
of a linear-Gaussian model) it is exactly the Kalman filter.
"""

from __future__ import annotations

import warnings

import torch

from ppltk.errors import (
    ArgumentError,
    NotPositiveDefiniteError,
    NumericalFallbackWarning,
)
from ppltk.filtering._checks import (
    as_float_tensor,
    check_covariance,
    check_finite_output,
    check_fitted,
    check_matrix,
    check_observations,
    check_row,
    check_training_pair,
    named_linalg_errors,
)
from ppltk.filtering.covariance import ConstantCovariance, make_covariance
from ppltk.filtering.fit import fit_state_dynamics, stationary_covariance
from ppltk.filtering.regressors import make_regressor
from ppltk.filtering.selection import AUTO_CANDIDATES, select_regressor
from ppltk.gaussian import (
    GaussianState,
    expand_state,
    mask_missing,
    matvec,
    predict_linear,
    symmetrize,
)

__all__ = ["DiscriminativeKalmanFilter", "NONPD_FIXES", "pseudo_observation", "dkf_update"]

NONPD_FIXES = ("drop_prior", "inflate", "clip", "raise")
_DKF_MATRICES = "Q(x), prediction and posterior covariances (is the fitted Q(x) singular?)"


def _spd_inverse(matrix: torch.Tensor) -> torch.Tensor:
    return symmetrize(torch.cholesky_inverse(torch.linalg.cholesky(matrix)))


def pseudo_observation(f: torch.Tensor, Q: torch.Tensor, S: torch.Tensor):
    r"""The DKF measurement as a Kalman observation of :math:`z` with :math:`H = I`.

    .. math:: R = (Q^{-1} - S^{-1})^{-1}, \qquad y = R\,Q^{-1} f.

    Returns ``(y [..., d], R [..., d, d])``; valid only where :math:`Q^{-1} - S^{-1}` is PD.
    """
    Q_inv = _spd_inverse(Q)
    R = _spd_inverse(Q_inv - _spd_inverse(S))
    return matvec(R @ Q_inv, f), R


def _clip_covariance(Q: torch.Tensor, L_S: torch.Tensor, margin: float) -> torch.Tensor:
    r"""Clip the eigenvalues of :math:`L_S^{-1} Q L_S^{-\top}` at :math:`1/(1+\text{margin})`.

    Afterwards :math:`Q^{-1} - S^{-1} = L_S^{-\top}(V \Lambda^{-1} V^\top - I)L_S^{-1}` is PD.
    """
    half = torch.linalg.solve_triangular(L_S, Q, upper=False)
    whitened = symmetrize(torch.linalg.solve_triangular(L_S, half.mT, upper=False))
    eigvals, V = torch.linalg.eigh(whitened)
    clipped = eigvals.clamp(max=1.0 / (1.0 + margin))
    inner = V @ torch.diag_embed(clipped) @ V.mT
    return symmetrize(L_S @ inner @ L_S.mT)


def dkf_update(
    prior: GaussianState,
    f: torch.Tensor,
    Q: torch.Tensor,
    S: torch.Tensor,
    *,
    fix: str = "drop_prior",
    robust: bool = False,
    clip_margin: float = 0.05,
    S_inv: torch.Tensor | None = None,
    outlier_threshold: float | None = None,
    return_weight: bool = False,
):
    r"""One DKF measurement update, batched; returns the posterior and where the fix fired.

    The measurement precision :math:`P = Q^{-1} - S^{-1}` and information
    :math:`h = Q^{-1} f` enter as :math:`\Sigma = (M^{-1} + P)^{-1}`,
    :math:`\mu = \Sigma(M^{-1}\nu + h)` (Cholesky factorisations throughout). Where
    :math:`P` is not positive definite ``fix`` decides: ``"drop_prior"`` uses
    :math:`P = Q^{-1}`; ``"inflate"`` replaces :math:`Q` by :math:`(Q^{-1} + S^{-1})^{-1}`
    (precision inflated by :math:`S^{-1}`, so :math:`P = Q^{-1}`,
    :math:`h = (Q^{-1} + S^{-1})f`); ``"clip"`` clips :math:`Q` relative to :math:`S`
    (:func:`_clip_covariance`); ``"raise"`` raises
    :class:`~ppltk.errors.NotPositiveDefiniteError`. ``robust=True`` always drops
    :math:`-S^{-1}` (the robust DKF) and never counts a fix. ``S_inv`` may be passed
    precomputed.

    ``outlier_threshold`` :math:`c` down-weights improbable measurements (a Huber-type
    robust Kalman update): with the pseudo-observation :math:`y = P^{-1}h`, its noise
    :math:`R = P^{-1}` and the innovation :math:`e = y - \nu`,
    :math:`m^2 = e^\top (M + R)^{-1} e`; where :math:`m^2 > c` the measurement precision
    and information are scaled by :math:`w = c/m^2` (equivalently :math:`Q` and :math:`R`
    are inflated by :math:`m^2/c`), so a single wild :math:`f(x)` moves the mean by a
    bounded amount. Under the model :math:`m^2 \sim \chi^2_d`, so :math:`c` is a
    :math:`\chi^2_d` quantile. ``return_weight=True`` also returns :math:`w` ``[...]``.
    """
    L_Q, bad_Q = torch.linalg.cholesky_ex(Q)
    Q_inv = torch.cholesky_inverse(L_Q)
    h = matvec(Q_inv, f)
    if robust:
        P, fired = Q_inv, torch.zeros(f.shape[:-1], dtype=torch.bool, device=f.device)
    else:
        S_inv = _spd_inverse(S) if S_inv is None else S_inv
        P = Q_inv - S_inv
        fired = torch.linalg.cholesky_ex(P).info != 0
        # drop_prior / inflate are cheap: apply them through `where`, without a sync
        if fix in ("drop_prior", "inflate") or bool(fired.any()):
            P, h = _apply_fix(fired, P, h, f, Q, Q_inv, S, S_inv, fix, clip_margin)
    L_M, bad_M = torch.linalg.cholesky_ex(prior.cov)
    M_inv = torch.cholesky_inverse(L_M)
    weight = None
    if outlier_threshold is not None:
        P, h, weight = _gate(P, h, prior, outlier_threshold)
    L_post, bad_post = torch.linalg.cholesky_ex(M_inv + P)
    if bool((bad_Q | bad_M | bad_post).any()):
        raise NotPositiveDefiniteError(
            f"Expected positive definite Q(x), prediction and posterior covariances, but "
            f"found {int((bad_Q != 0).sum())}, {int((bad_M != 0).sum())} and "
            f"{int((bad_post != 0).sum())} that are not"
        )
    info = matvec(M_inv, prior.mean) + h
    mean = torch.cholesky_solve(info.unsqueeze(-1), L_post).squeeze(-1)
    post = GaussianState(mean, torch.cholesky_inverse(L_post))
    if return_weight:
        if weight is None:
            weight = torch.ones(f.shape[:-1], dtype=f.dtype, device=f.device)
        return post, fired, weight
    return post, fired


def _gate(P, h, prior: GaussianState, threshold: float):
    """Scale ``P`` and ``h`` by ``w = min(1, threshold / m^2)`` (see :func:`dkf_update`)."""
    L_P, bad = torch.linalg.cholesky_ex(P)
    if bool((bad != 0).any()):
        raise NotPositiveDefiniteError(
            "Expected a positive definite measurement precision Q^-1 - S^-1 for the outlier "
            "gate, but found it indefinite (set `nonpd_fix` to repair it)"
        )
    R = torch.cholesky_inverse(L_P)
    y = torch.cholesky_solve(h.unsqueeze(-1), L_P).squeeze(-1)
    e = y - prior.mean
    L_e = torch.linalg.cholesky(symmetrize(prior.cov + R))
    white = torch.linalg.solve_triangular(L_e, e.unsqueeze(-1), upper=False).squeeze(-1)
    m2 = white.pow(2).sum(-1)
    weight = (threshold / m2.clamp_min(1e-300)).clamp(max=1.0)
    return P * weight[..., None, None], h * weight.unsqueeze(-1), weight


def _apply_fix(fired, P, h, f, Q, Q_inv, S, S_inv, fix, clip_margin):
    if fix == "raise":
        raise NotPositiveDefiniteError(
            f"Expected Q(x)^-1 - S^-1 positive definite, but found it indefinite in "
            f"{int(fired.sum())} of {fired.numel()} updates (set `nonpd_fix`)"
        )
    if fix == "drop_prior":
        P_fix, h_fix = Q_inv.expand_as(P), h
    elif fix == "inflate":
        P_fix, h_fix = Q_inv.expand_as(P), matvec(Q_inv + S_inv, f)
    else:  # clip
        Q_clip = _clip_covariance(Q, torch.linalg.cholesky(S), clip_margin)
        Q_clip_inv = _spd_inverse(Q_clip)
        P_fix, h_fix = Q_clip_inv - S_inv, matvec(Q_clip_inv, f)
    P = torch.where(fired[..., None, None], P_fix, P)
    return P, torch.where(fired.unsqueeze(-1), h_fix, h)


class DiscriminativeKalmanFilter:
    r"""Discriminative Kalman filter with a pluggable regressor :math:`f` and covariance :math:`Q`.

    ``fit(X, Z)`` learns :math:`A, \Gamma` by least squares on consecutive states, the
    stationary :math:`S`, fits ``regressor`` on the first ``1 - holdout_fraction`` of the
    rows and ``covariance`` on the residuals of the held-out last rows (optionally refitting
    ``regressor`` on all rows afterwards). ``filter(X)`` returns means ``[..., T, d]`` and
    covariances ``[..., T, d, d]`` for a batch of streams; ``step(x_t)`` is the online form
    with O(1) memory. Rows of ``X`` with NaN skip the update.

    Parameters
    ----------
    regressor
        ``"auto"`` (default), ``"nw"``, ``"mlp"``, ``"gp"``, ``"linear"`` or an object with
        ``fit``/``predict``. ``"auto"`` fits every name in ``candidates`` on the training
        rows and keeps the one with the highest held-out predictive log-likelihood of
        :math:`N(z; f(x), Q(x))` on the ``holdout_fraction`` rows (one-standard-error rule,
        simplest first; :func:`~ppltk.filtering.selection.select_regressor`). The choice is
        in ``regressor_name_`` (and the repr), the scores in ``selection_``.
    candidates
        What ``"auto"`` chooses from (default ``("linear", "nw", "mlp", "gp")``).
    seed
        Seed of the candidates ``"auto"`` builds.
    covariance
        ``"constant"`` (default), ``"kernel"`` or an object with ``fit``/``predict``.
    nonpd_fix
        What to do where :math:`Q^{-1} - S^{-1}` is not PD: ``"drop_prior"``, ``"inflate"``,
        ``"clip"`` or ``"raise"`` (see :func:`dkf_update`). Fires are counted in
        ``nonpd_count_`` (cumulative) and ``last_nonpd_count_`` (last ``filter`` call).
    robust
        Always drop :math:`-S^{-1}` (the robust DKF of Burkhart et al., 2020, §5: the
        measurement precision is :math:`Q^{-1}` and never indefinite).
    outlier_prob
        Gate heavy-tailed outliers: down-weight a measurement whose pseudo-observation is
        further from the prediction than the :math:`1 - p` quantile of :math:`\chi^2_d`
        (:math:`p` = ``outlier_prob``; ``outlier_threshold`` of :func:`dkf_update`).
        Gated updates are counted in ``last_outlier_count_``. ``None`` (default): no gate.
    clip_inputs
        Winsorise every input feature to its ``[q, 1 - q]`` training quantiles (``q`` =
        ``clip_inputs``, e.g. ``1e-3``) before the regressor, in ``fit`` and afterwards, so a
        single channel with a wild value cannot drag :math:`f(x)` far outside the training
        range. ``None`` (default): no clipping.
    warn
        Emit a :class:`~ppltk.errors.NumericalFallbackWarning` when ``filter`` applied a fix.
    """

    def __init__(
        self,
        regressor="auto",
        covariance="constant",
        *,
        candidates: tuple = AUTO_CANDIDATES,
        seed: int | torch.Generator | None = 0,
        nonpd_fix: str = "drop_prior",
        robust: bool = False,
        holdout_fraction: float = 0.2,
        refit: bool = False,
        clip_margin: float = 0.05,
        outlier_prob: float | None = None,
        clip_inputs: float | None = None,
        warn: bool = True,
    ) -> None:
        if outlier_prob is not None and not 0.0 < outlier_prob < 1.0:
            raise ArgumentError(
                f"Expected `outlier_prob` in (0, 1) or None, but found {outlier_prob!r}"
            )
        if clip_inputs is not None and not 0.0 <= clip_inputs < 0.5:
            raise ArgumentError(
                f"Expected `clip_inputs` in [0, 0.5) or None, but found {clip_inputs!r}"
            )
        self.outlier_prob, self.clip_inputs = outlier_prob, clip_inputs
        self.outlier_threshold_, self.input_bounds_ = None, None
        self.last_outlier_count_ = 0
        self._gated = None
        if nonpd_fix not in NONPD_FIXES:
            raise ArgumentError(f"Expected `nonpd_fix` in {NONPD_FIXES}, but found {nonpd_fix!r}")
        if not 0.0 < holdout_fraction < 1.0:
            raise ArgumentError(
                f"Expected `holdout_fraction` in (0, 1), but found {holdout_fraction!r}"
            )
        self.auto = isinstance(regressor, str) and regressor == "auto"
        if self.auto:
            self.regressor, self.regressor_name_ = None, None
        elif isinstance(regressor, str):
            self.regressor, self.regressor_name_ = make_regressor(regressor), regressor
        else:
            self.regressor, self.regressor_name_ = regressor, type(regressor).__name__
        self.candidates, self.seed, self.selection_ = tuple(candidates), seed, None
        self.covariance = make_covariance(covariance) if isinstance(covariance, str) else covariance
        self.nonpd_fix, self.robust, self.warn = nonpd_fix, bool(robust), bool(warn)
        self.holdout_fraction, self.refit, self.clip_margin = holdout_fraction, refit, clip_margin
        self.A = None
        self._fires = torch.zeros((), dtype=torch.long)
        self.last_nonpd_count_ = 0
        self.state_ = None

    def __repr__(self) -> str:
        name = self.regressor_name_ if self.regressor_name_ is not None else "auto (unfitted)"
        if self.auto and self.regressor_name_ is not None:
            name = f"auto -> {name}"
        extra = ", robust=True" if self.robust else ""
        if self.outlier_prob is not None:
            extra += f", outlier_prob={self.outlier_prob}"
        if self.clip_inputs is not None:
            extra += f", clip_inputs={self.clip_inputs}"
        return (
            f"DiscriminativeKalmanFilter(regressor={name!r}, "
            f"covariance={type(self.covariance).__name__}{extra})"
        )

    @property
    def nonpd_count_(self) -> int:
        """How often the non-PD fix fired since construction (``filter`` and ``step``)."""
        return int(self._fires)

    @classmethod
    def from_parts(
        cls, A, Gamma, regressor, covariance, S=None, init_mean=None, init_cov=None, **options
    ) -> DiscriminativeKalmanFilter:
        """Assemble a DKF from known dynamics and an already fitted ``regressor``/``covariance``."""
        dkf = cls(regressor, covariance, **options)
        A = as_float_tensor(A, "A")
        d = A.shape[-1]
        Gamma = check_covariance(
            check_matrix(as_float_tensor(Gamma, "Gamma", A), "Gamma", d, d), "Gamma"
        )
        S = stationary_covariance(A, Gamma) if S is None else as_float_tensor(S, "S", A)
        S = check_covariance(check_matrix(S, "S", d, d), "S")
        with named_linalg_errors("`S` (the stationary state covariance)"):
            dkf._set_dynamics(check_matrix(A, "A", d, d), Gamma, S)
        if init_mean is not None:
            dkf.init_mean = as_float_tensor(init_mean, "init_mean", A)
        if init_cov is not None:
            init_cov = check_matrix(as_float_tensor(init_cov, "init_cov", A), "init_cov", d, d)
            dkf.init_cov = check_covariance(init_cov, "init_cov")
        return dkf

    def _set_dynamics(self, A, Gamma, S) -> None:
        self.A, self.Gamma, self.S = A, Gamma, S
        if self.outlier_prob is not None:
            from scipy.stats import chi2

            self.outlier_threshold_ = float(chi2.ppf(1.0 - self.outlier_prob, A.shape[-1]))
        self.S_inv = _spd_inverse(S)
        self._fires = self._fires.to(A.device)
        self.init_mean = torch.zeros(A.shape[-1], dtype=A.dtype, device=A.device)
        self.init_cov = S

    def fit(self, X, Z) -> DiscriminativeKalmanFilter:
        """Learn dynamics, :math:`f` and :math:`Q` from observations ``X [T, n]``, states
        ``Z [T, d]``."""
        X, Z = check_training_pair(X, Z)
        if self.clip_inputs is not None:
            q = torch.tensor([self.clip_inputs, 1.0 - self.clip_inputs], dtype=X.dtype)
            bounds = torch.quantile(X.cpu(), q, dim=0).to(X.device)
            self.input_bounds_ = (bounds[0], bounds[1])
            X = self._clip(X)
        with named_linalg_errors("the fitted stationary state covariance S"):
            self._set_dynamics(*fit_state_dynamics(Z))
        split = X.shape[0] - max(2, round(self.holdout_fraction * X.shape[0]))
        if split < 2:
            raise ArgumentError(f"Expected enough rows to hold out, but found {X.shape[0]}")
        with named_linalg_errors("matrices while fitting the regressor and Q(x)"):
            if self.auto:
                name, self.regressor, residuals, self.selection_ = select_regressor(
                    self.candidates,
                    X[:split],
                    Z[:split],
                    X[split:],
                    Z[split:],
                    self.covariance,
                    seed=self.seed,
                )
                self.regressor_name_ = name
            else:
                self.regressor.fit(X[:split], Z[:split])
                residuals = Z[split:] - self.regressor.predict(X[split:])
            self.covariance.fit(X[split:], residuals)
            if self.refit:
                self.regressor.fit(X, Z)
        self.num_features_ = X.shape[1]
        return self

    def predict_measurement(self, X) -> tuple[torch.Tensor, torch.Tensor]:
        """:math:`f(x)` ``[..., d]`` and :math:`Q(x)` ``[..., d, d]`` (the unfiltered decoder)."""
        check_fitted(self, "A")
        X = self._clip(as_float_tensor(X, "X", self.A))
        f, Q = self.regressor.predict(X), self.covariance.predict(X)
        if f.dtype != self.A.dtype or f.device != self.A.device:
            f = f.to(self.A)
        if Q.dtype != self.A.dtype or Q.device != self.A.device:
            Q = Q.to(self.A)
        return f, Q

    def _clip(self, X: torch.Tensor) -> torch.Tensor:
        """Winsorise ``X`` to the training bounds (NaN stays NaN); identity without them."""
        if self.input_bounds_ is None:
            return X
        low, high = (b.to(X) for b in self.input_bounds_)
        return torch.minimum(torch.maximum(X, low), high)  # both propagate NaN

    def update(
        self, prior: GaussianState, f, Q, observed=None
    ) -> tuple[GaussianState, torch.Tensor]:
        """Measurement update of ``prior`` with ``f [..., d]``, ``Q [..., d, d]``.

        Streams with ``observed == False`` (default: where ``f`` or ``Q`` is not finite, as
        for a NaN observation row) keep the prior. Returns the belief and where a fix fired.
        """
        if observed is None:
            observed = torch.isfinite(f).all(-1) & torch.isfinite(Q).flatten(-2).all(-1)
        options = {"fix": self.nonpd_fix, "robust": self.robust, "clip_margin": self.clip_margin}
        options["outlier_threshold"] = self.outlier_threshold_
        options["return_weight"] = True
        all_observed = bool(observed.all())
        if not all_observed:
            # placeholders where unobserved: f = 0, Q = S/2 keeps Q^-1 - S^-1 = S^-1 PD
            f = torch.where(observed.unsqueeze(-1), f, torch.zeros_like(f))
            Q = torch.where(observed[..., None, None], Q, 0.5 * self.S.expand_as(Q))
        post, fired, weight = dkf_update(prior, f, Q, self.S, S_inv=self.S_inv, **options)
        if self.outlier_threshold_ is not None:
            gated = ((weight < 1.0) & observed).sum()
            self._gated = gated if self._gated is None else self._gated + gated
        if all_observed:
            return post, fired
        return mask_missing(observed, post, prior, fired)  # fired & observed

    def filter(self, X) -> tuple[torch.Tensor, torch.Tensor]:
        """Filter streams ``X [..., T, n]``: means ``[..., T, d]``, covs ``[..., T, d, d]``.

        Rows of ``X`` with NaN skip the update.
        """
        check_fitted(self, "A")
        X = as_float_tensor(X, "X", self.A)
        X = check_observations(X, "X", getattr(self, "num_features_", None))
        observed = ~torch.isnan(X).any(-1)
        f, Q = self.predict_measurement(torch.nan_to_num(X, nan=0.0))
        if bool(observed.all()):
            observed = observed.new_ones(()).expand(X.shape[-2])
        state = expand_state(self.init_mean, self.init_cov, X.shape[:-2])
        means, covs, fires = [], [], torch.zeros((), dtype=torch.long, device=X.device)
        self._gated = None
        with named_linalg_errors(_DKF_MATRICES):
            for t in range(X.shape[-2]):
                prior = predict_linear(state, self.A, self.Gamma)
                state, fired = self.update(prior, f[..., t, :], Q[..., t, :, :], observed[..., t])
                means.append(state.mean)
                covs.append(state.cov)
                fires = fires + fired.sum()
        self._count(int(fires))
        self.last_outlier_count_ = 0 if self._gated is None else int(self._gated)
        means, covs = torch.stack(means, -2), torch.stack(covs, -3)
        return check_finite_output(means, "filtered means and covariances", covs), covs

    def _count(self, fires: int) -> None:
        self.last_nonpd_count_ = fires
        self._fires = self._fires + fires
        if fires and self.warn:
            warnings.warn(
                f"the DKF non-PD fix {self.nonpd_fix!r} fired in {fires} updates",
                NumericalFallbackWarning,
                stacklevel=3,
            )

    def reset(self, batch_shape: tuple[int, ...] = ()) -> None:
        """Restart the online filter at :math:`z_0 \\sim N(m_0, P_0)` for ``batch_shape``."""
        check_fitted(self, "A")
        self.state_ = expand_state(self.init_mean, self.init_cov, batch_shape)

    def step(self, x) -> tuple[torch.Tensor, torch.Tensor]:
        """Online update with one observation ``x [..., n]``; returns the new mean and covariance.

        Keeps only the current belief (O(1) memory); fires add to ``nonpd_count_``.
        """
        check_fitted(self, "A")
        x = check_row(as_float_tensor(x, "x", self.A), "x", getattr(self, "num_features_", None))
        if self.state_ is None:
            self.reset(x.shape[:-1])
        prior = predict_linear(self.state_, self.A, self.Gamma)
        constant = self._constant_measurement()
        if constant is not None:
            f = self.regressor.predict(self._clip(x)).to(self.A)
            if bool(torch.isfinite(f).all()):
                return self._constant_step(prior, f, *constant)
        f, Q = self.predict_measurement(x)  # NaN in x gives non-finite f: no update
        with named_linalg_errors(_DKF_MATRICES):
            state, fired = self.update(prior, f, Q)
        check_finite_output(state.mean, "filtered means and covariances", state.cov)
        self.state_ = state
        self._fires = self._fires + fired.sum()
        return self.state_

    def _constant_measurement(self):
        r"""With a constant :math:`Q` (and no outlier gate) the measurement is a fixed linear
        Gaussian observation of :math:`z` with :math:`H = I`: noise :math:`R = P^{-1}` and
        pseudo-observation :math:`y = G f(x)`, :math:`G = R\,Q^{-1}` (or the repaired
        precision and information map where :math:`Q^{-1} - S^{-1}` is not PD). Returns
        ``(R, G, fired)``, cached per fitted :math:`Q`, or ``None`` (general path)."""
        if not isinstance(self.covariance, ConstantCovariance) or self.outlier_threshold_:
            return None
        Q = self.covariance.cov
        if Q is None or Q.dim() != 2:
            return None
        cache = getattr(self, "_constant_cache", None)
        if cache is not None and cache[0] is Q and cache[1] is self.S:
            return cache[2]
        Q = Q.to(self.A)
        Q_inv = _spd_inverse(Q)
        fired = False
        if self.robust:
            P, info_map = Q_inv, Q_inv
        else:
            P, info_map = Q_inv - self.S_inv, Q_inv
            fired = bool(torch.linalg.cholesky_ex(P).info != 0)
            if fired and self.nonpd_fix == "raise":
                return None  # the general path raises the named error
            if fired and self.nonpd_fix == "drop_prior":
                P = Q_inv
            elif fired and self.nonpd_fix == "inflate":
                P, info_map = Q_inv, Q_inv + self.S_inv
            elif fired:  # clip
                Q_clip_inv = _spd_inverse(
                    _clip_covariance(Q, torch.linalg.cholesky(self.S), self.clip_margin)
                )
                P, info_map = Q_clip_inv - self.S_inv, Q_clip_inv
        R = _spd_inverse(P)
        result = (R, (R @ info_map).contiguous(), fired)
        self._constant_cache = (self.covariance.cov, self.S, result)
        return result

    def _constant_step(self, prior: GaussianState, f, R, G, fired) -> GaussianState:
        r"""The online update in Kalman form with :math:`H = I` (see
        :meth:`_constant_measurement`): :math:`K = M(M + R)^{-1}`,
        :math:`\mu = \nu + K(Gf - \nu)`, :math:`\Sigma = (I - K)M`."""
        M = prior.cov
        with named_linalg_errors(_DKF_MATRICES):
            L = torch.linalg.cholesky(symmetrize(M + R))
        K = torch.cholesky_solve(M, L).mT  # M (M + R)^-1, M and M + R symmetric
        y = matvec(G, f)
        mean = prior.mean + matvec(K, y - prior.mean)
        cov = symmetrize(M - K @ M)
        check_finite_output(mean, "filtered means and covariances", cov)
        self.state_ = GaussianState(mean, cov)
        if fired:
            self._fires = self._fires + max(1, mean[..., 0].numel())
        return self.state_
