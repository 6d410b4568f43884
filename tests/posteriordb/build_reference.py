"""Regenerate ``data/*.json`` and ``reference.json`` from a posteriordb checkout.

Usage: ``python tests/posteriordb/build_reference.py <git-dir-of-stan-dev/posteriordb>``.
Stores only the data fields the models read and, per posterior, the mean and sd of every
scalar parameter over the reference draws (10 chains x 1000 draws, thinned, near-independent).
"""

from __future__ import annotations

import io
import json
import pathlib
import subprocess
import sys
import zipfile

import numpy as np

HERE = pathlib.Path(__file__).parent
POSTERIORS = {
    "kidiq-kidscore_momiq": ["N", "kid_score", "mom_iq", "mom_hs"],
    "kidiq-kidscore_interaction": ["N", "kid_score", "mom_iq", "mom_hs"],
    "kidiq-kidscore_momhs": ["N", "kid_score", "mom_iq", "mom_hs"],
    "kidiq-kidscore_momhsiq": ["N", "kid_score", "mom_iq", "mom_hs"],
    "mesquite-mesquite": None,
    "mesquite-logmesquite_logvolume": None,
    "mesquite-logmesquite_logvash": None,
    "mesquite-logmesquite": None,
    "mesquite-logmesquite_logva": None,
    "kilpisjarvi_mod-kilpisjarvi": None,
    "eight_schools-eight_schools_noncentered": None,
    "arK-arK": None,
    "arma-arma11": None,
    "garch-garch11": None,
    "gp_pois_regr-gp_pois_regr": ["N", "x", "k", "y"],
    "gp_pois_regr-gp_regr": ["N", "x", "k", "y"],
    "low_dim_gauss_mix-low_dim_gauss_mix": None,
    "hmm_example-hmm_example": None,
    "mesquite-logmesquite_logvas": None,
    "kidiq_with_mom_work-kidscore_mom_work": None,
    "kidiq_with_mom_work-kidscore_interaction_z": None,
    "earnings-earn_height": None,
    "earnings-logearn_interaction_z": None,
    "nes2000-nes": [
        "N",
        "partyid7",
        "real_ideo",
        "race_adj",
        "educ1",
        "gender",
        "income",
        "age_discrete",
    ],
    "sblrc-blr": None,
    "sblri-blr": None,
    "bball_drive_event_0-hmm_drive_0": None,
    "bball_drive_event_1-hmm_drive_1": None,
    "hudson_lynx_hare-lotka_volterra": None,
}


def _show(repo: str, path: str) -> bytes:
    return subprocess.run(
        ["git", "-C", repo, "show", f"HEAD:{path}"], capture_output=True, check=True
    ).stdout


def _unzip_json(blob: bytes):
    archive = zipfile.ZipFile(io.BytesIO(blob))
    return json.loads(archive.read(archive.namelist()[0]))


def main(repo: str) -> None:
    commit = subprocess.run(
        ["git", "-C", repo, "rev-parse", "HEAD"], capture_output=True, check=True, text=True
    ).stdout.strip()
    reference = {"_source": f"stan-dev/posteriordb@{commit}"}
    for name, fields in POSTERIORS.items():
        info = json.loads(_show(repo, f"posterior_database/posteriors/{name}.json"))
        data = _unzip_json(
            _show(repo, f"posterior_database/data/data/{info['data_name']}.json.zip")
        )
        if fields is not None:
            data = {key: data[key] for key in fields}
        (HERE / "data" / f"{info['data_name']}.json").write_text(json.dumps(data) + "\n")
        draws = _unzip_json(
            _show(repo, f"posterior_database/reference_posteriors/draws/draws/{name}.json.zip")
        )
        stats = {}
        for param in draws[0]:
            values = np.concatenate([np.asarray(chain[param], dtype=float) for chain in draws])
            stats[param] = [float(f"{values.mean():.6g}"), float(f"{values.std(ddof=1):.6g}")]
        reference[name] = {"data": info["data_name"], "n_draws": len(values), "params": stats}
    (HERE / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
