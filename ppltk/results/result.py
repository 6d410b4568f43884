"""The one result type returned by every ppltk algorithm."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ppltk.errors import ArgumentError, FileFormatError, ShapeError

__all__ = ["Result"]


def _to_numpy(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    return np.asarray(value)


@dataclass
class Result:
    """Draws, sampler statistics and (where defined) the log-evidence of one inference run.

    Parameters
    ----------
    draws
        ``{site: array [chain, draw, *site_shape]}``.
    stats
        Sampler statistics ``{name: array [chain, draw]}`` (e.g. ``lp``, ``accept_prob``,
        ``step_size``, ``tree_depth``, ``n_steps``, ``diverging``).
    log_evidence
        Estimate of :math:`\\log p(y)` where the algorithm defines one (SMC), else ``None``.
    observed_data
        ``{site: array}`` of observed values, stored in ``observed_data``.
    method
        Name of the algorithm that produced the result.
    attrs
        Extra scalar metadata (seed, number of divergences, ...), kept through save/load.
    """

    draws: dict[str, np.ndarray]
    stats: dict[str, np.ndarray] = field(default_factory=dict)
    log_evidence: float | None = None
    observed_data: dict[str, np.ndarray] = field(default_factory=dict)
    method: str = ""
    attrs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.draws, Mapping):
            raise ArgumentError(f"Expected `draws` to be a dict, but found {type(self.draws)}")
        self.draws = {k: _to_numpy(v) for k, v in self.draws.items()}
        self.stats = {k: _to_numpy(v) for k, v in self.stats.items()}
        self.observed_data = {k: _to_numpy(v) for k, v in self.observed_data.items()}
        lead = None
        for name, value in {**self.draws, **self.stats}.items():
            if value.ndim < 2:
                raise ShapeError(
                    f"Expected `{name}` shaped [chain, draw, ...], but found shape {value.shape}"
                )
            if lead is None:
                lead = value.shape[:2]
            elif value.shape[:2] != lead:
                raise ShapeError(
                    f"Expected every draw/stat to share [chain, draw] = {list(lead)}, "
                    f"but `{name}` has {list(value.shape[:2])}"
                )
        if self.log_evidence is not None:
            self.log_evidence = float(self.log_evidence)

    @property
    def num_chains(self) -> int:
        return next(iter(self.draws.values())).shape[0] if self.draws else 0

    @property
    def num_draws(self) -> int:
        return next(iter(self.draws.values())).shape[1] if self.draws else 0

    def __getitem__(self, site: str) -> np.ndarray:
        return self.draws[site]

    def flat(self, site: str) -> np.ndarray:
        """Draws of ``site`` with chains merged: ``[chain * draw, *site_shape]``."""
        value = self.draws[site]
        return value.reshape((-1,) + value.shape[2:])

    def to_arviz(self):
        """Return an :class:`arviz.InferenceData` with posterior, sample_stats, observed_data."""
        import arviz as az

        attrs = {"method": self.method}
        for key, value in self.attrs.items():
            if _scalar(value):  # netCDF attributes cannot be booleans
                attrs[key] = int(value) if isinstance(value, (bool, np.bool_)) else value
        if self.log_evidence is not None:
            attrs["log_evidence"] = self.log_evidence
        idata = az.from_dict(
            posterior=self.draws,
            sample_stats=self.stats or None,
            observed_data=self.observed_data or None,
        )
        idata.posterior.attrs.update(attrs)
        return idata

    def summary(self, **kwargs):
        """ArviZ summary table (mean, sd, HDI, ESS, R-hat) as a pandas DataFrame."""
        import arviz as az

        if not self.draws or self.num_draws == 0:
            raise ArgumentError(
                "Expected at least one draw to summarise, but found "
                f"{self.num_chains} chains x {self.num_draws} draws"
            )
        return az.summary(self.to_arviz(), **kwargs)

    def save(self, path: str | Path) -> Path:
        """Write the result to netCDF (through ArviZ); :meth:`load` reads it back.

        Atomic: the file is written to a temporary file in the same folder and moved over
        ``path`` with :func:`os.replace` only once complete, so a save that fails partway
        leaves a previous file at ``path`` untouched.
        """
        path = Path(path)
        if not path.parent.is_dir():
            raise ArgumentError(
                f"Expected `path` in an existing folder, but {str(path.parent)!r} does not exist"
            )
        if path.is_dir():
            raise ArgumentError(f"Expected `path` to be a file name, but {str(path)!r} is a folder")
        idata = self.to_arviz()
        for group in idata.groups():
            dataset = idata[group]
            for name in list(dataset.data_vars):
                if dataset[name].dtype == bool:  # netCDF has no boolean type
                    dataset[name] = dataset[name].astype("int8").assign_attrs(ppltk_bool=1)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp makes 0600; give the file the usual mode
        try:
            idata.to_netcdf(tmp, engine="h5netcdf")
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | Path) -> Result:
        """Read a result written by :meth:`save`.

        Raises :class:`~ppltk.errors.FileFormatError` (naming ``path``) for a missing, empty,
        truncated or foreign file.
        """
        idata = _read_netcdf(Path(path))
        post = idata.posterior
        attrs = dict(post.attrs)
        draws = _arrays(post)
        stats = _arrays(idata.sample_stats) if "sample_stats" in idata.groups() else {}
        observed = _arrays(idata.observed_data) if "observed_data" in idata.groups() else {}
        log_evidence = attrs.pop("log_evidence", None)
        method = str(attrs.pop("method", ""))
        for key in (
            "created_at",
            "arviz_version",
            "inference_library",
            "inference_library_version",
        ):
            attrs.pop(key, None)
        return cls(draws, stats, log_evidence, observed, method, attrs)

    def __repr__(self) -> str:
        parts = [f"{k}{list(v.shape[2:])}" for k, v in self.draws.items()]
        if len(parts) > 8:  # e.g. one site per time step: the first and last few
            parts = parts[:4] + [f"... ({len(parts)} sites)"] + parts[-2:]
        sites = ", ".join(parts)
        ev = "" if self.log_evidence is None else f", log_evidence={self.log_evidence:.4f}"
        return (
            f"Result(method={self.method!r}, chains={self.num_chains}, draws={self.num_draws}, "
            f"sites=[{sites}]{ev})"
        )


def _read_netcdf(path: Path):
    """The InferenceData in ``path``, or a :class:`FileFormatError` saying what is wrong."""
    import arviz as az

    if not path.is_file():
        raise FileFormatError(f"Expected `path` to be an existing file, but found {str(path)!r}")
    with path.open("rb") as handle:
        head = handle.read(8)
    if head != b"\x89HDF\r\n\x1a\n":  # netCDF-4 files are HDF5 files
        kind = "an empty file" if not head else "no HDF5/netCDF-4 signature"
        raise FileFormatError(
            f"Expected {str(path)!r} to be a netCDF-4 file written by Result.save, but found {kind}"
        )
    try:
        idata = az.from_netcdf(str(path), engine="h5netcdf")
    except (OSError, ValueError, KeyError) as error:
        raise FileFormatError(
            f"Expected {str(path)!r} to be a complete netCDF-4 file written by Result.save, "
            f"but it could not be read ({type(error).__name__}: truncated or damaged?)"
        ) from None
    if "posterior" not in idata.groups():
        raise FileFormatError(
            f"Expected {str(path)!r} to hold a `posterior` group (a file written by "
            f"Result.save), but found groups {list(idata.groups())}"
        )
    return idata


def _arrays(dataset) -> dict[str, np.ndarray]:
    """Arrays of a dataset, with booleans stored as int8 by :meth:`Result.save` restored."""
    return {
        k: dataset[k].values.astype(bool)
        if dataset[k].attrs.get("ppltk_bool")
        else dataset[k].values
        for k in dataset.data_vars
    }


def _scalar(value: Any) -> bool:
    return isinstance(value, (int, float, str, bool, np.bool_, np.integer, np.floating))
