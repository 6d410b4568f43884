import subprocess
import sys

import pytest

from ppltk import __version__
from ppltk.cli import main

MODEL = """
import pyro, pyro.distributions as dist, torch

def model(y):
    mu = pyro.sample("mu", dist.Normal(0.0, 10.0))
    with pyro.plate("n", y.shape[0]):
        pyro.sample("y", dist.Normal(mu, 1.0), obs=y)
"""


def test_version():
    out = subprocess.run(
        [sys.executable, "-m", "ppltk", "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"ppltk {__version__}"


def test_run_bad_model_spec_is_a_clear_error(capsys):
    assert main(["run", "no_such_file.py:model"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["run", "model_without_function"]) == 2
    assert "path/to/model.py:function" in capsys.readouterr().err


def test_demo_unknown_capability(capsys, tmp_path):
    assert main(["demo", "--only", "nope", "--out", str(tmp_path)]) == 2
    assert "--only" in capsys.readouterr().err


def test_run_nuts_writes_result(tmp_path, capsys):
    from ppltk import Result

    (tmp_path / "m.py").write_text(MODEL)
    (tmp_path / "d.json").write_text('{"y": [1.0, 2.0, 1.5, 0.5]}')
    out = tmp_path / "r.nc"
    code = main(
        [
            "run", f"{tmp_path / 'm.py'}:model", "--data", str(tmp_path / "d.json"),
            "--method", "nuts", "--chains", "2", "--samples", "200", "--warmup", "200",
            "--out", str(out), "--quiet",
        ]
    )  # fmt: skip
    assert code == 0
    assert "mu" in capsys.readouterr().out
    result = Result.load(out)
    # posterior of mu: N(sum y / (n + 1/100), 1 / (n + 1/100)); 5 sd of the MC mean, ESS >= 50
    n, mean = 4, 5.0 / (4 + 0.01)
    sd = (1 / (n + 0.01)) ** 0.5
    assert abs(result["mu"].mean() - mean) < 5 * sd / 50**0.5


@pytest.mark.parametrize("method", ["smc", "tempered_smc"])
def test_run_smc_methods_report_the_evidence(tmp_path, capsys, method):
    import torch

    (tmp_path / "m.py").write_text(MODEL)
    (tmp_path / "d.json").write_text('{"y": [1.0, 2.0, 1.5, 0.5]}')
    code = main(
        [
            "run", f"{tmp_path / 'm.py'}:model", "--data", str(tmp_path / "d.json"),
            "--method", method, "--particles", "2000", "--quiet",
        ]
    )  # fmt: skip
    assert code == 0
    line = [x for x in capsys.readouterr().out.splitlines() if x.startswith("log evidence")][0]
    y = torch.tensor([1.0, 2.0, 1.5, 0.5], dtype=torch.float64)
    cov = torch.eye(4, dtype=torch.float64) + 100.0 * torch.ones(4, 4, dtype=torch.float64)
    exact = torch.distributions.MultivariateNormal(torch.zeros(4, dtype=torch.float64), cov)
    # 2000 particles: the sd of log Z-hat is a few hundredths here; 0.3 is > 5 sd
    assert abs(float(line.split(":")[1]) - exact.log_prob(y).item()) < 0.3


@pytest.fixture
def fake_method(monkeypatch):
    """Replace `ppltk run`'s inference by a recorder (the CLI logic is under test, not MCMC)."""
    import warnings

    import numpy as np

    import ppltk._methods
    from ppltk import Result
    from ppltk.errors import InterruptedWarning

    calls = []

    def sample(model, *, seed=0, progress=True, kernel="nuts", num_chains=1, num_samples=4,
               num_warmup=0, checkpoint=None, executor=None, device=None, **model_kwargs):  # fmt: skip
        calls.append(model_kwargs)
        behaviour = model_kwargs.get("behaviour", "ok")
        if behaviour == "raise":
            raise KeyboardInterrupt
        draws = num_samples if behaviour == "ok" else 3
        result = Result({"mu": np.arange(2.0 * draws).reshape(2, draws)}, method="fake")
        if behaviour == "interrupt":
            warnings.warn("interrupted", InterruptedWarning, stacklevel=2)
            result.attrs["interrupted"] = True
        return result

    monkeypatch.setattr(ppltk._methods, "get_method", lambda name: (sample, {}))
    return calls


def _files(tmp_path, model="def model(y, behaviour='ok'):\n    return y\n", data=None):
    (tmp_path / "m.py").write_text(model)
    if data is not None:
        (tmp_path / "d.json").write_text(data)
    return [f"{tmp_path / 'm.py'}:model", "--data", str(tmp_path / "d.json"), "--quiet"]


@pytest.mark.parametrize("key", ["checkpoint", "executor", "device", "seed", "num_samples"])
def test_data_may_not_set_inference_options(tmp_path, capsys, fake_method, key):
    argv = _files(tmp_path, data=f'{{"y": [1.0], "{key}": "tcp://10.0.0.1:8786"}}')
    assert main(["run", *argv, "--samples", "10"]) == 2
    err = capsys.readouterr().err
    assert key in err and "model data only" in err
    assert fake_method == []  # refused before any inference


def test_data_keys_must_be_model_arguments(tmp_path, capsys, fake_method):
    argv = _files(tmp_path, data='{"y": [1.0], "z": 2.0}')
    assert main(["run", *argv, "--samples", "10"]) == 2
    assert "['z']" in capsys.readouterr().err and fake_method == []
    argv = _files(tmp_path, data='{"y": [1.0, 2.0]}')
    assert main(["run", *argv, "--samples", "10"]) == 0
    assert fake_method[0]["y"].tolist() == [1.0, 2.0]


@pytest.mark.parametrize(
    "content, words", [(b"\xff\xfe\x00binary", "JSON"), (b'{"y": [[1.0, 2.0], [3.0]]}', "ragged")]
)
def test_binary_or_ragged_data_is_a_named_error(tmp_path, capsys, fake_method, content, words):
    argv = _files(tmp_path)
    (tmp_path / "d.json").write_bytes(content)
    assert main(["run", *argv]) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


def test_out_in_a_missing_folder_is_refused_before_sampling(tmp_path, capsys, fake_method):
    argv = _files(tmp_path, data='{"y": [1.0]}')
    assert main(["run", *argv, "--out", str(tmp_path / "no" / "r.nc")]) == 2
    assert "existing folder" in capsys.readouterr().err and fake_method == []


def test_out_is_not_overwritten_without_force(tmp_path, capsys, fake_method):
    from ppltk import Result

    argv = _files(tmp_path, data='{"y": [1.0]}')
    out = tmp_path / "r.nc"
    assert main(["run", *argv, "--samples", "5", "--out", str(out)]) == 0
    assert main(["run", *argv, "--samples", "7", "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert Result.load(out).num_draws == 5 and len(fake_method) == 1
    assert main(["run", *argv, "--samples", "7", "--out", str(out), "--force"]) == 0
    assert Result.load(out).num_draws == 7


def test_model_file_may_import_a_sibling_module(tmp_path, monkeypatch, fake_method):
    monkeypatch.setattr(sys, "path", list(sys.path))
    (tmp_path / "helper_for_cli_test.py").write_text("SCALE = 3.0\n")
    model = "from helper_for_cli_test import SCALE\n\ndef model(y):\n    return SCALE * y\n"
    argv = _files(tmp_path, model=model, data='{"y": [1.0]}')
    assert main(["run", *argv]) == 0


def test_model_file_that_fails_to_import_is_named(tmp_path, capsys, fake_method):
    argv = _files(tmp_path, model="import no_such_module_xyz\n", data='{"y": [1.0]}')
    assert main(["run", *argv]) == 2
    assert "no_such_module_xyz" in capsys.readouterr().err


def test_no_subcommand_exits_2_with_usage(capsys):
    assert main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: ppltk") and "command is required" in err


def test_interrupted_run_writes_the_partial_result_and_exits_non_zero(
    tmp_path, capsys, fake_method
):
    from ppltk import Result

    argv = _files(tmp_path, data='{"y": [1.0], "behaviour": "interrupt"}')
    out = tmp_path / "r.nc"
    assert main(["run", *argv, "--samples", "10", "--out", str(out)]) == 130
    captured = capsys.readouterr()
    assert "partial result" in captured.out and "interrupted" in captured.err
    assert Result.load(out).num_draws == 3


def test_interrupt_before_any_result_exits_non_zero(tmp_path, capsys, fake_method):
    argv = _files(tmp_path, data='{"y": [1.0], "behaviour": "raise"}')
    out = tmp_path / "r.nc"
    assert main(["run", *argv, "--out", str(out)]) == 130
    assert "nothing written" in capsys.readouterr().err and not out.exists()
