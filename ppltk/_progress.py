"""One progress mechanism: tqdm, shown only on a terminal and when ``progress=True``."""

from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm


def progress_enabled(progress: bool) -> bool:
    """True when a bar should be drawn: asked for, stderr is a TTY and not in CI."""
    return bool(progress) and sys.stderr.isatty() and not os.environ.get("CI")


def progress_bar(total: int, desc: str, progress: bool = True, **kwargs) -> tqdm:
    """Return a tqdm bar (disabled when :func:`progress_enabled` is false)."""
    return tqdm(
        total=total, desc=desc, disable=not progress_enabled(progress), leave=False, **kwargs
    )
