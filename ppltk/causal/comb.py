"""Comb disintegration: interventional distributions from an observational joint.

For the front-door shape (treatment ``X``, bridge ``M``, outcome ``Y``, context ``C``) the
observational joint ``ω`` with full support factors uniquely as a 2-comb (JKZ 2019, Sect. 4)

.. math::

    ω(c, x, m, y) = \\underbrace{ω(c)\\, ω(x \\mid c)\\, ω(y \\mid x, m, c)}_{f:\\ \\text{outer teeth}}
                    \\cdot \\underbrace{ω(m \\mid x, c)}_{g:\\ \\text{the hole's filler}} .

Surgery on the comb cuts the ``X`` wire between the first tooth of ``f`` and the hole and
feeds the hole with the intervention state ``σ`` instead:

.. math::

    P(y \\mid do(σ)) = \\sum_{c, m, x, x'} σ(x)\\, ω(c)\\, g(m \\mid x, c)\\, ω(x' \\mid c)\\,
        ω(y \\mid x', m, c).

The back-door case is the comb whose hole is empty (``f = ω(z) ω(y | x, z)``, plug ``σ``).
Which case applies, and with which sets, is decided by :func:`ppltk.causal.identify`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import networkx as nx
import opt_einsum
import torch

from ppltk.causal.id_algorithm import effect_value
from ppltk.causal.identification import Identification, check_dag, check_names, identify
from ppltk.causal.semantics import as_state
from ppltk.errors import ArgumentError, NotIdentifiableError, ShapeError

__all__ = ["CausalEffect", "NoFullSupportError", "effect_from_joint", "joint_from_samples"]


class NoFullSupportError(NotIdentifiableError):
    """The observational joint has zero entries where the comb must divide by them."""


@dataclass(frozen=True)
class CausalEffect:
    """``value = P(query | do)`` with how it was computed (``return_details=True``)."""

    value: torch.Tensor
    method: str
    adjustment_set: tuple[str, ...]
    mediators: tuple[str, ...]
    formula: str
    comb: dict = field(default_factory=dict, repr=False)


class _Table:
    """A joint table with named trailing axes (leading axes are batch)."""

    def __init__(self, t: torch.Tensor, names: Sequence[str]):
        self.t, self.names = t, tuple(names)

    def marginal(self, keep: Sequence[str]) -> torch.Tensor:
        n = len(self.names)
        drop = [i - n for i, v in enumerate(self.names) if v not in keep]
        m = self.t.sum(drop) if drop else self.t
        kept = [v for v in self.names if v in keep]
        b = m.ndim - len(kept)
        return m.permute(*range(b), *(b + kept.index(v) for v in keep))


def _divide(num: torch.Tensor, den: torch.Tensor, name: str) -> torch.Tensor:
    if (den <= 0).any():
        idx = tuple(int(i) for i in (den <= 0).nonzero()[0])
        raise NoFullSupportError(
            f"Expected an observational joint with full support (comb disintegration divides "
            f"by {name}), but found {name} = 0 at index {idx} (shape {tuple(den.shape)})"
        )
    return num / den


def joint_from_samples(samples: torch.Tensor, cards: Sequence[int]) -> torch.Tensor:
    """Counts table ``(*cards)`` from integer samples of shape ``(n, len(cards))``."""
    if samples.ndim != 2 or samples.shape[1] != len(cards):
        raise ShapeError(
            f"Expected `samples` of shape (n, {len(cards)}), but found {tuple(samples.shape)}"
        )
    flat = torch.zeros((), dtype=torch.long, device=samples.device)
    for j, k in enumerate(cards):
        flat = flat * k + samples[:, j].long()
    counts = torch.bincount(flat, minlength=int(torch.tensor(cards).prod()))
    return counts.reshape(*cards).to(torch.float64)


def _check_joint(graph, latent, joint, variables) -> tuple[torch.Tensor, set[str]]:
    variables = tuple(variables)
    if not torch.is_tensor(joint) or joint.ndim < len(variables):
        raise ShapeError(
            f"Expected `joint` with trailing axes {variables}, but found "
            f"{getattr(joint, 'shape', type(joint))}"
        )
    bad = [v for v in variables if v not in graph] + sorted(set(latent) & set(variables))
    if bad or len(set(variables)) != len(variables):
        raise ArgumentError(
            f"Expected `variables` to be distinct observed graph nodes, but found {list(variables)}"
        )
    joint = joint.to(torch.float64) if not joint.is_floating_point() else joint
    if not torch.isfinite(joint).all() or (joint < 0).any():
        raise ArgumentError("Expected `joint` to hold finite non-negative probabilities or counts")
    dims = tuple(range(-len(variables), 0))
    return _divide(joint, joint.sum(dims, keepdim=True), "the total mass"), set(variables)


def _symbols(groups: Mapping[str, Sequence[str]]) -> dict[str, str]:
    out, i = {}, 0
    for tag, names in groups.items():
        for v in names:
            out[(tag, v)] = opt_einsum.get_symbol(i)
            i += 1
    return out


def _conditional(num: torch.Tensor, den: torch.Tensor, n_new: int, name: str) -> torch.Tensor:
    """``num / den`` with ``den`` broadcast over the ``n_new`` trailing axes of ``num``."""
    return _divide(num, den.reshape(*den.shape, *([1] * n_new)), name)


def _sum_last(t: torch.Tensor, n: int) -> torch.Tensor:
    return t.sum(tuple(range(-n, 0))) if n else t


def _front_door(tab: _Table, x, m, c, y, sigma):
    """Disintegrate ω(c, x, m, y) into the comb and plug σ into its hole."""
    p = tab.marginal((*c, *x, *m, *y))
    w_cxm = _sum_last(p, len(y))
    w_cx = _sum_last(w_cxm, len(m))
    w_c = _sum_last(w_cx, len(x))
    g = _conditional(w_cxm, w_cx, len(m), "ω(x, c)")  # inner part ω(m | x, c)
    w_x_c = _conditional(w_cx, w_c, len(x), "ω(c)")  # outer: ω(x' | c)
    w_y = _conditional(p, w_cxm, len(y), "ω(x, m, c)")  # outer: ω(y | x', m, c)
    s = _symbols({"c": c, "x": x, "xp": x, "m": m, "y": y})
    C, X, XP, M, Y = (
        "".join(s[(t, v)] for v in vs)
        for t, vs in (("c", c), ("x", x), ("xp", x), ("m", m), ("y", y))
    )
    # Σ σ(x) ω(c) g(m | x, c) ω(x' | c) ω(y | x', m, c): σ in the hole, x' the cut wire
    terms = [f"...{s[('x', v)]}" for v in x]
    terms += [f"...{C}", f"...{C}{X}{M}", f"...{C}{XP}", f"...{C}{XP}{M}{Y}"]
    ops = [sigma[v] for v in x] + [w_c, g, w_x_c, w_y]
    value = torch.einsum(",".join(terms) + f"->...{Y}", *ops)
    comb = {
        "outer": {"ω(c)": w_c, "ω(x|c)": w_x_c, "ω(y|x,m,c)": w_y},
        "inner": {"ω(m|x,c)": g},
        "axes": {"c": tuple(c), "x": tuple(x), "m": tuple(m), "y": tuple(y)},
    }
    return value, comb


def _back_door(tab: _Table, x, z, y, sigma):
    """Σ_z ω(z) ω(y | x, z) with σ plugged into x (the comb with an empty hole)."""
    p = tab.marginal((*z, *x, *y))
    w_zx = _sum_last(p, len(y))
    w_z = _sum_last(w_zx, len(x))
    w_y = _conditional(p, w_zx, len(y), "ω(x, z)")
    s = _symbols({"z": z, "x": x, "y": y})
    Z, X, Y = ("".join(s[(t, v)] for v in vs) for t, vs in (("z", z), ("x", x), ("y", y)))
    terms = [f"...{s[('x', v)]}" for v in x] + [f"...{Z}", f"...{Z}{X}{Y}"]
    value = torch.einsum(",".join(terms) + f"->...{Y}", *[sigma[v] for v in x], w_z, w_y)
    comb = {
        "outer": {"ω(z)": w_z, "ω(y|x,z)": w_y},
        "inner": {},
        "axes": {"z": tuple(z), "x": tuple(x), "y": tuple(y)},
    }
    return value, comb


def _no_effect(tab: _Table, y, sigma):
    """``P(y | do x) = ω(y)``, broadcast over the batch axes of the intervention states."""
    value = tab.marginal(y)
    batch = torch.broadcast_shapes(
        value.shape[: value.ndim - len(y)], *(s.shape[:-1] for s in sigma.values())
    )
    return value.expand(*batch, *value.shape[value.ndim - len(y) :]), {}


def effect_from_joint(
    graph: nx.DiGraph,
    latent: Sequence[str],
    joint: torch.Tensor,
    variables: Sequence[str],
    query: Sequence[str],
    do: Mapping[str, object],
    *,
    evidence: Mapping[str, object] | None = None,
    return_details: bool = False,
    max_set_size: int = 3,
) -> torch.Tensor | CausalEffect:
    """``P(query | do, evidence)`` from an observational joint.

    Fast paths: no effect, back-door adjustment, comb disintegration (front-door); otherwise
    (and for conditional queries) the complete ID/IDC algorithm of
    :mod:`ppltk.causal.id_algorithm`, whose formula is evaluated by einsum on ``joint``.

    Parameters
    ----------
    graph : networkx.DiGraph
        The causal DAG including the hidden variables.
    latent : sequence of str
        Hidden nodes (any node not in ``variables`` is treated as hidden too).
    joint : torch.Tensor
        Probabilities or counts with trailing axes in ``variables`` order (leading axes batch).
    variables, query : sequence of str
        Observed variables (axes of ``joint``) and the variables of the answer (axis order).
    do : dict
        ``{var: int | probability vector}`` (hard or stochastic intervention).
    evidence : dict, optional
        ``{var: int}`` observed values (hard evidence) for ``P(query | do, evidence)``; with
        evidence the intervention values must be hard (ints or one-hot vectors).
    return_details : bool
        Return a :class:`CausalEffect` with the method, adjustment set, bridge and comb parts.

    Raises
    ------
    NotIdentifiableError
        No sufficient condition holds (the message says why), or (``NoFullSupportError``)
        the joint lacks the support the disintegration needs.
    """
    check_dag(graph)
    latent = check_names(latent, "latent")
    bad = sorted(set(latent) - set(graph.nodes), key=str)
    if bad:
        raise ArgumentError(f"Expected `latent` to be graph nodes, but found {bad}")
    if not isinstance(do, Mapping):
        raise ArgumentError(
            f"Expected `do` to be a mapping {{variable: value}} such as {{'S': 1}}, but found "
            f"{type(do).__name__} {do!r}"
        )
    variables = check_names(variables, "variables")
    joint, observed = _check_joint(graph, latent, joint, variables)
    query, do = check_names(query, "query"), dict(do)
    if evidence is not None and not isinstance(evidence, Mapping):
        raise ArgumentError(
            f"Expected `evidence` to be a mapping {{variable: value}} such as {{'Z': 0}}, but "
            f"found {type(evidence).__name__} {evidence!r}"
        )
    evidence = dict(evidence or {})
    ident: Identification = identify(
        graph, observed, do.keys(), query, max_set_size, evidence=evidence.keys()
    )
    tab = _Table(joint, variables)
    card = {v: joint.shape[joint.ndim - len(variables) + i] for i, v in enumerate(variables)}
    sigma = {v: as_state(val, card[v], joint, f"do[{v!r}]") for v, val in do.items()}
    x = tuple(do)
    if ident.method in ("id", "idc"):
        value, comb = _by_formula(ident, joint, variables, sigma, evidence, card), {}
    elif ident.method == "no-effect":
        value, comb = _no_effect(tab, query, sigma)
    elif ident.method == "back-door":
        value, comb = _back_door(tab, x, ident.adjustment_set, query, sigma)
    else:
        value, comb = _front_door(tab, x, ident.mediators, ident.adjustment_set, query, sigma)
    if not return_details:
        return value
    return CausalEffect(
        value, ident.method, ident.adjustment_set, ident.mediators, ident.formula, comb
    )


def _zero(term: str, den: str) -> None:
    raise NoFullSupportError(
        f"Expected an observational joint with full support (the identification formula "
        f"divides by {den} in {term}), but found {den} = 0"
    )


def _by_formula(ident, joint, variables, sigma, evidence, card) -> torch.Tensor:
    """Evaluate the ID/IDC formula: ``Σ_x σ(x) P(query | do(x), evidence)``."""
    lam = {v: as_state(val, card[v], joint, f"evidence[{v!r}]") for v, val in evidence.items()}
    hard = {**sigma, **lam} if evidence else lam
    for v, s in hard.items():
        if not bool(((s == 0) | (s == 1)).all()):
            raise ArgumentError(
                f"Expected hard (integer) values for {v!r} in a conditional query (a soft "
                f"intervention or soft evidence does not factor through P(y | do(x), z)), "
                f"but found {s}"
            )
    return effect_value(ident.expression, joint, variables, sigma, lam, _zero)
