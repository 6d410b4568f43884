r"""Simulations from a Pyro model's prior predictive: the training set of an amortized posterior.

Each simulation is a pair :math:`(\theta_i, y_i)` with :math:`\theta_i \sim p(\theta)` and
:math:`y_i \sim p(y \mid \theta_i)`; :math:`\theta_i` is stored as the model bridge's flat
unconstrained vector :math:`z_i = T^{-1}(\theta_i)` (:class:`ppltk.model.ModelBridge`), the data
as ``{site: [N, *site_shape]}``.

Three ways to draw ``N`` of them, tried in turn:

1. **plate** -- the model runs once inside an outer ``pyro.plate`` of size ``N`` placed left of
   its own plates; the result is checked against unbatched runs of the model at a few
   simulations (their joint log-densities must agree), because a model that reduces over a
   latent's values (``mu.sum()``) or expands without plates would silently mix simulations;
2. **vmap** -- ``torch.func.vmap`` of one model run with ``randomness="different"``;
3. **loop** -- one model run per simulation (with a
   :class:`~ppltk.errors.VectorisationWarning`).

All three draw from the same distribution; they consume randomness differently, so the draws of
one ``seed`` depend on which path ran (reported in :attr:`Simulations.path`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pyro
import pyro.poutine as poutine
import torch
from pyro.poutine.util import site_is_subsample

from ppltk._rng import child_seed, pyro_seed
from ppltk.calibration.simulate import unobserve
from ppltk.errors import ArgumentError, ModelStructureError, VectorisationWarning

__all__ = ["Simulations", "SimulationUnit", "simulate", "simulate_units", "observed_sites"]

_SIM_PLATE = "_ppltk_simulations"


@dataclass
class Simulations:
    """``N`` prior-predictive draws: ``z [N, D]`` (unconstrained latents) and ``data``.

    Attributes
    ----------
    z
        Flat unconstrained latent vectors, ``[N, D]``, in the bridge's layout.
    data
        ``{observed site: [N, *site_shape]}``.
    path
        ``"plate"``, ``"vmap"`` or ``"loop"``: how they were drawn.
    num_dropped
        Draws dropped because their unconstrained value was not finite (e.g. a Beta draw that
        rounds to exactly 0 or 1).
    """

    z: torch.Tensor
    data: dict[str, torch.Tensor]
    path: str = ""
    num_dropped: int = 0

    def __len__(self) -> int:
        return int(self.z.shape[0])

    def subset(self, index: torch.Tensor) -> Simulations:
        """The simulations at ``index`` (a 1-d index or boolean tensor)."""
        return Simulations(self.z[index], {k: v[index] for k, v in self.data.items()}, self.path, 0)


def observed_sites(trace) -> list[str]:
    """Names of the data sites of a model trace: observed sample sites with a non-empty value
    that are not ``pyro.factor`` terms, ``pyro.deterministic`` sites or plate subsamples."""
    names = []
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or not site["is_observed"] or site_is_subsample(site):
            continue
        if site["infer"].get("_deterministic") or type(site["fn"]).__name__ == "Unit":
            continue
        value = site["value"]
        if isinstance(value, torch.Tensor) and value.numel() > 0:
            names.append(name)
    return names


def _plate_dim(trace) -> int:
    """The dim of an outer plate left of every plate of ``trace``."""
    nesting = 0
    for site in trace.nodes.values():
        if site["type"] != "sample":
            continue
        for frame in site["cond_indep_stack"]:
            if frame.vectorized and frame.dim is not None:
                nesting = max(nesting, -frame.dim)
    return -(nesting + 1)


def simulate(
    bridge,
    num: int,
    generator: torch.Generator,
    observed: Sequence[str],
    path: str = "auto",
) -> Simulations:
    """Draw ``num`` pairs ``(z, y)`` from the prior predictive of ``bridge.model``.

    Parameters
    ----------
    bridge
        A :class:`ppltk.model.ModelBridge` of the model with its arguments.
    num
        Number of simulations.
    generator
        Source of randomness (Pyro's global RNG is seeded from it and restored).
    observed
        The data sites (sampled from the model even where it passes ``obs=``).
    path
        ``"auto"`` (plate, then vmap, then loop), ``"plate"``, ``"vmap"`` or ``"loop"``.

    Returns
    -------
    Simulations
        Rows with a non-finite unconstrained value are dropped (counted in ``num_dropped``).
    """
    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise ArgumentError(f"Expected `num` to be a positive int, but found {num!r}")
    if path not in ("auto", "plate", "vmap", "loop"):
        raise ArgumentError(f"Expected `path` in 'auto'|'plate'|'vmap'|'loop', but found {path!r}")
    model = unobserve(bridge.model, observed)
    args, kwargs = bridge.args, bridge.kwargs
    names = list(bridge.sites) + list(observed)
    shapes = {n: s.shape for n, s in bridge.sites.items()}
    shapes.update({n: tuple(bridge.observed[n].shape) for n in observed})
    tries = ["plate", "vmap", "loop"] if path == "auto" else [path]
    errors = []
    for how in tries:
        seed = child_seed(generator)
        try:
            with pyro_seed(seed), pyro.validation_enabled(False), poutine.block():
                values = _DRAW[how](model, args, kwargs, names, shapes, num)
                if how == "plate":
                    _check_plate(bridge.model, args, kwargs, values.pop("_raw"), shapes)
            break
        except Exception as error:  # noqa: BLE001 - the next path is tried
            if path != "auto":
                raise
            errors.append(f"{how}: {error!r:.200}")
    else:
        raise ModelStructureError(
            "Could not simulate from the model's prior predictive: " + "; ".join(errors)
        )
    if how == "loop" and path == "auto":
        warnings.warn(
            "The model could not be run for all simulations at once ("
            + "; ".join(errors)
            + "); simulating one at a time, which is slower.",
            VectorisationWarning,
            stacklevel=3,
        )
    latents = {n: values[n].to(bridge.dtype) for n in bridge.sites}
    z = bridge.unconstrain(latents).to(device=bridge.device, dtype=bridge.dtype)
    data = {n: values[n].detach().to(bridge.device) for n in observed}
    finite = torch.isfinite(z).all(-1)
    for v in data.values():
        if v.is_floating_point():
            finite &= torch.isfinite(v.reshape(num, -1)).all(-1)
    dropped = int((~finite).sum())
    if dropped:
        z, data = z[finite], {k: v[finite] for k, v in data.items()}
    return Simulations(z.detach(), data, how, dropped)


def _reshape(value: torch.Tensor, num: int, shape: tuple[int, ...], name: str) -> torch.Tensor:
    if value.numel() != num * math.prod(shape):
        raise ModelStructureError(
            f"Site '{name}': expected {num} simulations of shape {list(shape)}, but the batched "
            f"run gave a value of shape {list(value.shape)}"
        )
    return value.reshape((num,) + tuple(shape))


def _draw_plate(model, args, kwargs, names, shapes, num) -> dict[str, torch.Tensor]:
    probe = poutine.trace(model).get_trace(*args, **kwargs)
    with pyro.plate(_SIM_PLATE, num, dim=_plate_dim(probe)):
        trace = poutine.trace(model).get_trace(*args, **kwargs)
    out: dict = {"_raw": {n: trace.nodes[n]["value"] for n in names}}
    for n in names:
        value = trace.nodes[n]["value"]
        if value.dim() <= len(shapes[n]) or value.shape[0] != num:
            raise ModelStructureError(
                f"Site '{n}': expected the simulation plate as the leading dim, but found value "
                f"shape {list(value.shape)} (site shape {list(shapes[n])})"
            )
        out[n] = _reshape(value, num, shapes[n], n)
    return out


def _draw_vmap(model, args, kwargs, names, shapes, num) -> dict[str, torch.Tensor]:
    def one(_):
        trace = poutine.trace(model).get_trace(*args, **kwargs)
        return {n: trace.nodes[n]["value"] for n in names}

    parts = [
        torch.func.vmap(one, randomness="different")(torch.arange(len(chunk)))
        for chunk in torch.arange(num).split(4096)
    ]
    return {n: _reshape(torch.cat([p[n] for p in parts]), num, shapes[n], n) for n in names}


def _draw_loop(model, args, kwargs, names, shapes, num) -> dict[str, torch.Tensor]:
    out: dict[str, list] = {n: [] for n in names}
    for _ in range(num):
        trace = poutine.trace(model).get_trace(*args, **kwargs)
        for n in names:
            out[n].append(trace.nodes[n]["value"].detach())
    return {n: _reshape(torch.stack(v), num, shapes[n], n) for n, v in out.items()}


_DRAW: dict[str, Callable] = {"plate": _draw_plate, "vmap": _draw_vmap, "loop": _draw_loop}


def _check_plate(
    model: Callable,
    args: tuple,
    kwargs: dict[str, Any],
    raw: dict[str, torch.Tensor],
    shapes: dict[str, tuple[int, ...]],
) -> None:
    """The plate-batched draws are what unbatched runs give: at three simulations, the joint
    log-density of the batched run's values (``raw``: simulations first, the batched run's
    singleton dims kept) re-scored by the model batched by a plate must equal the sum of the
    model's log-densities run alone on each (any mixing of simulations breaks it)."""
    num = next(iter(raw.values())).shape[0]
    rows = sorted({0, num // 2, num - 1})
    sub = {n: v[torch.tensor(rows, device=v.device)] for n, v in raw.items()}
    single = []
    for k in range(len(rows)):
        data = {n: v[k].reshape(shapes[n]) for n, v in sub.items()}
        trace = poutine.trace(poutine.condition(model, data=data)).get_trace(*args, **kwargs)
        single.append(trace.log_prob_sum().detach().double())
    single = torch.stack(single)
    first = {n: v[0].reshape(shapes[n]) for n, v in sub.items()}
    probe = poutine.trace(poutine.condition(model, data=first)).get_trace(*args, **kwargs)
    dim = _plate_dim(probe)
    with pyro.plate(_SIM_PLATE + "_check", len(rows), dim=dim):
        trace = poutine.trace(poutine.condition(model, data=sub)).get_trace(*args, **kwargs)
    batched = torch.zeros(len(rows), dtype=torch.float64)
    for site in trace.nodes.values():
        if site["type"] != "sample" or site_is_subsample(site):
            continue
        lp = site["fn"].log_prob(site["value"]) * site["scale"]
        if lp.dim() < -dim or lp.shape[dim] != len(rows):
            raise ModelStructureError(f"Site '{site['name']}' is not batched by the plate")
        lp = lp.movedim(dim, 0).reshape(len(rows), -1).sum(-1)
        batched = batched + lp.detach().double().cpu()
    if not torch.allclose(batched, single.cpu(), rtol=1e-4, atol=1e-3):
        raise ModelStructureError(
            "The model batched by an outer plate gives other log-densities than run alone "
            f"({batched.tolist()} vs {single.tolist()}): it mixes simulations"
        )


@dataclass(frozen=True)
class SimulationUnit:
    """One work unit of :func:`simulate_units`: ``num`` simulations with their own ``seed``
    (picklable when the model is, e.g. a module-level function)."""

    model: Callable[..., Any]
    args: tuple
    kwargs: dict
    observed: tuple[str, ...]
    num: int
    seed: int

    def run(self) -> Simulations:
        from ppltk._rng import make_generator
        from ppltk.model import ModelBridge

        bridge = ModelBridge(self.model, self.args, self.kwargs)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", VectorisationWarning)  # reported by the caller
            return simulate(bridge, self.num, make_generator(self.seed), self.observed)


def _run_unit(unit: SimulationUnit) -> Simulations:
    return unit.run()


def simulate_units(
    bridge,
    num: int,
    observed: Sequence[str],
    executor: Any = None,
    *,
    per_unit: int = 5000,
    seed: int | torch.Generator | None = 0,
    progress: bool = True,
) -> Simulations:
    """:func:`simulate` split into work units of ``per_unit`` simulations, run on ``executor``
    (``None``, ``"dask"``, a scheduler address, a Client or cluster; see
    :func:`ppltk.distributed.map_units`). Unit ``i`` uses seed ``unit_seeds(seed, U)[i]``, so
    the simulations are the same on every executor."""
    from ppltk.distributed.seeds import root_seed, unit_seeds
    from ppltk.distributed.units import map_units

    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise ArgumentError(f"Expected `num` to be a positive int, but found {num!r}")
    if isinstance(per_unit, bool) or not isinstance(per_unit, int) or per_unit < 1:
        raise ArgumentError(f"Expected `per_unit` to be a positive int, but found {per_unit!r}")
    sizes = [min(per_unit, num - start) for start in range(0, num, per_unit)]
    seeds = unit_seeds(root_seed(seed), len(sizes))
    units = [
        SimulationUnit(bridge.model, bridge.args, bridge.kwargs, tuple(observed), n, s)
        for n, s in zip(sizes, seeds)
    ]
    parts = map_units(_run_unit, units, executor, progress=progress, desc="simulations")
    z = torch.cat([p.z for p in parts]).to(bridge.device)
    data = {k: torch.cat([p.data[k] for p in parts]).to(bridge.device) for k in observed}
    paths = sorted({p.path for p in parts})
    return Simulations(z, data, "+".join(paths), sum(p.num_dropped for p in parts))
