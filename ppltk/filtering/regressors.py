r"""Regressors for the DKF measurement mean :math:`f(x) \approx E[z \mid x]`.

Every regressor has ``fit(X, Y) -> self`` with ``X [N, n]``, ``Y [N, k]`` and
``predict(X [..., n]) -> [..., k]``; ``predict`` is batched over any leading dimensions.
Inputs are standardised with the training mean and standard deviation.
"""

from __future__ import annotations

import math

import torch

from ppltk._progress import progress_bar
from ppltk._rng import make_generator
from ppltk.errors import ArgumentError, ShapeError
from ppltk.filtering._checks import (
    as_float_tensor,
    check_fitted,
    check_training_pair,
    named_linalg_errors,
)

__all__ = [
    "LinearRegressor",
    "NadarayaWatsonRegressor",
    "MLPRegressor",
    "GPRegressor",
    "make_regressor",
]


class _Standardizer:
    """Affine map to zero mean, unit standard deviation per column (constant columns kept)."""

    def __init__(self, data: torch.Tensor) -> None:
        self.mean = data.mean(0)
        std = data.std(0)
        self.std = torch.where(std > 0, std, torch.ones_like(std))

    def __call__(self, data: torch.Tensor) -> torch.Tensor:
        return (data - self.mean) / self.std


def _check_predict_input(X, like: torch.Tensor, num_features: int) -> torch.Tensor:
    X = as_float_tensor(X, "X", like)
    if X.dim() < 1 or X.shape[-1] != num_features:
        raise ShapeError(f"Expected `X` of shape [..., {num_features}], but found {tuple(X.shape)}")
    return X


class LinearRegressor:
    r"""Least squares :math:`f(x) = W x + c` (optionally ridge-penalised on :math:`W`).

    Pass ``weight [k, n]`` and ``bias [k]`` to use a fixed linear map without fitting.
    """

    def __init__(self, weight=None, bias=None, ridge: float = 0.0) -> None:
        self.weight = None if weight is None else as_float_tensor(weight, "weight")
        if self.weight is not None:
            bias = torch.zeros(self.weight.shape[0]) if bias is None else bias
            self.bias = as_float_tensor(bias, "bias", self.weight)
        self.ridge = float(ridge)

    def fit(self, X, Y) -> LinearRegressor:
        X, Y = check_training_pair(X, Y, "X", "Y")
        design = torch.cat([X, torch.ones_like(X[:, :1])], -1)
        penalty = self.ridge * torch.eye(design.shape[1], dtype=X.dtype, device=X.device)
        penalty[-1, -1] = 0.0
        with named_linalg_errors(
            "normal equations X^T X + ridge I (constant or collinear features: set `ridge` > 0)"
        ):
            coef = torch.linalg.solve(design.mT @ design + penalty, design.mT @ Y)
        self.weight, self.bias = coef[:-1].mT.contiguous(), coef[-1]
        return self

    def predict(self, X) -> torch.Tensor:
        check_fitted(self, "weight")
        X = _check_predict_input(X, self.weight, self.weight.shape[1])
        return X @ self.weight.mT + self.bias


