"""Scale-out on Dask distributed: independent work units run anywhere and merge into one result.

Work units are plain picklable callables plus seeds derived on the client
(:func:`unit_seeds`), so a run gives the same result in process, on a 2-worker
:class:`~dask.distributed.LocalCluster`, or on a SLURM/PBS cluster started with dask-jobqueue,
and a unit re-run after a lost worker returns what the first run would have.

- :func:`map_units` / :func:`map_seeded`: generic (e.g. one fit per dataset or session);
- :func:`sample_chains`: groups of MCMC chains, merged with chain ids kept;
- :func:`smc_islands`: independent SMC runs with evidence combined by log-mean-exp;
- simulation-based calibration replications: :func:`ppltk.calibration.sbc`.

Dask is optional (``pip install 'ppltk[dist]'``); it is imported only when a Dask executor is used.
"""

from ppltk.distributed._dask import DaskExecutor, default_num_workers
from ppltk.distributed.chains import ChainGroup, sample_chains, split_chains
from ppltk.distributed.errors import DistributedError
from ppltk.distributed.executor import Executor, InProcessExecutor, get_executor
from ppltk.distributed.islands import smc_islands
from ppltk.distributed.merge import log_mean_exp, merge_results
from ppltk.distributed.seeds import root_seed, unit_seeds
from ppltk.distributed.units import map_seeded, map_units

__all__ = [
    "ChainGroup",
    "DaskExecutor",
    "DistributedError",
    "Executor",
    "InProcessExecutor",
    "default_num_workers",
    "get_executor",
    "log_mean_exp",
    "map_seeded",
    "map_units",
    "merge_results",
    "root_seed",
    "sample_chains",
    "smc_islands",
    "split_chains",
    "unit_seeds",
]
