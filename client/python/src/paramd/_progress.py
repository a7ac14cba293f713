"""Progress bars for long transfers: tqdm when it is installed, else one line of our own."""

from __future__ import annotations

import sys
import time
from typing import Any, Callable, Optional, Union

ProgressCallback = Callable[[int, int], None]
Progress = Union[bool, ProgressCallback, None]


class _Bar:
    """A one-line bar on stderr, redrawn at most ten times a second."""

    def __init__(self, desc: str) -> None:
        self.desc = desc
        self.last = 0.0
        self.started = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last < 0.1 and done < total:
            return
        self.last = now
        fraction = done / total if total else 1.0
        width = 30
        filled = int(width * fraction)
        rate = done / max(now - self.started, 1e-9) / 2**20
        sys.stderr.write(f"\r{self.desc} [{'#' * filled}{'.' * (width - filled)}] "
                         f"{done / 2**20:.1f}/{total / 2**20:.1f} MiB {rate:.0f} MiB/s")
        sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write("\n")


class _Tqdm:
    def __init__(self, desc: str, tqdm: Any) -> None:
        self.bar = tqdm(desc=desc, unit="B", unit_scale=True, unit_divisor=1024)
        self.done = 0

    def __call__(self, done: int, total: int) -> None:
        if self.bar.total != total:
            self.bar.total = total
        self.bar.update(done - self.done)
        self.done = done

    def close(self) -> None:
        self.bar.close()


class Reporter:
    """Wraps the user's ``progress`` argument: None/False (nothing), True (a bar) or a
    callable taking (bytes done, bytes total)."""

    def __init__(self, progress: Progress, desc: str) -> None:
        self._bar: Optional[Union[_Bar, _Tqdm]] = None
        self.callback: Optional[ProgressCallback] = None
        if progress is True:
            try:
                from tqdm import tqdm
            except ImportError:
                self._bar = _Bar(desc)
            else:
                self._bar = _Tqdm(desc, tqdm)
            self.callback = self._bar
        elif callable(progress):
            self.callback = progress

    def __enter__(self) -> "Reporter":
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()
