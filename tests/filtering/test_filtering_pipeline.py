"""The decoding pipeline on user data: arrays, .npz and .csv files, the saved plot."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ppltk.datasets import simulate_vonmises_neurons
from ppltk.errors import ArgumentError
from ppltk.filtering import decoding_pipeline, load_decoding_data, normalised_rmse


def _data():
    X, Z = simulate_vonmises_neurons(20, 700, 20.0, seed=4)
    return X, Z


def test_pipeline_on_an_npz_file_with_a_fixed_split_and_a_plot(tmp_path):
    X, Z = _data()
    np.savez(tmp_path / "session.npz", X=X.numpy(), Z=Z.numpy())
    table = decoding_pipeline(
        tmp_path / "session.npz",
        train_size=500,
        test_size=150,
        regressors=("linear", "auto"),
        fast=True,
        latency_steps=20,
        plot_path=tmp_path / "fig" / "decoded.png",
    )
    names = [row["method"] for row in table.rows]
    assert names[:3] == ["KF", "EKF", "UKF"] and "DKF-auto" in names
    assert table.truth.shape == (150, 2)
    torch.testing.assert_close(table.truth, Z[500:650])
    auto = next(row for row in table.rows if row["method"] == "DKF-auto")
    assert auto["note"].startswith("chose ")
    for row in table.rows:
        assert math.isclose(
            row["nrmse"], float(normalised_rmse(table.decoded[row["method"]], table.truth))
        )
        assert 0.0 <= row["angle_error_deg"] <= 180.0
    kf = table.rows[0]
    assert kf["step_p50_ms"] > 0 and kf["step_p99_ms"] >= kf["step_p50_ms"]
    assert table.figure.is_file() and table.figure.stat().st_size > 1000
    assert "| DKF-auto |" in table.to_markdown()


def test_csv_loader_by_count_and_by_name_and_real_valued_inputs(tmp_path):
    X, Z = _data()
    # real-valued inputs (principal components): the EKF/UKF use a quadratic observation
    P = (X - X.mean(0)) @ torch.linalg.svd(X - X.mean(0), full_matrices=False)[2][:4].T
    cols = [f"pc{i}" for i in range(4)] + ["vx", "vy"]
    data = np.c_[P.numpy(), Z.numpy()]
    np.savetxt(tmp_path / "h.csv", data, delimiter=",", header=",".join(cols), comments="")
    np.savetxt(tmp_path / "n.csv", data[:, [4, 0, 1, 2, 3, 5]], delimiter=",")
    Xa, Za = load_decoding_data(tmp_path / "h.csv", state_columns=["vx", "vy"])
    torch.testing.assert_close(Xa, P)
    torch.testing.assert_close(Za, Z)
    Xb, Zb = load_decoding_data(tmp_path / "h.csv")  # the last two columns
    torch.testing.assert_close(Xb, P)
    table = decoding_pipeline(
        str(tmp_path / "h.csv"), regressors=("linear",), latency_steps=0, state_columns=2
    )
    assert [r["note"] for r in table.rows[1:3]] == ["quadratic", "quadratic"]
    assert math.isnan(table.rows[0]["step_p50_ms"])
    with pytest.raises(ArgumentError, match="state columns"):
        load_decoding_data(tmp_path / "n.csv", state_columns=["vx"])
    with pytest.raises(ArgumentError, match="existing"):
        load_decoding_data(tmp_path / "missing.npz")
    np.savez(tmp_path / "bad.npz", A=np.zeros(3))
    with pytest.raises(ArgumentError, match="Expected arrays"):
        load_decoding_data(tmp_path / "bad.npz")
    with pytest.raises(ArgumentError, match="train_size"):
        decoding_pipeline(X, Z, train_size=690, test_size=20)


def test_vonmises_simulator_is_seeded_tuned_and_checked():
    X, Z = simulate_vonmises_neurons(8, 4000, 20.0, seed=1)
    X2, Z2 = simulate_vonmises_neurons(8, 4000, 20.0, seed=1)
    assert torch.equal(X, X2) and torch.equal(Z, Z2)
    assert X.shape == (4000, 8) and Z.shape == (4000, 2) and (X >= 0).all()
    # the speed gain: bins at high speed carry more spikes than bins at low speed
    speed = Z.norm(dim=-1)
    fast, slow = X[speed > speed.quantile(0.8)].sum(-1), X[speed < speed.quantile(0.2)].sum(-1)
    assert fast.mean() > slow.mean() + 5 * (fast.std() / len(fast) ** 0.5)
    Xo, _ = simulate_vonmises_neurons(8, 4000, 20.0, seed=1, outlier_prob=0.1)
    assert Xo.sum() > X.sum()
    with pytest.raises(ArgumentError, match="concentration"):
        simulate_vonmises_neurons(8, 10, concentration=(3.0, 1.0))
