"""The ``ppltk`` command: ``--version``, ``run`` (infer a model from a file) and ``demo``."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from ppltk._version import __version__
from ppltk.errors import ArgumentError, PpltkError


def _load_model(spec: str) -> Callable:
    """Load ``path/to/file.py:function`` as a callable."""
    path, sep, name = spec.rpartition(":")
    if not sep or not path or not name:
        raise ArgumentError(f"Expected MODEL as 'path/to/model.py:function', but found {spec!r}")
    file = Path(path)
    if not file.is_file():
        raise ArgumentError(f"Model file {str(file)!r} does not exist")
    module_spec = importlib.util.spec_from_file_location(file.stem, file)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not callable(getattr(module, name, None)):
        raise ArgumentError(f"{str(file)!r} has no callable named {name!r}")
    return getattr(module, name)


def _load_data(path: str | None) -> dict:
    """Read model keyword arguments from JSON; numeric lists become float tensors."""
    if path is None:
        return {}
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ArgumentError(f"Could not read --data {path!r}: {error}") from error
    if not isinstance(raw, dict):
        raise ArgumentError(
            f"Expected --data to hold a JSON object, but found {type(raw).__name__}"
        )
    return {
        k: torch.tensor(v, dtype=torch.get_default_dtype()) if isinstance(v, (list, float)) else v
        for k, v in raw.items()
    }


def _run(args: argparse.Namespace) -> int:
    from ppltk._methods import MCMC_METHODS, get_method

    model = _load_model(args.model)
    data = _load_data(args.data)
    entry, fixed = get_method(args.method)
    if args.method in MCMC_METHODS:
        options = dict(num_chains=args.chains, num_samples=args.samples, num_warmup=args.warmup)
    else:
        options = dict(num_particles=args.particles)
    result = entry(model, seed=args.seed, progress=not args.quiet, **fixed, **options, **data)
    import pandas as pd

    with pd.option_context("display.width", 120, "display.max_columns", 20):
        print(result.summary())
    if result.log_evidence is not None:
        print(f"log evidence: {result.log_evidence:.4f}")
    if args.out:
        print(f"wrote {result.save(args.out)}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from ppltk.demo import run_demos

    return run_demos(only=args.only, fast=args.fast, outdir=Path(args.out))


def build_parser() -> argparse.ArgumentParser:
    from ppltk._methods import method_names

    parser = argparse.ArgumentParser(prog="ppltk", description=__doc__)
    parser.add_argument("--version", action="version", version=f"ppltk {__version__}")
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="infer a Pyro model defined in a Python file")
    run.add_argument("model", help="path/to/model.py:function")
    run.add_argument("--data", help="JSON file of keyword arguments for the model")
    run.add_argument("--method", default="nuts", choices=method_names())
    run.add_argument("--chains", type=int, default=4)
    run.add_argument("--samples", type=int, default=1000)
    run.add_argument("--warmup", type=int, default=1000)
    run.add_argument("--particles", type=int, default=1000)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--out", help="write the result here (netCDF)")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.set_defaults(handler=_run)
    demo = sub.add_parser("demo", help="a short tour of every capability, with an HTML report")
    demo.add_argument("--only", action="append", help="run only this capability (repeatable)")
    demo.add_argument("--fast", action="store_true", help="smaller sizes (about a minute)")
    demo.add_argument("--out", default="ppltk-report", help="report folder (default ppltk-report)")
    demo.set_defaults(handler=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    torch.set_num_threads(1)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 0
    try:
        return args.handler(args)
    except PpltkError as error:
        print(f"ppltk: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
