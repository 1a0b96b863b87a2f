"""Continuous batching: one thread owns the ONNX Runtime session and decodes every running row together.

Requests (`Job`) wait in a bounded queue. Between decode steps the scheduler admits waiting jobs
while the running rows stay within ``max_batch``: each job's prompt is prefilled alone, its first
token chosen, and its rows (``n`` completions share the prefill) join the running batch
(`nima.serve.batch`). With a ``prefill_budget``, the prompts prefilled between two steps while rows
are running hold at most that many tokens (one job always goes in): every prefill pauses the
running rows, and sixteen requests arriving together stall them for sixteen prefills. The budget
trades the newcomers' first tokens for the running rows' inter-token latency; bench/serve.py's
load (clients starting together) showed no difference either way, so there is none by default. Every step then
feeds one token per row; each row chooses its next token under its own options and random stream
(`nima.serve.choose`), so it gives the tokens it gives alone; finished and cancelled rows leave
before the next step. Beam search needs its whole search before its first answer; a beam job
runs beside the batch, one model step of its own after each batch step (`Generator.beam_steps`),
so the running rows go on while it searches.

Results go back through each job's ``emit`` callback, called on this thread: `Token`, then `Done`
per completion, or one `Failed` for the whole job. The HTTP layer passes them to its event loop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from collections.abc import Generator as Steps
from dataclasses import dataclass
from typing import Any

import numpy as np

from nima.runtime.errors import GenerateError, runtime_errors
from nima.runtime.generator import Generation, Generator
from nima.runtime.rows import Limits, Row
from nima.serve.batch import RunningBatch
from nima.serve.cache_shift import key_angles
from nima.serve.choose import Choice, RowPlan, choose
from nima.serve.jobs import Done, Event, Failed, Job, QueueFull, Token
from nima.serve.metrics import Metrics
from nima.spec.generation import GenerationSpec

log = logging.getLogger("nima.serve")


@dataclass
class Running:
    """A completion in the running batch: its job, index, row and how it chooses."""

    job: Job
    index: int
    row: Row
    plan: RowPlan
    limits: Limits
    last: float = 0.0  # when its previous token was chosen (inter-token latency)


class Scheduler:
    """See the module docstring. `start` runs the loop on a daemon thread; `submit` queues a job."""

    def __init__(
        self,
        generator: Generator,
        max_batch: int,
        max_queue: int,
        metrics: Metrics | None = None,
        deliver: Callable[[list[tuple[Job, Event]]], None] | None = None,
        prefill_budget: int | None = None,
    ) -> None:
        """``deliver``: where the events of one loop iteration go together (the server hands them to its
        event loop in one call per step, not one per row); None: each job's ``emit``, at once.
        ``prefill_budget``: prompt tokens prefilled between two steps while rows run (module docstring); None:
        no limit."""
        self.generator = generator
        self.deliver = deliver
        self._outbox: list[tuple[Job, Event]] = []
        self._admitting: list[Job] = []
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.prefill_budget = prefill_budget
        self.metrics = metrics or Metrics()
        angles = key_angles(generator.bundle.model_spec, generator.bundle.manifest)
        self.batch = RunningBatch(generator.session, generator.spec.max_seq_len, angles)
        self.running: list[Running] = []
        self.beams: list[tuple[Job, Steps[None, None, list[Generation]]]] = []  # beam jobs searching
        self.waiting: deque[Job] = deque()
        self._wake = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.steps = 0

    # --- called from other threads -----------------------------------------------------------

    def submit(self, job: Job) -> None:
        """Queue ``job``; `QueueFull` when ``max_queue`` jobs already wait."""
        with self._wake:
            if len(self.waiting) >= self.max_queue:
                raise QueueFull(f"{len(self.waiting)} requests are waiting (--max-queue {self.max_queue})")
            self.waiting.append(job)
            self.metrics.queue_depth.set(len(self.waiting))
            self._wake.notify()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="nima-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout=30)

    # --- the scheduler thread ----------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._stopping and not self.waiting and not self.running and not self.beams:
                    self._wake.wait()
                if self._stopping:
                    return
            try:
                self._admit()
                if self.running:
                    self._step()
                self._advance_beams()
            except Exception as err:  # a fault of the server, not of a request: those in flight fail, serving goes on
                log.exception("the scheduler's step failed")
                self._fail_all(f"the server failed on this request ({type(err).__name__}); see its log")
            if self._outbox:
                events, self._outbox = self._outbox, []
                assert self.deliver is not None
                self.deliver(events)

    def _take(self, pending: int, prefilled: int) -> Job | None:
        """The next waiting job, if its rows fit beside the running ones (a beam job takes none) and, while
        rows run, the ``prefilled`` prompt tokens of this round are within the budget; None otherwise."""
        if self.running and self.prefill_budget is not None and prefilled >= self.prefill_budget:
            return None
        with self._wake:
            while self.waiting and self.waiting[0].cancelled.is_set():
                self.waiting.popleft()
            taken = len(self.running) + pending
            if not self.waiting or (taken and taken + self.waiting[0].rows > self.max_batch):
                job = None
            else:
                job = self.waiting.popleft()
            self.metrics.queue_depth.set(len(self.waiting))
            return job

    def _admit(self) -> None:
        """Prefill waiting jobs that fit, and join their rows to the batch (beam jobs run here, whole)."""
        newcomers: list[tuple[Any, list[Running]]] = []
        self._admitting = []  # taken from the queue, not yet running: failed too if this raises
        prefilled = 0
        while (job := self._take(sum(len(rows) for _, rows in newcomers), prefilled)) is not None:
            prefilled += len(job.ids)
            self._admitting.append(job)
            try:
                if job.options.num_beams > 1:
                    self._start_beams(job)
                    self._admitting.remove(job)
                    continue
                joined = self._prefill(job)
            except Exception as err:  # this job's own prefill (the batch is not touched yet): it alone fails
                self._send(job, Failed(_failure(err)))
                self._admitting.remove(job)
                continue
            if joined is not None:
                newcomers.append(joined)
        if newcomers:
            self.batch.join([(prefilled, len(rows)) for prefilled, rows in newcomers])
            for _, rows in newcomers:
                self.running.extend(rows)
            self.metrics.running_rows.set(len(self.running))
        self._admitting = []

    def _prefill(self, job: Job) -> tuple[Any, list[Running]] | None:
        """Run ``job``'s prompt alone and choose each completion's first token; its unfinished rows."""
        generator = self.generator
        with runtime_errors(generator.bundle.path):
            starts, fixed = generator._starts([job.ids])
            prefilled = self.batch.prefill(starts[0], fixed)
        limits = generator._limits(job.options)
        rows = []
        places = generator.row_grammars(job.options, job.rows)  # each row's own place in a response format
        for index in range(job.rows):
            rng = None if job.options.num_beams > 1 else _rng(job.options, index)
            grammar = None if places is None else places[index]
            plan = RowPlan(job.options, limits.eos_ids, rng, job.logprobs, job.bias, grammar)
            rows.append(Running(job, index, Row(list(starts[0])), plan, limits))
        logits = np.repeat(prefilled.logits[None], len(rows), axis=0)  # (n, V): each copy processed on its own
        self._choose(logits, rows)
        alive = [r for r in rows if r.row.finish_reason is None and not job.cancelled.is_set()]
        return (prefilled, alive) if alive else None

    def _step(self) -> None:
        """One decode step of every running row; rows that finished or whose client left, leave.

        ``self.running`` is the batch's rows in the batch's order, before and after."""
        gone = [i for i, r in enumerate(self.running) if r.job.cancelled.is_set()]
        if gone:
            self.metrics.cancelled_rows.inc(len(gone))
            self._keep([i for i, r in enumerate(self.running) if not r.job.cancelled.is_set()])
        if not self.running:
            return
        tokens = np.array([r.row.tokens[-1] for r in self.running], dtype=np.int64)
        try:
            with runtime_errors(self.generator.bundle.path):
                logits = self.batch.step(tokens)  # (B, V)
        except GenerateError as err:
            self._fail_all(str(err))
            return
        self.steps += 1
        self.metrics.batch_size.observe(len(self.running))
        self._choose(logits, self.running)
        finished = [r.row.finish_reason is not None for r in self.running]
        if any(finished):
            self._keep([i for i, done in enumerate(finished) if not done])

    def _choose(self, logits: np.ndarray, rows: list[Running]) -> None:
        """Choose each row's token, record it, emit it, and emit `Done` for rows that finished."""
        chosen = choose(logits, [r.row for r in rows], [r.plan for r in rows])
        now = time.perf_counter()
        for running, choice in zip(rows, chosen, strict=True):
            row, job = running.row, running.job
            if job.cancelled.is_set():  # failed (below) or left: its rows leave at the next step, silent
                continue
            row.tokens.append(choice.token)
            try:
                if running.plan.grammar is not None:
                    running.plan.grammar.take(choice.token)
                row.finish_reason = running.limits.finish_reason(row)  # the row's own stop strings, its text
            except Exception as err:  # this row's job alone fails; its rows leave at the next step
                self._send(job, Failed(_failure(err)))
                job.cancelled.set()
                continue
            if job.first_token is None:
                job.first_token = now
                self.metrics.time_to_first_token.observe(now - job.created)
            elif running.last:
                self.metrics.inter_token_latency.observe(now - running.last)
            running.last = now
            self._send(job, Token(running.index, choice))
            if row.finish_reason is not None:
                self._send(job, Done(running.index, row.finish_reason))

    def _send(self, job: Job, event: Event) -> None:
        if self.deliver is None:
            job.emit(event)
        else:
            self._outbox.append((job, event))

    def _keep(self, rows: list[int]) -> None:
        """Keep only the running rows at ``rows`` (indices, in order), in the batch too."""
        self.batch.keep(rows)
        self.running = [self.running[i] for i in rows]
        self.metrics.running_rows.set(len(self.running))

    def _fail_all(self, message: str) -> None:
        """The batch's run failed: every running job, and any being admitted, gets the error; the batch
        starts empty."""
        jobs = {id(r.job): r.job for r in self.running}
        jobs.update({id(job): job for job in self._admitting})
        jobs.update({id(job): job for job, _ in self.beams})
        self.beams = []
        for job in jobs.values():
            self._send(job, Failed(message))
        self._admitting = []
        self.running = []
        self.batch.keep([])
        self.metrics.running_rows.set(0)

    def _start_beams(self, job: Job) -> None:
        """Begin a beam job's search (`GenerateError` for options it refuses); `_advance_beams` runs it."""
        key = "sources" if self.generator.is_seq2seq else "prompts"
        self.beams.append((job, self.generator.beam_steps(**{key: [job.ids]}, **job.overrides)))

    def _advance_beams(self) -> None:
        """One model step of every beam job in flight; a finished job sends its completions, a failed one
        its error, and one whose client left is dropped."""
        for entry in list(self.beams):
            job, steps = entry
            if job.cancelled.is_set():
                self.beams.remove(entry)
                continue
            try:
                with runtime_errors(self.generator.bundle.path):
                    next(steps)
            except StopIteration as done:
                self.beams.remove(entry)
                self._send_beams(job, done.value[0])
            except Exception as err:  # a beam job searches alone: its failure is its own
                self.beams.remove(entry)
                self._send(job, Failed(_failure(err)))

    def _send_beams(self, job: Job, generation: Generation) -> None:
        """A finished beam job's completions, each token then its end."""
        job.first_token = time.perf_counter()
        self.metrics.time_to_first_token.observe(job.first_token - job.created)
        for index, completion in enumerate(generation.completions):
            for token in completion.token_ids:
                self._send(job, Token(index, Choice(token)))
            self._send(job, Done(index, completion.finish_reason, tuple(completion.token_ids)))


def _failure(err: Exception) -> str:
    """A job's failure in one line: a `GenerateError`'s own message; anything else logged whole and named."""
    if isinstance(err, GenerateError):
        return str(err)
    log.error("a request failed", exc_info=err)
    return f"the server failed on this request ({type(err).__name__}); see its log"


def _rng(options: GenerationSpec, index: int) -> np.random.Generator | None:
    """Completion ``index``'s random stream, the one `Generator.generate` gives that completion
    (`nima.runtime.rows.row_rngs`), so a seeded request gives what it gives there; greedy rows draw nothing."""
    from nima.runtime.options import is_greedy
    from nima.runtime.rows import row_rngs

    if is_greedy(options):
        return None
    return row_rngs(options.seed, [index])[0]
