from pathlib import Path

import numpy as np
import pytest
import torch

from ppltk import Result
from ppltk.errors import ArgumentError, FileFormatError, ShapeError


def make_result(**kwargs):
    rng = np.random.default_rng(0)
    draws = {"mu": rng.normal(size=(2, 50)), "theta": torch.randn(2, 50, 3)}
    stats = {"lp": rng.normal(size=(2, 50)), "diverging": np.arange(100).reshape(2, 50) % 7 == 0}
    return Result(draws, stats, observed_data={"y": np.arange(3.0)}, method="test", **kwargs)


def test_shapes_and_accessors():
    result = make_result()
    assert (result.num_chains, result.num_draws) == (2, 50)
    assert result["theta"].shape == (2, 50, 3)
    assert result.flat("theta").shape == (100, 3)
    assert "theta[3]" in repr(result)


def test_to_arviz_groups_and_summary():
    idata = make_result(log_evidence=-3.5).to_arviz()
    assert {"posterior", "sample_stats", "observed_data"} <= set(idata.groups())
    assert idata.posterior["theta"].shape == (2, 50, 3)
    assert idata.posterior.attrs["log_evidence"] == -3.5
    summary = make_result().summary()
    assert "r_hat" in summary.columns and len(summary) == 4


def test_save_load_roundtrip(tmp_path):
    result = make_result(log_evidence=-1.25, attrs={"seed": 3, "divergences": 0, "dense": True})
    loaded = Result.load(result.save(tmp_path / "r.nc"))
    np.testing.assert_array_equal(loaded["theta"], result["theta"])
    np.testing.assert_array_equal(loaded.stats["lp"], result.stats["lp"])
    assert loaded.stats["diverging"].dtype == bool
    np.testing.assert_array_equal(loaded.observed_data["y"], np.arange(3.0))
    assert loaded.log_evidence == -1.25 and loaded.method == "test"
    assert int(loaded.attrs["seed"]) == 3


def test_mismatched_leading_shapes_are_named():
    with pytest.raises(ShapeError, match="`b`"):
        Result({"a": np.zeros((2, 5)), "b": np.zeros((2, 4))})
    with pytest.raises(ShapeError, match="chain, draw"):
        Result({"a": np.zeros(5)})
    with pytest.raises(ArgumentError, match="draws"):
        Result([1, 2])


def test_failed_save_keeps_the_previous_file(tmp_path, monkeypatch):
    import arviz as az

    path = tmp_path / "r.nc"
    make_result(log_evidence=-1.0).save(path)

    def write_half_then_fail(self, filename, *args, **kwargs):
        Path(filename).write_bytes(b"\x89HDF\r\n\x1a\n partial")
        raise OSError("disk full")

    monkeypatch.setattr(az.InferenceData, "to_netcdf", write_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        make_result(log_evidence=-2.0).save(path)
    monkeypatch.undo()
    assert Result.load(path).log_evidence == -1.0  # the good file survived
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.nc"]  # no temporary left


def test_save_into_a_missing_folder_is_named(tmp_path):
    with pytest.raises(ArgumentError, match="does not exist"):
        make_result().save(tmp_path / "nope" / "r.nc")


@pytest.mark.parametrize("kind", ["missing", "empty", "truncated", "torch", "foreign"])
def test_load_bad_files_raise_file_format_error(tmp_path, kind):
    import xarray as xr

    good = make_result().save(tmp_path / "good.nc").read_bytes()
    path = tmp_path / "bad.nc"
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif kind == "torch":
        torch.save({"draws": torch.zeros(3)}, path)
    elif kind == "foreign":
        xr.Dataset({"x": ("a", np.zeros(3))}).to_netcdf(path, engine="h5netcdf")
    with pytest.raises(FileFormatError, match="bad.nc") as info:
        Result.load(path)
    assert "weights_only" not in str(info.value)


def test_summary_of_zero_draws_is_a_named_error():
    with pytest.raises(ArgumentError, match="at least one draw"):
        Result({"mu": np.zeros((2, 0))}).summary()
