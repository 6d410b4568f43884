import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("PPLTK_FAST", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    """Compiled libraries go to the test's own (empty) ppltk cache folder, ``tmp_path``."""
    from ppltk.model import graph

    monkeypatch.setenv("PPLTK_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(graph, "_USER_INDUCTOR_CACHE", None)
