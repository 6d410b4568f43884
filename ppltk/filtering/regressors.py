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
    r"""Nadaraya–Watson kernel regression with a Gaussian kernel.

    .. math::
        f(x) = \sum_i w_i(x)\, y_i, \qquad
        w_i(x) = \frac{\exp(-\lVert x - x_i\rVert^2 / 2h^2)}
                      {\sum_j \exp(-\lVert x - x_j\rVert^2 / 2h^2)},

    on standardised inputs, with weights computed as a softmax (log-space, no underflow).
    The bandwidth :math:`h` minimises the leave-one-out squared error
    :math:`\sum_i \lVert y_i - f_{-i}(x_i)\rVert^2` over a log-spaced grid (computed on at
    most ``loo_max_points`` training points).

    Parameters
    ----------
    bandwidth
        Fixed :math:`h`, or ``None`` for leave-one-out selection.
    grid_size, loo_max_points
        Size of the bandwidth grid and of the subsample used for the leave-one-out score.
    projection
        ``"linear"`` (default): smooth in the ``k``-dimensional space of a least-squares
        linear prediction of ``Y`` (a supervised projection that avoids the curse of
        dimensionality with many input features); ``None``: smooth in the input space.
    seed
        Seed for the leave-one-out subsample.
    """

    _CHUNK_ENTRIES = 2**20

    def __init__(
        self,
        bandwidth: float | None = None,
        grid_size: int = 24,
        loo_max_points: int = 1500,
        projection: str | None = "linear",
        seed: int | torch.Generator | None = 0,
    ) -> None:
        if bandwidth is not None and not bandwidth > 0:
            raise ArgumentError(f"Expected `bandwidth` > 0 or None, but found {bandwidth!r}")
        if projection not in ("linear", None):
            raise ArgumentError(f"Expected `projection` 'linear' or None, but found {projection!r}")
        self.projection = projection
        self.bandwidth = bandwidth
        self.grid_size = int(grid_size)
        self.loo_max_points = int(loo_max_points)
        self.seed = seed
        self.X_train = None

    def fit(self, X, Y) -> NadarayaWatsonRegressor:
        X, Y = check_training_pair(X, Y, "X", "Y")
        self.num_features_ = X.shape[1]
        self.project = LinearRegressor().fit(X, Y) if self.projection == "linear" else None
        if self.project is not None:
            X = self.project.predict(X)
        self.scaler = _Standardizer(X)
        self.X_train = self.scaler(X).contiguous()
        self.X_sq = self.X_train.pow(2).sum(-1)
        self.Y_train = Y.contiguous()
        if self.bandwidth is None:
            self.bandwidth_ = self._loo_bandwidth()
        else:
            self.bandwidth_ = float(self.bandwidth)
        self._precompute()
        return self

    def _precompute(self) -> None:
        """Fold projection and standardisation into one affine map ``u = x W + c``, and the
        kernel into ``logits = u K + k``: :math:`-|u - u_i|^2 / 2h^2` up to a
        per-query constant, which the softmax ignores."""
        n = self.num_features_
        eye = torch.eye(n, dtype=self.X_train.dtype, device=self.X_train.device)
        if self.project is not None:
            W, c = self.project.weight.mT, self.project.bias
        else:
            W, c = eye, torch.zeros(n, dtype=eye.dtype, device=eye.device)
        self._affine_W = (W / self.scaler.std).contiguous()
        self._affine_c = (c - self.scaler.mean) / self.scaler.std
        inv_h2 = 1.0 / self.bandwidth_**2
        self._kernel_K = (self.X_train.mT * inv_h2).contiguous()
        self._kernel_k = -0.5 * inv_h2 * self.X_sq

    def _loo_bandwidth(self) -> float:
        N = self.X_train.shape[0]
        gen = make_generator(self.seed)
        idx = torch.randperm(N, generator=gen)[: self.loo_max_points].to(self.X_train.device)
        Xs, Ys = self.X_train[idx], self.Y_train[idx]
        # exact pairwise distances (no |x|^2 + |y|^2 - 2xy cancellation), so the median that
        # scales the grid does not depend on the device's rounding
        D = torch.cdist(Xs, Xs, compute_mode="donot_use_mm_for_euclid_dist").pow(2)
        median = D[D > 0].median() if (D > 0).any() else torch.ones((), dtype=D.dtype)
        grid = float(median.sqrt()) * torch.logspace(-1.5, 0.5, self.grid_size, dtype=torch.float64)
        eye = torch.eye(len(idx), dtype=torch.bool, device=D.device)
        scores = []
        for h in grid.tolist():
            logits = (-D / (2.0 * h * h)).masked_fill(eye, -math.inf)
            pred = torch.softmax(logits, -1) @ Ys
            scores.append(float((pred - Ys).pow(2).sum()))
        self.loo_grid_, self.loo_index_ = grid, idx
        self.loo_scores_ = torch.tensor(scores, dtype=torch.float64)
        return float(grid[int(self.loo_scores_.argmin())])

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
    (drawn from ``seed``), which are also the points the predictive mean conditions on.
    """

    def __init__(
        self,
        max_points: int = 1000,
        iterations: int = 60,
        lr: float = 0.05,
        seed: int | torch.Generator | None = 0,
    ) -> None:
        self.max_points, self.iterations, self.lr, self.seed = (
            int(max_points),
            int(iterations),
            lr,
            seed,
        )
        self.alpha = None

    def _kernel(self, A, B, log_ell, log_sf):
        D = _sq_dists(A, B, B.pow(2).sum(-1))
        return torch.exp(2 * log_sf - 0.5 * D * torch.exp(-2 * log_ell))

    def fit(self, X, Y) -> GPRegressor:
        X, Y = check_training_pair(X, Y, "X", "Y")
        gen = make_generator(self.seed)
        idx = torch.randperm(X.shape[0], generator=gen)[: self.max_points].to(X.device)
        self.x_scaler, self.y_scaler = _Standardizer(X), _Standardizer(Y)
        Xs, Ys = self.x_scaler(X[idx]), self.y_scaler(Y[idx])
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