def _sq_dists(A: torch.Tensor, B: torch.Tensor, B_sq: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances ``[..., N_A, N_B]`` via the Gram expansion, clamped at 0."""
    return (A.pow(2).sum(-1, keepdim=True) - 2.0 * A @ B.mT + B_sq).clamp_min(0.0)


class NadarayaWatsonRegressor:
    r"""Nadaraya–Watson kernel regression with a Gaussian kernel and per-dimension bandwidths.

    .. math::
        f(x) = \sum_i w_i(x)\, y_i, \qquad
        w_i(x) = \frac{\exp(-\sum_j (u_j - u_{ij})^2 / 2h_j^2)}
                      {\sum_l \exp(-\sum_j (u_j - u_{lj})^2 / 2h_j^2)},

    on standardised features :math:`u` (of the inputs, or of a linear prediction of ``Y``),
    with weights computed as a softmax (log-space, no underflow).

    Bandwidth selection (``bandwidth=None``) maximises the leave-one-out likelihood of
    :math:`p(y \mid x) \approx N(f(x), Q)` on at most ``loo_max_points`` training points,
    with :math:`Q` the maximum-likelihood constant covariance of the leave-one-out residuals
    :math:`r_i = y_i - f_{-i}(x_i)`:

    .. math::
        \ell(h) = -\tfrac12 \log\det\Bigl(\tfrac1N \textstyle\sum_i r_i r_i^\top\Bigr)
                  - \tfrac k2 (1 + \log 2\pi)

    (the mean log-likelihood per point, ``criterion="likelihood"``), or minimises
    :math:`\sum_i \lVert r_i\rVert^2` (``criterion="squared_error"``). An isotropic
    log-spaced grid (scaled by the median pairwise distance) gives the start; with ``ard``
    each :math:`\log h_j` is then refined by Adam on :math:`\ell` (automatic relevance
    determination: an irrelevant feature gets a large :math:`h_j`; the best iterate is kept).

    Parameters
    ----------
    bandwidth
        Fixed :math:`h` (a float, or one per feature), or ``None`` for leave-one-out selection.
    grid_size, loo_max_points
        Size of the isotropic grid and of the subsample used for the leave-one-out score.
    projection
        ``"linear"``: smooth in the ``k``-dimensional space of a least-squares linear
        prediction of ``Y`` (a supervised projection that avoids the curse of dimensionality
        with many input features); ``None``: smooth in the input space; ``"auto"``
        (default): both (the input space only with at most ``max_input_dims`` features),
        keeping the one with the higher leave-one-out likelihood (``projection_``).
    criterion
        ``"likelihood"`` (default) or ``"squared_error"`` (see above).
    ard, ard_iterations, ard_lr
        Refine one bandwidth per feature (default) with that many Adam steps of that size.
    seed
        Seed for the leave-one-out subsample.

    Attributes
    ----------
    bandwidth_
        Per-feature bandwidths (tensor) on the standardised features.
    projection_
        The feature space used: ``"linear"`` or ``None``.
    loo_loglik_
        The leave-one-out log-likelihood per point of the chosen space (``None`` with a
        fixed bandwidth or the squared-error criterion).
    loo_grid_, loo_scores_
        The isotropic grid and its scores (the log-likelihood, or the squared error).
    """

    _CHUNK_ENTRIES = 2**20
    _PROJECTIONS = ("auto", "linear", None)
    _MAX_LOG_BANDWIDTH = math.log(100.0)  # on standardised features: the feature is ignored

    def __init__(
        self,
        bandwidth=None,
        grid_size: int = 24,
        loo_max_points: int = 1000,
        projection: str | None = "auto",
        criterion: str = "likelihood",
        ard: bool = True,
        ard_iterations: int = 30,
        ard_lr: float = 0.1,
        max_input_dims: int = 20,
        seed: int | torch.Generator | None = 0,
    ) -> None:
        if bandwidth is not None:
            values = torch.as_tensor(bandwidth, dtype=torch.float64)
            if values.dim() > 1 or values.numel() == 0 or not bool((values > 0).all()):
                raise ArgumentError(
                    f"Expected `bandwidth` > 0 (a float or one per feature) or None, but found "
                    f"{bandwidth!r}"
                )
        if projection not in self._PROJECTIONS:
            raise ArgumentError(
                f"Expected `projection` in {self._PROJECTIONS}, but found {projection!r}"
            )
        if criterion not in ("likelihood", "squared_error"):
            raise ArgumentError(
                f"Expected `criterion` 'likelihood' or 'squared_error', but found {criterion!r}"
            )
        self.projection = projection
        self.bandwidth = bandwidth
        self.grid_size = int(grid_size)
        self.loo_max_points = int(loo_max_points)
        self.criterion, self.ard = criterion, bool(ard)
        self.ard_iterations, self.ard_lr = int(ard_iterations), float(ard_lr)
        self.max_input_dims = int(max_input_dims)
        self.seed = seed
        self.X_train = None

    def __repr__(self) -> str:
        if self.X_train is None:
            return f"NadarayaWatsonRegressor(projection={self.projection!r})"
        h = ", ".join(f"{v:.3g}" for v in self.bandwidth_.tolist())
        return f"NadarayaWatsonRegressor(projection_={self.projection_!r}, bandwidth_=[{h}])"

    def fit(self, X, Y) -> NadarayaWatsonRegressor:
        X, Y = check_training_pair(X, Y, "X", "Y")
        self.num_features_ = X.shape[1]
        self.Y_train = Y.contiguous()
        if self.projection == "auto":
            spaces = ["linear"] if X.shape[1] > self.max_input_dims else ["linear", None]
        else:
            spaces = [self.projection]
        if self.bandwidth is not None:
            spaces = spaces[:1]
        best = None
        for space in spaces:
            candidate = self._fit_space(X, Y, space)
            if best is None or candidate["score"] > best["score"]:
                best = candidate
        for key, value in best.items():
            setattr(self, key, value)
        self._precompute()
        return self

    def _fit_space(self, X: torch.Tensor, Y: torch.Tensor, space) -> dict:
        """Features, scaler and selected bandwidth for one feature space."""
        project = LinearRegressor().fit(X, Y) if space == "linear" else None
        U = project.predict(X) if project is not None else X
        scaler = _Standardizer(U)
        U = scaler(U).contiguous()
        out = {"project": project, "scaler": scaler, "X_train": U, "projection_": space}
        out["X_sq"] = U.pow(2).sum(-1)
        if self.bandwidth is not None:
            h = torch.as_tensor(self.bandwidth, dtype=U.dtype, device=U.device)
            out["bandwidth_"] = h.expand(U.shape[1]).clone()
            out["score"], out["loo_loglik_"] = 0.0, None
            return out
        out.update(self._select_bandwidth(U, Y))
        return out

    def _loo_residuals(self, U, Y, log_h, eye):
        V = U * torch.exp(-log_h)
        sq = V.pow(2).sum(-1)
        D = (sq.unsqueeze(-1) + sq - 2.0 * V @ V.mT).clamp_min(0.0)
        return Y - torch.softmax((-0.5 * D).masked_fill(eye, -math.inf), -1) @ Y

    def _score(self, residuals: torch.Tensor) -> torch.Tensor:
        """Higher is better: the mean LOO log-likelihood, or minus the summed squared error."""
        N, k = residuals.shape
        if self.criterion == "squared_error":
            return -residuals.pow(2).sum()
        cov = residuals.mT @ residuals / N
        jitter = 1e-9 * cov.diagonal().mean().clamp_min(1e-300)
        cov = cov + jitter * torch.eye(k, dtype=cov.dtype, device=cov.device)
        return -0.5 * torch.logdet(cov) - 0.5 * k * (1.0 + math.log(2.0 * math.pi))

    def _refine_ard(self, Us, Ys, log_h, eye) -> torch.Tensor:
        """Adam on the per-feature log-bandwidths, in single precision (a selection score
        needs no more); returns the best iterate."""
        dtype = Us.dtype
        low = torch.float32 if dtype == torch.float64 else dtype
        Us, Ys = Us.to(low), Ys.to(low)
        log_h = log_h.to(low).clone().requires_grad_()
        opt = torch.optim.Adam([log_h], lr=self.ard_lr)
        best_score, best = -math.inf, log_h.detach().clone()
        for i in range(self.ard_iterations + 1):
            opt.zero_grad()
            score = self._score(self._loo_residuals(Us, Ys, log_h, eye))
            if float(score.detach()) > best_score:
                best_score, best = float(score.detach()), log_h.detach().clone()
            if i == self.ard_iterations:
                break
            (-score).backward()
            opt.step()
            with torch.no_grad():
                log_h.clamp_(max=self._MAX_LOG_BANDWIDTH)
        return best.to(dtype)

    def _select_bandwidth(self, U: torch.Tensor, Y: torch.Tensor) -> dict:
        N = U.shape[0]
        gen = make_generator(self.seed)
        idx = torch.randperm(N, generator=gen)[: self.loo_max_points].to(U.device)
        Us, Ys = U[idx], Y[idx]
        # exact pairwise distances (no |x|^2 + |y|^2 - 2xy cancellation), so the median that
        # scales the grid does not depend on the device's rounding
        D = torch.cdist(Us, Us, compute_mode="donot_use_mm_for_euclid_dist").pow(2)
        median = D[D > 0].median() if (D > 0).any() else torch.ones((), dtype=D.dtype)
        grid = float(median.sqrt()) * torch.logspace(-1.5, 0.5, self.grid_size, dtype=torch.float64)
        eye = torch.eye(len(idx), dtype=torch.bool, device=D.device)
        scores = []
        for h in grid.tolist():
            logits = (-D / (2.0 * h * h)).masked_fill(eye, -math.inf)
            scores.append(float(self._score(Ys - torch.softmax(logits, -1) @ Ys)))
        scores = torch.tensor(scores, dtype=torch.float64)
        best = int(scores.argmax())
        p = U.shape[1]
        log_h = torch.full((p,), math.log(float(grid[best])), dtype=U.dtype, device=U.device)
        best_score, best_log_h = float(scores[best]), log_h.clone()
        if self.ard and p > 1 and self.ard_iterations > 0:
            refined = self._refine_ard(Us, Ys, log_h, eye)
            with torch.no_grad():
                score = float(self._score(self._loo_residuals(Us, Ys, refined, eye)))
            if score > best_score:
                best_score, best_log_h = score, refined
        # stored as the historical (lower is better) form for the squared error
        stored = scores if self.criterion == "likelihood" else -scores
        return {
            "bandwidth_": torch.exp(best_log_h),
            "score": best_score,
            "loo_loglik_": best_score if self.criterion == "likelihood" else None,
            "loo_grid_": grid,
            "loo_scores_": stored,
            "loo_index_": idx,
        }

    def _precompute(self) -> None:
        """Fold projection, standardisation and the bandwidths into one affine map
        ``u = x W + c`` (features divided by :math:`h`), and the kernel into
        ``logits = u K + k``: :math:`-|u - u_i|^2 / 2` up to a per-query constant, which
        the softmax ignores."""
        n = self.num_features_
        eye = torch.eye(n, dtype=self.X_train.dtype, device=self.X_train.device)
        if self.project is not None:
            W, c = self.project.weight.mT, self.project.bias
        else:
            W, c = eye, torch.zeros(n, dtype=eye.dtype, device=eye.device)
        h = self.bandwidth_.to(self.X_train)
        self._affine_W = (W / (self.scaler.std * h)).contiguous()
        self._affine_c = (c - self.scaler.mean) / (self.scaler.std * h)
        scaled = self.X_train / h
        self._kernel_K = scaled.mT.contiguous()
        self._kernel_k = -0.5 * scaled.pow(2).sum(-1)

    def _weights(self, flat: torch.Tensor) -> torch.Tensor:
        u = torch.addmm(self._affine_c, flat, self._affine_W)
        return torch.softmax(torch.addmm(self._kernel_k, u, self._kernel_K), -1)

    def weights(self, X) -> torch.Tensor:
        """Kernel weights ``[..., N_train]`` of query points ``X [..., n]`` (rows sum to one)."""
        check_fitted(self, "X_train")
        X = _check_predict_input(X, self.X_train, self.num_features_)
        return self._weights(X.reshape(-1, X.shape[-1])).reshape(*X.shape[:-1], -1)

    def predict(self, X) -> torch.Tensor:
        """:math:`f(x)` ``[..., k]``, in chunks of rows so the weight matrix stays small."""
        check_fitted(self, "X_train")
        X = _check_predict_input(X, self.X_train, self.num_features_)
        flat = X.reshape(-1, X.shape[-1])
        entries = self._CHUNK_ENTRIES if flat.device.type == "cpu" else 2**27
        chunk = max(1, entries // self.X_train.shape[0])
        if flat.shape[0] <= chunk:
            out = self._weights(flat) @ self.Y_train
        else:
            out = torch.cat([self._weights(p) @ self.Y_train for p in flat.split(chunk)])
        return out.reshape(*X.shape[:-1], -1)


class MLPRegressor:
    r"""A small fully connected network :math:`f(x) = W_2 \tanh(W_1 x + c_1) + c_2` (or deeper).

    Trained by Adam on the mean squared error of standardised outputs with weight decay,
    mini-batches drawn from ``seed``.
    """

    def __init__(
        self,
        hidden: tuple[int, ...] = (32,),
        epochs: int = 60,
        lr: float = 3e-3,
        weight_decay: float = 1e-3,
        batch_size: int = 256,
        seed: int | torch.Generator | None = 0,
        progress: bool = False,
    ) -> None:
        self.hidden = tuple(int(h) for h in hidden)
        self.epochs, self.lr, self.weight_decay = int(epochs), float(lr), float(weight_decay)
        self.batch_size, self.seed, self.progress = int(batch_size), seed, progress
        self.params = None

    def _forward(self, X: torch.Tensor) -> torch.Tensor:
        h = X
        for i, (W, c) in enumerate(self.params):
            h = h @ W + c
            if i < len(self.params) - 1:
                h = torch.tanh(h)
        return h

    def fit(self, X, Y) -> MLPRegressor:
        X, Y = check_training_pair(X, Y, "X", "Y")
        gen = make_generator(self.seed)
        self.x_scaler, self.y_scaler = _Standardizer(X), _Standardizer(Y)
        Xs, Ys = self.x_scaler(X), self.y_scaler(Y)
        sizes = (X.shape[1], *self.hidden, Y.shape[1])
        self.params = []
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            W = torch.randn(n_in, n_out, generator=gen, dtype=X.dtype) / math.sqrt(n_in)
            self.params.append(
                (W.to(X.device).requires_grad_(), X.new_zeros(n_out).requires_grad_())
            )
        flat = [p for pair in self.params for p in pair]
        opt = torch.optim.Adam(flat, lr=self.lr, weight_decay=self.weight_decay)
        N = X.shape[0]
        with progress_bar(self.epochs, "MLP fit", self.progress) as bar:
            for _ in range(self.epochs):
                perm = torch.randperm(N, generator=gen).to(X.device)
                for start in range(0, N, self.batch_size):
                    batch = perm[start : start + self.batch_size]
                    opt.zero_grad()
                    loss = (self._forward(Xs[batch]) - Ys[batch]).pow(2).mean()
                    loss.backward()
                    opt.step()
                bar.update(1)
        self.params = [(W.detach(), c.detach()) for W, c in self.params]
        return self

    def predict(self, X) -> torch.Tensor:
        check_fitted(self, "params")
        W0 = self.params[0][0]
        X = _check_predict_input(X, W0, W0.shape[0])
        out = self._forward(self.x_scaler(X))
        return out * self.y_scaler.std + self.y_scaler.mean


class GPRegressor:
    r"""Gaussian-process regression mean with a squared-exponential kernel.

    .. math::
        k(x, x') = \sigma_f^2 \exp(-\lVert x - x'\rVert^2 / 2\ell^2), \qquad
        f(x) = k(x, X)\,(K + \sigma_n^2 I)^{-1} Y,

    on standardised inputs and outputs (outputs share hyperparameters). The
    hyperparameters :math:`(\ell, \sigma_f, \sigma_n)` maximise the exact log marginal
    likelihood (Adam on their logarithms) on a subset of ``max_points`` training rows
    (drawn from ``seed``); the predictive mean conditions on the first ``condition_points``
    rows of the same random order (default ``max_points``: the same rows). Conditioning on
    more rows than the hyperparameters were fitted on costs one Cholesky factorisation.
    """

    def __init__(
        self,
        max_points: int = 1000,
        iterations: int = 60,
        lr: float = 0.05,
        seed: int | torch.Generator | None = 0,
        condition_points: int | None = None,
    ) -> None:
        self.max_points, self.iterations, self.lr, self.seed = (
            int(max_points),
            int(iterations),
            lr,
            seed,
        )
        self.condition_points = None if condition_points is None else int(condition_points)
        self.alpha = None

    def _kernel(self, A, B, log_ell, log_sf):
        D = _sq_dists(A, B, B.pow(2).sum(-1))
        return torch.exp(2 * log_sf - 0.5 * D * torch.exp(-2 * log_ell))

    def fit(self, X, Y) -> GPRegressor:
        X, Y = check_training_pair(X, Y, "X", "Y")
        gen = make_generator(self.seed)
        order = torch.randperm(X.shape[0], generator=gen).to(X.device)
        idx = order[: self.max_points]
        self.x_scaler, self.y_scaler = _Standardizer(X), _Standardizer(Y)
        Xs, Ys = self.x_scaler(X[idx]), self.y_scaler(Y[idx])
        self._condition = None
        if self.condition_points is not None and self.condition_points != self.max_points:
            cond = order[: self.condition_points]
            self._condition = (self.x_scaler(X[cond]), self.y_scaler(Y[cond]))
        log_ell = torch.tensor(0.5 * math.log(X.shape[1]), dtype=X.dtype, device=X.device)
        log_sf = X.new_zeros(())
        log_sn = torch.tensor(math.log(0.5), dtype=X.dtype, device=X.device)
        hyper = [t.requires_grad_() for t in (log_ell, log_sf, log_sn)]
        with named_linalg_errors("GP kernel matrices (duplicated or extreme inputs?)"):
            return self._optimise(Xs, Ys, hyper)

    def _optimise(self, Xs, Ys, hyper) -> GPRegressor:
        """Type-II maximum likelihood of the hyperparameters, then the weights ``alpha``."""
        N, k = Ys.shape
        log_ell, log_sf, log_sn = hyper
        X = Xs
        opt = torch.optim.Adam(hyper, lr=self.lr)
        eye = torch.eye(N, dtype=X.dtype, device=X.device)
        for _ in range(self.iterations):
            opt.zero_grad()
            K = self._kernel(Xs, Xs, log_ell, log_sf) + (torch.exp(2 * log_sn) + 1e-6) * eye
            L = torch.linalg.cholesky(K)
            alpha = torch.cholesky_solve(Ys, L)
            nll = 0.5 * (Ys * alpha).sum() + k * torch.log(torch.diagonal(L)).sum()
            (nll / (N * k)).backward()
            opt.step()
        with torch.no_grad():
            self.hyper_ = tuple(t.detach() for t in hyper)
            if self._condition is not None:
                Xs, Ys = self._condition
                eye = torch.eye(Xs.shape[0], dtype=X.dtype, device=X.device)
            K = (
                self._kernel(Xs, Xs, *self.hyper_[:2])
                + (torch.exp(2 * self.hyper_[2]) + 1e-6) * eye
            )
            self.alpha = torch.cholesky_solve(Ys, torch.linalg.cholesky(K))
            self.X_train = Xs
        return self

    def predict(self, X) -> torch.Tensor:
        check_fitted(self, "alpha")
        X = self.x_scaler(_check_predict_input(X, self.X_train, self.X_train.shape[1]))
        flat = X.reshape(-1, X.shape[-1])
        mean = self._kernel(flat, self.X_train, *self.hyper_[:2]) @ self.alpha
        return (mean * self.y_scaler.std + self.y_scaler.mean).reshape(*X.shape[:-1], -1)


_REGRESSORS = {
    "linear": LinearRegressor,
    "nw": NadarayaWatsonRegressor,
    "mlp": MLPRegressor,
    "gp": GPRegressor,
}


def make_regressor(name: str, **kwargs):
    """Build a regressor by name: ``"linear"``, ``"nw"``, ``"mlp"`` or ``"gp"``."""
    if name not in _REGRESSORS:
        raise ArgumentError(
            f"Expected a regressor name in {sorted(_REGRESSORS)}, but found {name!r}"
        )
    return _REGRESSORS[name](**kwargs)
