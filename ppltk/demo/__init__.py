"""``ppltk demo``: run every capability on a built-in example and write an HTML report.

The tour lives here, out of the library packages: ``ppltk.demo.<capability>.run_demo(fast,
outdir) -> list[dict]`` with rows keyed ``capability``, ``check``, ``value``, ``reference``
and ``figure``. Importing it changes nothing in the caller's process; each demo runs inside
:func:`isolated_globals` (one torch thread, matplotlib's Agg backend, a forked torch random
state), which restores all three afterwards.
"""

from __future__ import annotations

import contextlib
import html
import importlib
import os
import time
import traceback
from pathlib import Path

import torch

from ppltk.errors import ArgumentError

CAPABILITIES: dict[str, str] = {
    "mcmc": "Batched-chain NUTS/HMC",
    "smc": "Composable SMC",
    "filtering": "Discriminative Kalman filter",
    "sde": "Fractional-noise SDE inference",
    "continual": "Sequential continual learning",
    "causal": "String-diagram causal surgery",
    "calibration": "Scale-out (Dask) and calibration",
    "amortized": "Amortized inference",
}


def _format(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


@contextlib.contextmanager
def isolated_globals():
    """One torch thread, matplotlib's Agg backend and a forked torch RNG for the block; the
    caller's thread count, backend and random state are restored after it."""
    import matplotlib.pyplot as plt

    threads, backend = torch.get_num_threads(), plt.get_backend()
    torch.set_num_threads(1)
    plt.switch_backend("Agg")
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        torch.set_num_threads(threads)
        with contextlib.suppress(Exception):  # e.g. an interactive backend without a display
            plt.switch_backend(backend)


def _run_one(name: str, fast: bool, outdir: Path) -> tuple[list[dict], float, str | None]:
    start = time.perf_counter()
    try:
        module = importlib.import_module(f"ppltk.demo.{name}")
        with isolated_globals():
            rows = module.run_demo(fast=fast, outdir=outdir)
        return rows, time.perf_counter() - start, None
    except Exception:  # noqa: BLE001 - one failing capability must not hide the others
        return [], time.perf_counter() - start, traceback.format_exc()


def _table(rows: list[dict]) -> str:
    columns = ("capability", "check", "value", "reference", "time")
    cells = [
        [
            str(row["capability"])[:40],
            str(row["check"])[:72],
            _format(row["value"]),
            _format(row.get("reference", "")),
            f"{row['seconds']:.1f}s",
        ]
        for row in rows
    ]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    line = "  ".join(
        c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(columns, widths))
    )
    out = [line, "-" * len(line)]
    for r in cells:
        out.append(
            "  ".join(
                c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))
            )
        )
    return "\n".join(out)


def _html(rows: list[dict], failures: dict[str, str], outdir: Path, fast: bool) -> Path:
    cells = []
    for row in rows:
        figure = row.get("figure")
        image = ""
        if figure:
            rel = os.path.relpath(Path(figure).resolve(), outdir.resolve())
            image = f'<img src="{html.escape(str(rel))}" alt="{html.escape(row["check"])}">'
        cells.append(
            "<tr>"
            + "".join(
                f"<td>{html.escape(_format(row.get(k, '')))}</td>"
                for k in ("capability", "check", "value", "reference")
            )
            + f"<td>{row['seconds']:.1f}s</td><td>{image}</td></tr>"
        )
    errors = "".join(
        f"<h3>{html.escape(k)} failed</h3><pre>{html.escape(v)}</pre>" for k, v in failures.items()
    )
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>ppltk demo report</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{border-bottom:1px solid #ddd;padding:6px;
vertical-align:top}}img{{max-width:480px}}</style></head><body>
<h1>ppltk demo report</h1><p>mode: {"fast" if fast else "full"}; torch {torch.__version__};
one thread.</p><table><tr><th>capability</th><th>check</th><th>value</th><th>reference</th>
<th>time</th><th>figure</th></tr>{"".join(cells)}</table>{errors}</body></html>"""
    path = outdir / "index.html"
    path.write_text(page)
    return path


def run_demos(
    only: list[str] | None = None, fast: bool = False, outdir: Path | str = "ppltk-report"
) -> int:
    """Run the demos of ``only`` (default: all), print a table, write ``outdir/index.html``.

    Returns the process exit code: 0 when every demo ran, 1 otherwise.
    """
    names = list(only or CAPABILITIES)
    unknown = [n for n in names if n not in CAPABILITIES]
    if unknown:
        raise ArgumentError(f"Expected --only in {sorted(CAPABILITIES)}, but found {unknown}")
    outdir = Path(outdir)
    (outdir / "figures").mkdir(parents=True, exist_ok=True)
    rows, failures = [], {}
    for name in names:
        print(f"[ppltk demo] {CAPABILITIES[name]} ...", flush=True)
        found, seconds, error = _run_one(name, fast, outdir / "figures")
        if error:
            failures[name] = error
            print(error.strip().splitlines()[-1])
        for row in found:
            rows.append(
                {**row, "capability": CAPABILITIES[name], "seconds": seconds / max(len(found), 1)}
            )
    print()
    print(_table(rows))
    report = _html(rows, failures, outdir, fast)
    print(f"\nreport: {report.resolve()}")
    if failures:
        print(f"failed: {', '.join(failures)}")
    return 1 if failures else 0
