"""Benchmark: interventional queries on bnlearn networks bundled with pgmpy.

ppltk (``interventional``: string-diagram surgery + one einsum) vs pgmpy
(``CausalInference.query``: back-door adjustment over the parents of the intervened variable,
with variable elimination), in one process on one torch thread.  Queries ``P(Y | do(X = x0))``
with ``Y`` a descendant of ``X`` (pgmpy refuses other directions); all variables are observed,
so pgmpy's default adjustment set (the parents of ``X``) is a valid back-door set and both must
agree.  Writes ``benchmarks/results/causal.json`` and ``.md``.

Second part, **identification** (``--no-identification`` skips it): ppltk ``identify``
(fast paths, then complete ID) vs y0 ``identify_outcomes`` (symbolic ID, no numbers) vs pgmpy
(back-door / front-door set search, which is all it can compute from), on random
semi-Markovian graphs with 5–7 observed nodes and on the alarm network with hidden
confounders; ppltk's numbers (``effect_from_joint``) are checked against surgery on the true
model.  y0 runs in its own interpreter (its pins clash with ours): set ``PPLTK_Y0_PYTHON`` to a
Python with y0 installed (``python -m venv /tmp/y0env && /tmp/y0env/bin/pip install y0``);
without it the y0 columns read "unavailable".

Run: ``OMP_NUM_THREADS=1 .venv/bin/python benchmarks/causal.py [--fast]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import time
import warnings
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import networkx as nx
import torch

torch.set_num_threads(1)

from ppltk.causal import CausalModel, interventional
from ppltk.causal.pgmpy_interop import from_pgmpy

NETWORKS = ["asia", "sachs", "child", "insurance", "alarm"]


def load_network(name: str):
    """The pgmpy model of a bundled bnlearn network (no network access needed)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # get_example_model reads the copy bundled with pgmpy; load_model may try the network
        from pgmpy.utils import get_example_model

        return get_example_model(name)


def pick_queries(graph: nx.DiGraph, n: int, seed: int) -> list[tuple[str, str]]:
    """``n`` pairs (X, Y) with Y a descendant of X and X having parents (adjustment needed)."""
    gen = torch.Generator().manual_seed(seed)
    pairs = [
        (x, y)
        for x in sorted(graph)
        if graph.in_degree(x) > 0
        for y in sorted(nx.descendants(graph, x))
    ]
    idx = torch.randperm(len(pairs), generator=gen)[:n].tolist()
    return [pairs[i] for i in idx]


def _time(fn, repeat: int) -> tuple[float, float, object]:
    """(first-call seconds, median seconds of ``repeat`` further calls, result).

    The median resists the noise of a shared machine.
    """
    t0 = time.perf_counter()
    out = fn()  # first call: for ppltk this includes the einsum path search
    cold = time.perf_counter() - t0
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return cold, statistics.median(times), out


def bench_network(name: str, n_queries: int, repeat: int) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgmpy.inference import CausalInference

        model = load_network(name)
        ci = CausalInference(model)
    graph, cpts, states = from_pgmpy(model)
    t0 = time.perf_counter()
    cm = CausalModel(graph, cpts)  # validated once, like pgmpy's CausalInference object
    t_build = time.perf_counter() - t0
    rows = []
    for x, y in pick_queries(graph, n_queries, seed=0):

        def ours(x=x, y=y):
            return cm.interventional((y,), {x: 0})

        def theirs(x=x, y=y):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return ci.query([y], do={x: states[x][0]}, show_progress=False)

        def one_shot(x=x, y=y):  # the functional API: validates the tables on every call
            return interventional(graph, cpts, (y,), {x: 0})

        cold, t_ours, p_ours = _time(ours, repeat)
        _, t_shot, _ = _time(one_shot, 3)
        _, t_theirs, f = _time(theirs, 3)
        p_theirs = torch.as_tensor(f.values, dtype=torch.float64)
        rows.append(
            {
                "x": x,
                "y": y,
                "ppltk_s": t_ours,
                "ppltk_first_s": cold,
                "ppltk_one_shot_s": t_shot,
                "pgmpy_s": t_theirs,
                "max_abs_diff": float((p_ours - p_theirs).abs().max()),
            }
        )
    n = len(rows)
    t_o = sum(r["ppltk_s"] for r in rows) / n
    t_p = sum(r["pgmpy_s"] for r in rows) / n
    return {
        "network": name,
        "nodes": graph.number_of_nodes(),
        "edges": graph.number_of_edges(),
        "queries": n,
        "ppltk_ms_per_query": 1e3 * t_o,
        "pgmpy_ms_per_query": 1e3 * t_p,
        "ppltk_first_call_ms": 1e3 * sum(r["ppltk_first_s"] for r in rows) / n,
        "ppltk_build_ms": 1e3 * t_build,
        "ppltk_one_shot_ms": 1e3 * sum(r["ppltk_one_shot_s"] for r in rows) / n,
        "speedup": t_p / t_o,
        "max_abs_diff": max(r["max_abs_diff"] for r in rows),
        "rows": rows,
    }


