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
    if not hasattr(pytest.importorskip("ppltk.mcmc"), "sample"):
        pytest.skip("ppltk.mcmc.sample not built")
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
