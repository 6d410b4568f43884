r"""Tempered SMC for static models: from the prior to the posterior with MCMC moves.

.. math:: \pi_k(z) \propto p(z)\,p(y \mid z)^{\beta_k}, \qquad
          \hat Z = \prod_k \frac1N \sum_i p(y \mid z^i_{k-1})^{\beta_k - \beta_{k-1}}
          \approx p(y).

One step = reweight (tempering increment), resample (evidence folded in), move (an
:mod:`ppltk.mcmc` kernel invariant for :math:`\pi_k`) — the composition of three blocks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ppltk._progress import progress_bar
from ppltk._rng import make_generator
from ppltk.errors import ArgumentError, NumericalError
from ppltk.smc.kernel import FeynmanKac, init, step
from ppltk.smc.moves import (
    decorrelation_stop,
    logdensity_with_grad,
    mcmc_move,
    population_params,
    uses_gradient,
)
from ppltk.smc.tempering import next_beta, tempering_increment

__all__ = ["TemperedOutput", "TemperingFK", "tempered_smc_flat", "tempered_smc"]

AUTO_MAX_STEPS = 100
"""Most transitions per temperature with ``num_mcmc_steps="auto"``."""


@dataclass
class TemperedOutput:
    """Final (equally weighted) particles ``[N, D]``, log-evidence, schedule and diagnostics
    (mean acceptance and number of MCMC transitions at each temperature)."""

    particles: torch.Tensor
    log_evidence: torch.Tensor
    betas: list[float]
    log_likelihood: torch.Tensor
    accept_prob: list[float]
    num_mcmc_steps: list[int] = field(default_factory=list)


def _default_kernel(kernel=None):
    """A :mod:`ppltk.mcmc` kernel from a name (``"mh"``, ``"hmc"``, ``"nuts"``) or object;
    random-walk MH by default."""
    from ppltk.mcmc import make_kernel

    return make_kernel("mh" if kernel is None else kernel)


def _parts_and_grads(log_prior: Callable, log_likelihood: Callable) -> Callable:
    """``z -> (prior, likelihood, grad prior, grad likelihood)`` by autograd, all detached."""

    def parts(z: torch.Tensor):
        terms = [logdensity_with_grad(f)(z) for f in (log_prior, log_likelihood)]
        return terms[0][0], terms[1][0], terms[0][1], terms[1][1]

    return parts


def _check_tempered(particles, num_mcmc_steps, target_ess, max_temperatures, betas) -> None:
    if particles.ndim != 2 or particles.shape[0] < 2 or particles.shape[1] < 1:
        raise ArgumentError(
            f"Expected `particles` shaped [N >= 2, D >= 1], but found {list(particles.shape)}"
        )
    if not particles.is_floating_point() or particles.dtype == torch.float16:
        raise ArgumentError(f"Expected `particles` float32 or float64, but found {particles.dtype}")
    for name, value in (("num_mcmc_steps", num_mcmc_steps), ("max_temperatures", max_temperatures)):
        if name == "num_mcmc_steps" and value == "auto":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ArgumentError(f"Expected `{name}` a positive int, but found {value!r}")
    if not 0.0 < float(target_ess) < 1.0:
        raise ArgumentError(f"Expected `target_ess` in (0, 1), but found {target_ess!r}")
    if betas is not None:
        b = [float(x) for x in betas]
        if not b or b[0] != 0.0 or b[-1] != 1.0 or any(x >= y for x, y in zip(b, b[1:])):
            raise ArgumentError(
                f"Expected `betas` increasing from 0.0 to 1.0, but found {list(betas)!r}"
            )


def _evaluators(kernel, log_prior, log_likelihood, parts_and_grads, prior_and_likelihood):
    """``z -> (prior, likelihood)`` (no gradient) and the tempered target for the kernel."""
    grad = uses_gradient(kernel)
    if grad:
        parts = parts_and_grads or _parts_and_grads(log_prior, log_likelihood)

        def values(z):
            return parts(z)[:2]

        def target(z, beta):
            prior, lik, grad_prior, grad_lik = parts(z)
            return prior + beta * lik, grad_prior + beta * grad_lik

        return values, target, True
    values = prior_and_likelihood or (lambda z: (log_prior(z), log_likelihood(z)))

    def target(z, beta):
        prior, lik = values(z)
        return prior + beta * lik

    return values, target, False


def tempered_smc_flat(
    log_prior: Callable[[torch.Tensor], torch.Tensor],
    log_likelihood: Callable[[torch.Tensor], torch.Tensor],
    particles: torch.Tensor,
    *,
    kernel=None,
    num_mcmc_steps: int | str = "auto",
    target_ess: float = 0.5,
    resampling="systematic",
    betas: list[float] | None = None,
    seed: int | torch.Generator = 0,
    max_temperatures: int = 1000,
    progress: bool = False,
    parts_and_grads: Callable[[torch.Tensor], tuple[torch.Tensor, ...]] | None = None,
    prior_and_likelihood: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
    dense: bool = True,
) -> TemperedOutput:
    r"""Adaptive tempered SMC on flat unconstrained points.

    Parameters
    ----------
    log_prior, log_likelihood
        ``z [N, D] -> [N]`` (differentiable if the kernel needs gradients).
    particles
        ``[N, D]`` draws from the prior.
    kernel
        A :mod:`ppltk.mcmc` kernel or its name (default ``"mh"``: random-walk MH proposing
        :math:`N(z, (2.38^2/D)\hat\Sigma)` with :math:`\hat\Sigma` the particles' covariance,
        re-estimated at every temperature; full with ``dense=True``, else diagonal).
        Gradient-free kernels never compute gradients.
    num_mcmc_steps
        Transitions per temperature: an int, or ``"auto"`` (default): move until the particles
        are nearly independent of their start (:func:`~ppltk.smc.moves.decorrelation_stop`,
        mean lag correlation 0.1; random-walk MH needs :math:`O(D)` steps), at most
        ``AUTO_MAX_STEPS`` = 100. ``TemperedOutput.num_mcmc_steps`` reports what was used.
    target_ess, betas
        Adaptive schedule by ESS bisection (``target_ess`` in (0, 1)), or a fixed increasing
        schedule from 0 to 1.
    max_temperatures
        Raise :class:`~ppltk.errors.NumericalError` when :math:`\beta = 1` is not reached
        within this many temperatures (never an evidence for :math:`\beta < 1`).
    parts_and_grads, prior_and_likelihood
        Optional ``z -> (log prior, log likelihood, their gradients)`` and ``z -> (log prior,
        log likelihood)`` from one evaluation (e.g. :class:`ppltk.model.ModelBridge` methods);
        by default built from ``log_prior`` and ``log_likelihood``.
    """
    _check_tempered(particles, num_mcmc_steps, target_ess, max_temperatures, betas)
    generator = make_generator(seed, particles.device)
    kernel = _default_kernel(kernel)
    values, target, with_grad = _evaluators(
        kernel, log_prior, log_likelihood, parts_and_grads, prior_and_likelihood
    )
    fk = TemperingFK(
        particles, values, target, kernel, num_mcmc_steps, target_ess, betas, dense, with_grad
    )
    with progress_bar(100, "tempered SMC", progress) as bar:
        state, _ = init(fk, particles.shape[0], generator)
        while not fk.done(state.t):
            if state.t > max_temperatures:
                raise NumericalError(
                    f"Expected to reach beta = 1 within max_temperatures={max_temperatures}, "
                    f"but found beta = {fk.beta:.3g}; raise max_temperatures or num_particles"
                )
            state, _ = step(fk, state, generator, resampling=resampling, ess_threshold=1.0)
            bar.update(round(100 * fk.beta) - bar.n)
    pop = state.population
    return TemperedOutput(
        pop.particles, pop.log_evidence_estimate(), fk.betas, fk.ll, fk.accepts, fk.steps
    )


class TemperingFK(FeynmanKac):
    r"""Tempering as a Feynman–Kac model: :math:`M_k` is ``num_mcmc_steps`` of ``kernel``
    invariant for :math:`\pi_{k-1} \propto p\,\ell^{\beta_{k-1}}` (with the particles' own
    covariance as metric) and :math:`G_k = \ell^{\beta_k - \beta_{k-1}}`, with :math:`\beta_k`
    chosen after the move by ESS bisection (or read from ``betas``). Driven by
    :func:`~ppltk.smc.step` with resampling at every step (so the weights are equal when
    :math:`\beta_k` is chosen); a last step moves at :math:`\beta = 1` with :math:`G = 1`, so
    the final particles are equally weighted draws from the posterior.
    """

    def __init__(
        self,
        particles,
        values,
        target,
        kernel,
        num_mcmc_steps,
        target_ess,
        betas,
        dense,
        with_grad,
    ) -> None:
        self.particles, self.values, self.target, self.kernel = particles, values, target, kernel
        self.num_mcmc_steps, self.target_ess, self.schedule = num_mcmc_steps, target_ess, betas
        self.dense, self.with_grad = dense, with_grad
        self.beta, self.betas, self.accepts, self.finished = 0.0, [0.0], [], False
        self.steps: list[int] = []

    def done(self, t: int) -> bool:
        return self.finished

    def advance(self, t, xp, shape, generator):
        if xp is None:
            x = self.particles
        else:
            params = population_params(self.kernel, xp, dense=self.dense)
            steps, stop = self.num_mcmc_steps, None
            if steps == "auto":
                steps, stop = AUTO_MAX_STEPS, decorrelation_stop(xp, params.inverse_mass[0])
            state, info = mcmc_move(
                self.kernel,
                lambda z, b=self.beta: self.target(z, b),
                xp,
                steps,
                generator,
                params,
                with_grad=self.with_grad,
                stop=stop,
            )
            x = state.position
            self.accepts.append(float(info["accept_prob"].mean()))
            self.steps.append(info["num_steps"])
        self.ll = self.values(x)[1]
        if self.beta >= 1.0:  # the final move at beta = 1
            self.finished = True
            return x, torch.zeros_like(self.ll)
        if self.schedule:
            new = float(self.schedule[len(self.betas)])
        else:
            new = next_beta(self.ll, self.beta, self.target_ess)
        log_g = tempering_increment(self.ll, new - self.beta)
        self.beta = new
        self.betas.append(new)
        return x, log_g


def tempered_smc(
    model: Callable,
    *args,
    num_particles: int = 1000,
    seed: int | torch.Generator = 0,
    kernel=None,
    num_mcmc_steps: int | str = "auto",
    target_ess: float = 0.5,
    resampling="systematic",
    progress: bool = True,
    **kwargs,
):
    r"""Tempered SMC on a static Pyro model: posterior draws and :math:`\log p(y)`.

    The model goes through :class:`ppltk.model.ModelBridge` (latent sites → one flat
    unconstrained vector; ``log_prior`` includes the log-Jacobian, so the evidence is that of
    the original model). Returns a :class:`ppltk.Result` with one chain of ``num_particles``
    equally weighted draws, ``log_evidence`` and stats ``log_likelihood``; ``attrs`` hold the
    number of temperatures and the schedule.

    Examples
    --------
    >>> import pyro, pyro.distributions as dist, torch
    >>> def model(y):
    ...     mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
    ...     with pyro.plate("n", len(y)):
    ...         pyro.sample("y", dist.Normal(mu, 1.0), obs=y)
    >>> res = tempered_smc(model, torch.zeros(3), num_particles=200, progress=False)
    >>> res.draws["mu"].shape
    (1, 200)
    """
    from ppltk.model import ModelBridge

    if isinstance(num_particles, bool) or not isinstance(num_particles, int) or num_particles < 2:
        raise ArgumentError(f"Expected `num_particles` an int >= 2, but found {num_particles!r}")
    generator = make_generator(seed)
    bridge = ModelBridge(model, args, kwargs, seed=0)
    z0 = bridge.sample_prior(num_particles, generator)
    out = tempered_smc_flat(
        bridge.log_prior,
        bridge.log_likelihood,
        z0,
        parts_and_grads=bridge.log_prior_and_likelihood_and_grads,
        prior_and_likelihood=bridge.log_prior_and_likelihood,
        kernel=kernel,
        num_mcmc_steps=num_mcmc_steps,
        target_ess=target_ess,
        resampling=resampling,
        seed=generator,
        progress=progress,
    )
    stats = {"lp_likelihood": out.log_likelihood[None]}  # ArviZ reserves "log_likelihood"
    attrs = {
        "num_temperatures": len(out.betas) - 1,
        "betas": tuple(out.betas),
        "num_mcmc_steps": tuple(out.num_mcmc_steps),
    }
    return bridge.to_result(
        out.particles[None].detach(), stats, "tempered_smc", float(out.log_evidence), attrs
    )
