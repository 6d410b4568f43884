"""The ``ppltk`` command: ``--version``, ``run`` (infer a model from a file) and ``demo``."""

from __future__ import annotations

import argparse
import importlib.util
import inspect
import json
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from ppltk._version import __version__
from ppltk.errors import ArgumentError, InterruptedWarning, PpltkError

EXIT_INTERRUPTED = 130  # the shell's code for a run ended by Ctrl-C (128 + SIGINT)


def _load_model(spec: str) -> Callable:
    """Load ``path/to/file.py:function`` as a callable.

    The file's folder is put first on ``sys.path``, so the model may import sibling modules.
    """
    path, sep, name = spec.rpartition(":")
    if not sep or not path or not name:
        raise ArgumentError(f"Expected MODEL as 'path/to/model.py:function', but found {spec!r}")
    file = Path(path)
    if not file.is_file():
        raise ArgumentError(f"Model file {str(file)!r} does not exist")
    folder = str(file.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    module_spec = importlib.util.spec_from_file_location(file.stem, file)
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as error:  # the user's file: report what broke, not our traceback
        raise ArgumentError(
            f"Could not import model file {str(file)!r}: {type(error).__name__}: {error}"
        ) from error
    if not callable(getattr(module, name, None)):
        raise ArgumentError(f"{str(file)!r} has no callable named {name!r}")
    return getattr(module, name)


def _as_value(key: str, value):
    """A JSON value as a model argument: numbers and (rectangular) numeric lists -> tensors."""
    if isinstance(value, (list, float)):
        try:
            return torch.tensor(value, dtype=torch.get_default_dtype())
        except (TypeError, ValueError, RuntimeError) as error:
            raise ArgumentError(
                f"Expected --data key {key!r} to be a number or a rectangular array of numbers, "
                f"but found a ragged or non-numeric list ({error})"
            ) from None
    return value


def _load_data(path: str | None) -> dict:
    """Read model keyword arguments from JSON; numeric lists become float tensors."""
    if path is None:
        return {}
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ArgumentError(
            f"Expected --data {path!r} to be a readable JSON text file, but found "
            f"{type(error).__name__}: {error}"
        ) from None
    if not isinstance(raw, dict):
        raise ArgumentError(
            f"Expected --data to hold a JSON object, but found {type(raw).__name__}"
        )
    return {k: _as_value(k, v) for k, v in raw.items()}


def _check_data_keys(data: dict, model: Callable, entry: Callable) -> None:
    """Refuse --data keys that are not the model's arguments or that are inference options.

    ``--data`` holds model data only: a key must name a parameter of the model, and may never
    name an option of the inference call (``seed``, ``checkpoint``, ``executor``, ...).
    """
    try:
        params = inspect.signature(model).parameters.values()
    except (TypeError, ValueError):  # no signature to read (a builtin): options are still refused
        params = [inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD)]
    named = {p.name for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    open_kwargs = any(p.kind is p.VAR_KEYWORD for p in params)
    options = {
        p.name
        for p in inspect.signature(entry).parameters.values()
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }
    clash = sorted(k for k in data if k in options)
    if clash:
        raise ArgumentError(
            f"Expected --data to hold model data only, but found inference options {clash}; "
            "set options with command-line flags"
        )
    unknown = sorted(k for k in data if k not in named)
    if unknown and not open_kwargs:
        raise ArgumentError(
            f"Expected --data keys among the model's arguments {sorted(named)}, but found {unknown}"
        )


def _check_out(out: str | None, force: bool) -> None:
    """Before any sampling: the --out folder exists and an existing file needs --force."""
    if out is None:
        return
    path = Path(out)
    if not path.parent.is_dir():
        raise ArgumentError(
            f"Expected --out in an existing folder, but {str(path.parent)!r} does not exist"
        )
    if path.is_dir():
        raise ArgumentError(f"Expected --out to be a file name, but {out!r} is a folder")
    if path.exists() and not force:
        raise ArgumentError(f"--out {out!r} exists; pass --force to overwrite it")


def _infer(entry: Callable, model: Callable, kwargs: dict):
    """Run the inference; returns ``(result, interrupted)`` (Ctrl-C keeps the draws so far)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InterruptedWarning)
        try:
            result = entry(model, **kwargs)
        except KeyboardInterrupt:
            return None, True
    for w in caught:  # pass every other warning on unchanged
        if not issubclass(w.category, InterruptedWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    interrupted = any(issubclass(w.category, InterruptedWarning) for w in caught)
    return result, interrupted or bool(result.attrs.get("interrupted", False))


def _run(args: argparse.Namespace) -> int:
    from ppltk._methods import MCMC_METHODS, get_method

    _check_out(args.out, args.force)
    model = _load_model(args.model)
    data = _load_data(args.data)
    entry, fixed = get_method(args.method)
    _check_data_keys(data, model, entry)
    if args.method in MCMC_METHODS:
        options = dict(num_chains=args.chains, num_samples=args.samples, num_warmup=args.warmup)
    else:
        options = dict(num_particles=args.particles)
    kwargs = dict(seed=args.seed, progress=not args.quiet, **fixed, **options, **data)
    result, interrupted = _infer(entry, model, kwargs)
    if result is None:
        print("ppltk: interrupted before any result; nothing written", file=sys.stderr)
        return EXIT_INTERRUPTED
    import pandas as pd

    if result.num_draws > 0:
        with pd.option_context("display.width", 120, "display.max_columns", 20):
            print(result.summary())
    if result.log_evidence is not None:
        print(f"log evidence: {result.log_evidence:.4f}")
    if args.out:
        partial = "partial result (interrupted run) " if interrupted else ""
        print(f"wrote {partial}{result.save(args.out)}")
    if interrupted:
        print(
            f"ppltk: interrupted after {result.num_draws} draws per chain; "
            + ("the partial result was written" if args.out else "nothing written (no --out)"),
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED
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
    run.add_argument("--out", help="write the result here (netCDF; the folder must exist)")
    run.add_argument("--force", action="store_true", help="overwrite an existing --out file")
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
        parser.print_usage(sys.stderr)
        print("ppltk: error: a command is required (run, demo); see ppltk --help", file=sys.stderr)
        return 2
    try:
        return args.handler(args)
    except PpltkError as error:
        print(f"ppltk: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
