"""Ctrl-C for long work: the first press asks for a clean stop, a second one aborts at once."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from typing import Any


class StopOnInterrupt:
    """Context manager: on the first SIGINT print `message` and call `on_stop`; a second raises.

    Outside the main thread (where signal handlers cannot be installed) it does nothing.
    """

    def __init__(self, on_stop: Callable[[], None], message: str) -> None:
        self.on_stop = on_stop
        self.message = message
        self.previous: Any = None
        self.hits = 0

    def _handler(self, signum: int, frame: Any) -> None:
        self.hits += 1
        if self.hits > 1:
            raise KeyboardInterrupt
        print(f"\n{self.message} (Ctrl-C again to abort)", file=sys.stderr)
        self.on_stop()

    def __enter__(self) -> StopOnInterrupt:
        try:
            self.previous = signal.signal(signal.SIGINT, self._handler)
        except ValueError:  # not in the main thread
            self.previous = None
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
