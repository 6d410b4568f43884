"""Property: hostile input to the filters and to causal surgery gets a finite answer or a
``ppltk.errors`` exception -- never a raw exception, never a silent NaN.

Random shapes, dtypes, NaN/inf placements and option values are thrown at the Kalman
family's ``fit``/``filter``/``step`` (KF, EKF, UKF, DKF) and at
:func:`ppltk.causal.interventional`. Warnings are errors in this suite, so a warning
would also fail the property (ppltk's own warnings excepted).
"""

from __future__ import annotations

import warnings

import networkx as nx
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ppltk.causal import interventional
from ppltk.errors import PpltkError, PpltkWarning
from ppltk.filtering import (
    DiscriminativeKalmanFilter,
    ExtendedKalmanFilter,
    KalmanFilter,
    UnscentedKalmanFilter,
)

SETTINGS = settings(
    max_examples=int(__import__("os").environ.get("PPLTK_PROPERTY_EXAMPLES", 60)),
    deadline=None,
    derandomize=not __import__("os").environ.get("PPLTK_PROPERTY_EXAMPLES"),  # fixed in CI
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
DTYPES = [torch.float64, torch.float32, torch.float16, torch.int64, torch.bool]


def _finite(*values) -> bool:
    out = []
    for v in values:
        if isinstance(v, tuple):  # GaussianState and (means, covs)
            out.append(_finite(*v))
        elif isinstance(v, torch.Tensor):
            out.append(bool(torch.isfinite(v).all()))
    return all(out)


def _call(fn, *args, **kwargs):
    """Run ``fn``; a ppltk error passes, anything else (or NaN output) fails the property."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PpltkWarning)  # fixes/fallbacks may warn by design
        try:
            out = fn(*args, **kwargs)
        except PpltkError:
            return None
    assert _finite(out), f"non-finite output from {getattr(fn, '__name__', fn)}: {out}"
    return out


@st.composite
def tensors(draw, shape, allow_bad=True, scale=None):
    """A tensor of ``shape`` (sometimes perturbed) with a random dtype and NaN/inf spots."""
    shape = list(shape)
    if allow_bad and shape and draw(st.integers(0, 14)) == 0:  # a wrong shape now and then
        i = draw(st.integers(0, len(shape) - 1))
        shape[i] = draw(st.integers(0, 3))
    rare_dtype = allow_bad and draw(st.integers(0, 5)) == 0
    dtype = draw(st.sampled_from(DTYPES)) if rare_dtype else torch.float64
    seed = draw(st.integers(0, 2**16))
    scales = [1.0] * 6 + [1e-8, 1e8, -1.0]
    scale = draw(st.sampled_from(scales)) if scale is None else scale
    value = torch.as_tensor(np.random.default_rng(seed).normal(size=shape) * scale)
    if allow_bad and value.numel() and draw(st.integers(0, 7)) == 0:
        flat = value.reshape(-1)
        spot = draw(st.integers(0, flat.numel() - 1))
        flat[spot] = draw(st.sampled_from([float("nan"), float("inf"), -float("inf"), 1e300]))
    return value.to(dtype)


@st.composite
def covariances(draw, n, allow_bad=True):
    base = draw(tensors((n, n), allow_bad=False, scale=1.0))
    cov = base @ base.mT / n + 0.5 * torch.eye(n, dtype=torch.float64)
    if allow_bad:
        kind = draw(st.sampled_from(["ok"] * 12 + ["negative", "asymmetric", "bad"]))
        if kind == "negative":
            cov = -0.05 * cov
        elif kind == "asymmetric":
            cov = cov + torch.triu(torch.ones(n, n, dtype=torch.float64), 1)
        elif kind == "bad":
            return draw(tensors((n, n)))
    rare_dtype = allow_bad and draw(st.integers(0, 9)) == 0
    return cov.to(draw(st.sampled_from(DTYPES if rare_dtype else DTYPES[:2])))


@st.composite
def linear_filters(draw):
    d, m = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    A = 0.9 * torch.eye(d, dtype=torch.float64) if draw(st.booleans()) else draw(tensors((d, d)))
    parts = dict(Gamma=draw(covariances(d)), H=draw(tensors((m, d))), R=draw(covariances(m)))
    kind = draw(st.sampled_from(["kf", "ekf", "ukf"]))
    if kind == "kf":
        return m, lambda: KalmanFilter(A, parts["Gamma"], parts["H"], parts["R"])
    cls = ExtendedKalmanFilter if kind == "ekf" else UnscentedKalmanFilter
    m0, P0 = draw(tensors((d,))), draw(covariances(d))
    return m, lambda: cls(A, parts["H"], parts["Gamma"], parts["R"], m0, P0)


@st.composite
def streams(draw, m):
    T = draw(st.integers(0, 5))
    batch = draw(st.sampled_from([(), (2,)]))
    X = draw(tensors((*batch, T, m), scale=draw(st.sampled_from([1.0, 1.0, 1e6, 1e-6]))))
    if X.is_floating_point() and X.numel() and draw(st.booleans()):
        X = X.clone()
        X[..., 0, :] = float("nan")  # a missing row
    return X


@SETTINGS
@given(data=st.data())
def test_kalman_family_filter_step_smooth(data):
    m, build = data.draw(linear_filters())
    filt = _call(build)
    if filt is None:
        return
    X = data.draw(streams(m))
    _call(filt.filter, X)
    _call(filt.log_likelihood, X)
    if data.draw(st.booleans()):
        _call(filt.smooth, X)
    for t in range(min(X.shape[-2], 3)):
        _call(filt.step, X[..., t, :])


@st.composite
def training_pairs(draw):
    T, n, d = draw(st.integers(0, 40)), draw(st.integers(1, 4)), draw(st.integers(1, 2))
    seed = draw(st.integers(0, 2**16))
    rng = np.random.default_rng(seed)
    Z = np.zeros((T, d))
    for t in range(1, T):
        Z[t] = 0.8 * Z[t - 1] + 0.5 * rng.normal(size=d)
    X = Z @ rng.normal(size=(d, n)) + 0.3 * rng.normal(size=(T, n))
    X, Z = torch.as_tensor(X), torch.as_tensor(Z)
    if draw(st.integers(0, 3)) == 0 and X.numel():
        X[draw(st.integers(0, T - 1)), 0] = draw(st.sampled_from([float("nan"), float("inf")]))
    if draw(st.integers(0, 4)) == 0:
        X = X.to(draw(st.sampled_from(DTYPES)))
    if draw(st.integers(0, 6)) == 0:
        Z = Z[:, None] if draw(st.booleans()) else Z[: max(T - 1, 0)]
    return X, Z


@SETTINGS
@given(data=st.data())
def test_fit_then_filter_kf_and_dkf(data):
    X, Z = data.draw(training_pairs())
    kind = data.draw(st.sampled_from(["kf", "dkf"]))
    if kind == "kf":
        filt = _call(KalmanFilter().fit, X, Z)
    else:
        fix = data.draw(st.sampled_from(["drop_prior", "inflate", "clip", "raise"]))
        dkf = _call(DiscriminativeKalmanFilter, "linear", "constant", nonpd_fix=fix)
        filt = None if dkf is None else _call(dkf.fit, X, Z)
    if filt is None:
        return
    stream = data.draw(streams(X.shape[-1]))
    _call(filt.filter, stream)
    if stream.shape[-2] > 0:
        _call(filt.step, stream[..., 0, :])


@st.composite
def causal_models(draw):
    """A random DAG on up to three nodes with tables that are sometimes invalid."""
    names = ["A", "B", "C"][: draw(st.integers(1, 3))]
    graph = nx.DiGraph()
    graph.add_nodes_from(names)
    for i, child in enumerate(names):
        for parent in names[:i]:
            if draw(st.booleans()):
                graph.add_edge(parent, child)
    if len(names) > 1 and draw(st.integers(0, 14)) == 0:
        graph.add_edge(names[-1], names[0])  # a cycle
    card = {v: draw(st.integers(1, 3)) for v in names}
    cpts = {}
    for v in names:
        parents = tuple(graph.predecessors(v))
        shape = [card[p] for p in parents] + [card[v]]
        seed = draw(st.integers(0, 2**16))
        table = torch.as_tensor(np.random.default_rng(seed).dirichlet(np.ones(card[v]), shape[:-1]))
        table = table.reshape(shape)
        bad = draw(st.integers(0, 19))
        if bad == 0:
            table = table.clone().reshape(-1)
            table[0] = draw(st.sampled_from([float("nan"), float("inf"), -0.5, 2.0]))
            table = table.reshape(shape)
        elif bad == 1:
            table = table.to(draw(st.sampled_from(DTYPES)))
        cpts[v] = (parents, table)
    return graph, cpts, card


def _do_value(draw, card):
    kind = draw(st.sampled_from(["int"] * 6 + ["vector"] * 3 + ["nan", "float", "bool", "list"]))
    if kind == "int":
        return draw(st.integers(0, card - 1)) if draw(st.integers(0, 5)) else card
    if kind == "vector":
        p = np.random.default_rng(draw(st.integers(0, 999))).dirichlet(np.ones(card))
        return torch.as_tensor(p)
    if kind == "nan":
        return torch.full((card,), float("nan"))
    if kind == "float":
        return draw(st.floats(allow_nan=True, allow_infinity=True))
    if kind == "bool":
        return draw(st.booleans())
    return [0.5] * draw(st.integers(0, 3))


@SETTINGS
@given(data=st.data())
def test_causal_interventional(data):
    graph, cpts, card = data.draw(causal_models())
    names = list(card) + ["Z"]
    valid = list(card)
    pool = names if data.draw(st.integers(0, 5)) == 0 else valid  # a foreign name now and then
    query = tuple(data.draw(st.lists(st.sampled_from(pool), min_size=1, max_size=2, unique=True)))
    if data.draw(st.integers(0, 9)) == 0:
        query = data.draw(st.sampled_from([(), query + query]))
    do_kind = data.draw(st.sampled_from(["mapping"] * 8 + ["string", "none"]))
    if do_kind == "mapping":
        chosen = data.draw(st.lists(st.sampled_from(pool), max_size=2, unique=True))
        do = {v: _do_value(data.draw, card.get(v, 2)) for v in chosen}
    else:
        do = data.draw(st.sampled_from(names)) if do_kind == "string" else None
    evidence = None
    if data.draw(st.integers(0, 3)) == 0:
        e = data.draw(st.sampled_from(pool))
        evidence = {e: _do_value(data.draw, card.get(e, 2))}
    route = data.draw(st.sampled_from(["point"] * 4 + ["condition"] * 4 + ["bogus"]))
    _call(interventional, graph, cpts, query, do, evidence, route)


def test_property_helper_rejects_raw_errors_and_nan():
    with pytest.raises(ZeroDivisionError):
        _call(lambda: 1 / 0)
    with pytest.raises(AssertionError, match="non-finite"):
        _call(lambda: torch.tensor([float("nan")]))
