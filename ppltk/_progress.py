"""One progress mechanism: tqdm, shown only on a terminal and when ``progress=True``."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator

from tqdm.auto import tqdm


def progress_enabled(progress: bool) -> bool:
    """True when a bar should be drawn: asked for, stderr is a TTY and not in CI."""
    return bool(progress) and sys.stderr.isatty() and not os.environ.get("CI")


def progress_bar(total: int, desc: str, progress: bool = True, **kwargs) -> tqdm:
    """Return a tqdm bar (disabled when :func:`progress_enabled` is false)."""
    return tqdm(
        total=total, desc=desc, disable=not progress_enabled(progress), leave=False, **kwargs
    )


@contextlib.contextmanager
def waiting_line(desc: str, progress: bool = True) -> Iterator[Callable[[], None]]:
    """Yield ``show()``: its first call draws ``desc`` with the time elapsed (a wait with no
    known length, such as a compilation), and the line is removed when the block ends."""
    bars: list[tqdm] = []

    def show() -> None:
        if not bars:
            bars.append(progress_bar(None, desc, progress, bar_format="{desc} [{elapsed}]"))
            bars[0].refresh()

    try:
        yield show
    finally:
        for bar in bars:
            bar.close()
