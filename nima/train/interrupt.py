"""Ctrl-C during training: finish the current step, save a checkpoint, stop.

A KeyboardInterrupt raised wherever Python happens to be (inside the optimizer's update,
half-way through writing a checkpoint) would leave nothing to resume from but the last
scheduled checkpoint, up to ``checkpoint_every`` steps back. Instead the first Ctrl-C only
sets a flag that the loop reads after each step: it saves a checkpoint of that step (the same
checkpoint a scheduled one would be, so `--resume` continues bitwise as from any other) and
raises `Interrupted`. A second Ctrl-C stops at once, as Python would.

Only a single-process run in the main thread takes over SIGINT: under torchrun every rank
gets the signal and would stop at a step of its own, leaving the others waiting in a
collective; there the default behaviour stays.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType


class Interrupted(Exception):  # noqa: N818 - what happened, as KeyboardInterrupt names it
    """Training stopped at a user's Ctrl-C after saving a checkpoint of ``step``."""

    def __init__(self, step: int) -> None:
        super().__init__(f"interrupted at step {step}; its checkpoint is saved, and --resume continues from it")
        self.step = step


class StopRequest:
    """Whether a Ctrl-C asked the loop to stop after its current step."""

    def __init__(self) -> None:
        self.requested = False


@contextmanager
def stop_on_interrupt(enabled: bool, announce: Callable[[str], None]) -> Iterator[StopRequest]:
    """While open, the first SIGINT sets the returned request (and ``announce``s it); the second
    raises KeyboardInterrupt. With ``enabled`` False, or off the main thread, SIGINT is left alone."""
    request = StopRequest()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        if request.requested:
            raise KeyboardInterrupt
        request.requested = True
        announce("Ctrl-C: stopping after this step and saving a checkpoint (Ctrl-C again to stop at once)")

    previous = signal.signal(signal.SIGINT, handle)
    try:
        yield request
    finally:
        signal.signal(signal.SIGINT, previous)
