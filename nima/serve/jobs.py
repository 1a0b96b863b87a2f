"""What a request is to the scheduler (`Job`) and what it sends back (`Token`, `Done`, `Failed`).

Shared by the scheduler (`nima.serve.scheduler`) and the HTTP layer (`nima.serve.app`), which
turns the events into OpenAI's responses.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from nima.serve.choose import Choice, LogitBias
from nima.spec.generation import GenerationSpec


@dataclass(frozen=True)
class Token:
    """Completion ``index`` of a job chose ``choice`` (its token, log-probabilities)."""

    index: int
    choice: Choice


@dataclass(frozen=True)
class Done:
    """Completion ``index`` ended: ``finish_reason`` as `nima.runtime.Completion`'s; beams carry their tokens."""

    index: int
    finish_reason: str
    tokens: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Failed:
    """The job failed as a whole (the model's run raised); ``message`` is one line."""

    message: str


Event = Token | Done | Failed


class QueueFull(Exception):
    """More jobs wait than the queue holds."""


@dataclass
class Job:
    """One request: its starting ids (a prompt, or an encoder-decoder's source), checked options and
    the overrides they came from, where its events go, and whether its client has gone."""

    ids: list[int]
    options: GenerationSpec
    overrides: dict[str, Any]
    emit: Callable[[Event], None]
    logprobs: int | None = None
    bias: LogitBias | None = None
    copies: int = 1  # greedy n > 1: this many equal rows from one prefill (greedy returns one sequence each)
    cancelled: threading.Event = field(default_factory=threading.Event)
    created: float = field(default_factory=time.perf_counter)
    first_token: float | None = None
    id: int = field(default_factory=itertools.count().__next__)

    @property
    def rows(self) -> int:
        """Batch rows the job takes while running (beam jobs run outside the batch)."""
        return self.copies * self.options.num_return_sequences if self.options.num_beams == 1 else 0