Y0_RUNNER = r"""
import json, sys, time
from y0.graph import NxMixedGraph
from y0.dsl import Variable
from y0.algorithm.identify import identify_outcomes

out = []
for item in json.load(sys.stdin):
    v = {n: Variable(n) for n in item["nodes"]}
    g = NxMixedGraph.from_edges(
        nodes=list(v.values()),
        directed=[(v[a], v[b]) for a, b in item["directed"]],
        undirected=[(v[a], v[b]) for a, b in item["bidirected"]],
    )
    times, text = [], None
    for _ in range(item["repeat"]):
        t = time.perf_counter()
        try:
            r = identify_outcomes(g, treatments={v[x] for x in item["x"]},
                                  outcomes={v[y] for y in item["y"]})
            text = None if r is None else str(r)
        except Exception as e:
            text = "error: " + type(e).__name__
        times.append(time.perf_counter() - t)
    out.append({"s": sorted(times)[len(times) // 2], "formula": text})
print(json.dumps(out))
"""


def run_y0(items: list[dict]) -> list[dict] | str:
    """y0's identification of each item, in the interpreter named by ``PPLTK_Y0_PYTHON``."""
    python = os.environ.get("PPLTK_Y0_PYTHON")
    if not python:
        return "unavailable (set PPLTK_Y0_PYTHON)"
    proc = subprocess.run(
        [python, "-c", Y0_RUNNER],
        input=json.dumps(items),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if proc.returncode:
        return f"unavailable ({proc.stderr.strip().splitlines()[-1][:100]})"
    return json.loads(proc.stdout)


def _random_semi_markovian(gen, n_obs):
    names = [f"V{i}" for i in range(n_obs)]
    g = nx.DiGraph()
    g.add_nodes_from(names)
    for j in range(n_obs):
        for i in range(j):
            if torch.rand((), generator=gen).item() < 0.45:
                g.add_edge(names[i], names[j])
    latent = set()
    for k in range(int(torch.randint(0, 4, (), generator=gen))):
        a, b = torch.randperm(n_obs, generator=gen)[:2].tolist()
        g.add_edges_from([(f"U{k}", names[a]), (f"U{k}", names[b])])
        latent.add(f"U{k}")
    return g, latent, names


def _tables(graph, gen):
    cpts = {}
    for v in nx.topological_sort(graph):
        parents = tuple(sorted(graph.predecessors(v)))
        t = torch.rand(*(2,) * len(parents), 2, generator=gen, dtype=torch.float64) + 0.05
        cpts[v] = (parents, t / t.sum(-1, keepdim=True))
    return cpts


def _pgmpy_sets(graph, latent, x, y) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pgmpy.inference import CausalInference
        from pgmpy.models import DiscreteBayesianNetwork

        bn = DiscreteBayesianNetwork(list(graph.edges), latents=set(latent))
        bn.add_nodes_from(graph.nodes)
        ci = CausalInference(bn)
        try:
            if ci.get_minimal_adjustment_set(x, y) is not None:
                return "back-door"
        except ValueError:  # "start and end are adjacent" (e.g. Y -> X): no separator
            pass
        # its front-door search enumerates subsets of all nodes: feasible on small graphs only
        if graph.number_of_nodes() <= 16 and ci.get_all_frontdoor_adjustment_sets(x, y):
            return "front-door"
    return "none"


def identification_cases(fast: bool) -> list[dict]:
    """(graph, latent, observed, x, y, cpts or None) for the random graphs and alarm."""
    gen = torch.Generator().manual_seed(0)
    cases = []
    for n_x in (1, 2):
        for i in range(40 if fast else 300):
            g, latent, obs = _random_semi_markovian(gen, 5 + i % 3)
            perm = torch.randperm(len(obs), generator=gen).tolist()
            cases.append(
                {
                    "set": f"random 5-7, {n_x} treatment{'s' if n_x > 1 else ''}",
                    "graph": g,
                    "latent": latent,
                    "obs": obs,
                    "x": [obs[j] for j in perm[:n_x]],
                    "y": obs[perm[n_x]],
                    "cpts": _tables(g, gen),
                }
            )
    try:
        alarm = load_network("alarm")
    except Exception:  # pgmpy without its bundled networks
        return cases
    g0 = nx.DiGraph(alarm.edges)
    g0.add_nodes_from(alarm.nodes)
    confounders = sorted(v for v in g0 if g0.out_degree(v) >= 2)
    for _ in range(10 if fast else 60):
        perm = torch.randperm(len(confounders), generator=gen).tolist()
        latent = {confounders[j] for j in perm[:6]}
        obs = sorted(set(g0) - latent)
        pairs = [(x, y) for x in obs for y in sorted(nx.descendants(g0, x)) if y in obs]
        x, y = pairs[int(torch.randint(len(pairs), (), generator=gen))]
        cases.append(
            {"set": "alarm, 6 hidden", "graph": g0, "latent": latent, "obs": obs, "x": [x], "y": y}
        )
    return cases


def bench_identification(fast: bool) -> dict:
    from ppltk.causal import ADMG, NotIdentifiableError, effect_from_joint, identify

    cases = identification_cases(fast)
    repeat = 3 if fast else 5
    items = []
    for c in cases:
        c["method"], c["ppltk_ms"] = None, None
        cold, t, res = _time(lambda c=c: _try_identify(identify, NotIdentifiableError, c), repeat)
        c["ppltk_ms"], c["method"] = 1e3 * t, res
        t0 = time.perf_counter()
        c["pgmpy"] = (
            _pgmpy_sets(c["graph"], c["latent"], c["x"][0], c["y"]) if len(c["x"]) == 1 else "n/a"
        )
        c["pgmpy_ms"] = 1e3 * (time.perf_counter() - t0)
        admg = ADMG.from_dag(c["graph"], c["obs"])
        items.append(
            {
                "nodes": list(admg.nodes),
                "directed": [(p, v) for v in admg.nodes for p in sorted(admg.parents[v])],
                "bidirected": [sorted(e) for e in admg.bidirected],
                "x": c["x"],
                "y": [c["y"]],
                "repeat": repeat,
            }
        )
        if c.get("cpts") is not None and res != "refused":  # numbers vs surgery on the model
            joint = interventional(c["graph"], c["cpts"], tuple(c["obs"]))
            t0 = time.perf_counter()
            got = effect_from_joint(
                c["graph"], c["latent"], joint, c["obs"], (c["y"],), {x: 1 for x in c["x"]}
            )
            c["eval_ms"] = 1e3 * (time.perf_counter() - t0)
            truth = interventional(c["graph"], c["cpts"], (c["y"],), {x: 1 for x in c["x"]})
            c["err"] = float((got - truth).abs().max())
    y0 = run_y0(items)
    rows = []
    for name in dict.fromkeys(c["set"] for c in cases):
        sub = [(i, c) for i, c in enumerate(cases) if c["set"] == name]
        ours = [c for _, c in sub]
        row = {
            "set": name,
            "queries": len(sub),
            "ppltk_identified": sum(c["method"] != "refused" for c in ours),
            "ppltk_by_complete_id": sum(c["method"] == "id" for c in ours),
            "ppltk_identify_ms": statistics.median(c["ppltk_ms"] for c in ours),
            "pgmpy_backdoor": sum(c["pgmpy"] == "back-door" for c in ours),
            "pgmpy_frontdoor_only": sum(c["pgmpy"] == "front-door" for c in ours),
            "pgmpy_search_ms": statistics.median(c["pgmpy_ms"] for c in ours),
            "pgmpy_applicable": all(c["pgmpy"] != "n/a" for c in ours),
        }
        evals = [c for c in ours if "eval_ms" in c]
        if evals:
            row["ppltk_effect_ms"] = statistics.median(c["eval_ms"] for c in evals)
            row["ppltk_max_abs_err"] = max(c["err"] for c in evals)
        if isinstance(y0, list):
            theirs = [y0[i] for i, _ in sub]
            row["y0_identified"] = sum(
                t["formula"] is not None and not t["formula"].startswith("error") for t in theirs
            )
            row["y0_errors"] = sum(
                bool(t["formula"] and t["formula"].startswith("error")) for t in theirs
            )
            row["y0_identify_ms"] = statistics.median(1e3 * t["s"] for t in theirs)
            row["decisions_disagree"] = sum(
                (c["method"] != "refused") != (t["formula"] is not None)
                for c, t in zip(ours, theirs)
                if not (t["formula"] or "").startswith("error")
            )
        else:
            row["y0"] = y0
        rows.append(row)
    return {"rows": rows, "napkin": _napkin_y0()}


def _try_identify(identify, not_identifiable, c) -> str:
    try:
        return identify(c["graph"], c["obs"], c["x"], [c["y"]]).method
    except not_identifiable:
        return "refused"


def _napkin_y0() -> dict:
    """The napkin: ppltk's formula, and y0's answer (P(Y | X), which is not the effect)."""
    from ppltk.causal import identify

    g = nx.DiGraph(
        [("W1", "W2"), ("W2", "X"), ("X", "Y"), ("U1", "W1"), ("U1", "X"), ("U2", "W1")]
        + [("U2", "Y")]
    )
    ours = identify(g, {"W1", "W2", "X", "Y"}, ["X"], ["Y"]).formula
    item = {
        "nodes": ["W1", "W2", "X", "Y"],
        "directed": [("W1", "W2"), ("W2", "X"), ("X", "Y")],
        "bidirected": [("W1", "X"), ("W1", "Y")],
        "x": ["X"],
        "y": ["Y"],
        "repeat": 1,
    }
    theirs = run_y0([item])
    return {"ppltk": ours, "y0": theirs[0]["formula"] if isinstance(theirs, list) else theirs}


def identification_markdown(ident: dict) -> str:
    lines = [
        "",
        "## Identification",
        "",
        "| graphs | queries | ppltk identified (by complete ID) | ppltk identify ms | "
        "ppltk effect ms | ppltk max abs err | y0 identified | y0 ms | decisions disagree | "
        "pgmpy back-door / front-door only | pgmpy ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in ident["rows"]:
        y0 = (
            f"{r['y0_identified']} | {r['y0_identify_ms']:.2f} | {r['decisions_disagree']}"
            if "y0_identified" in r
            else f"{r['y0']} | – | –"
        )
        ev = (
            f"{r['ppltk_effect_ms']:.2f} | {r['ppltk_max_abs_err']:.1e}"
            if "ppltk_effect_ms" in r
            else "– (37 variables: no joint table) | –"
        )
        lines.append(
            f"| {r['set']} | {r['queries']} | {r['ppltk_identified']} "
            f"({r['ppltk_by_complete_id']}) | {r['ppltk_identify_ms']:.2f} | {ev} | {y0} | "
            + (
                f"{r['pgmpy_backdoor']} / {r['pgmpy_frontdoor_only']} | "
                f"{r['pgmpy_search_ms']:.2f} |"
                if r["pgmpy_applicable"]
                else "– (single treatment only) | – |"
            )
        )
    lines += [
        "",
        "P(Y | do(X)) for one random query per graph (X one or two treatments); times are medians per "
        "query. ppltk identify = fast paths then complete ID (public API, latent projection "
        "included); y0 = identify_outcomes on the same projected ADMG; pgmpy can only adjust, "
        "so its columns count queries with a back-door set, or a front-door set only (which its "
        "query cannot compute with latents; searched on graphs of at most 16 nodes: pgmpy's "
        "search enumerates node subsets). 'decisions disagree' counts queries that one of "
        "ppltk and y0 identifies and the other refuses. ppltk effect = effect_from_joint on the "
        "exact observational joint; error vs surgery on the true model.",
        "",
        f"Napkin: ppltk `{ident['napkin']['ppltk']}`; y0 `{ident['napkin']['y0']}` "
        "(P(Y | X) is not the effect: the back-door path X ← W2 ← W1 ↔ Y is open).",
    ]
    return "\n".join(lines) + "\n"


def machine() -> dict:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "loadavg": os.getloadavg(),
    }


def to_markdown(results: list[dict], info: dict) -> str:
    lines = [
        "# Causal queries: ppltk vs pgmpy and y0 (one thread)",
        "",
        "| network | nodes | queries | ppltk ms/query | ppltk first call ms | ppltk one-shot ms "
        "| pgmpy ms/query | speed-up | max abs diff |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if "error" in r:
            lines.append(
                f"| {r['network']} | – | – | – | – | – | – | – | unavailable: {r['error']} |"
            )
            continue
        lines.append(
            f"| {r['network']} | {r['nodes']} | {r['queries']} | "
            f"{r['ppltk_ms_per_query']:.2f} | {r['ppltk_first_call_ms']:.2f} | "
            f"{r['ppltk_one_shot_ms']:.2f} | "
            f"{r['pgmpy_ms_per_query']:.2f} | "
            f"{r['speedup']:.1f}× | {r['max_abs_diff']:.1e} |"
        )
    lines.append("")
    lines.append(
        "Queries P(Y | do(X = first state)), Y a descendant of X; all nodes observed, so "
        "pgmpy's back-door set (parents of X) is valid. ppltk: CausalModel built once; "
        "'first call' includes the einsum path search (cached afterwards); 'one-shot' is "
        "interventional(graph, cpts, ...), which validates the tables on every call; times are "
        "medians; speed-up = pgmpy / ppltk ms/query. Differences "
        "~1e-9 come from renormalising pgmpy's rounded tables on import."
    )
    lines.append(
        f"Machine: {info['platform']}, torch {info['torch']}, "
        f"{info['torch_threads']} torch thread, load average {info['loadavg']}."
    )
    return "\n".join(lines) + "\n"


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fast", action="store_true", help="few queries (smoke run)")
    ap.add_argument("--networks", nargs="*", default=NETWORKS)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--no-identification", action="store_true", help="skip the ID part")
    args = ap.parse_args(argv)
    n_queries, repeat = (3, 3) if args.fast else (20, 10)
    # warm-up outside the timings (imports, first torch/opt_einsum calls)
    g0 = nx.DiGraph([("A", "B")])
    c0 = {
        "A": ((), torch.tensor([0.5, 0.5], dtype=torch.float64)),
        "B": (("A",), torch.eye(2, dtype=torch.float64)),
    }
    CausalModel(g0, c0).interventional(("B",), {"A": 0})
    results = []
    for name in args.networks:
        try:
            results.append(bench_network(name, n_queries, repeat))
        except Exception as err:  # a network missing from the installed pgmpy
            results.append({"network": name, "error": f"{type(err).__name__}: {err}"[:120]})
        print(results[-1].get("network"), {k: v for k, v in results[-1].items() if k != "rows"})
    ident = None if args.no_identification else bench_identification(args.fast)
    info = machine()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"machine": info, "results": results, "identification": ident}
    (out / "causal.json").write_text(json.dumps(payload, indent=1))
    md = to_markdown(results, info)
    if ident is not None:
        md += identification_markdown(ident)
    (out / "causal.md").write_text(md)
    print(md)
    return results


if __name__ == "__main__":
    main()
