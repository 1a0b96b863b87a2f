"""A request's run: its jobs on the scheduler, the events coming back, and the response they make.

`respond` submits a `Plan`'s jobs (one per prompt) and answers with the whole response or a stream of
server-sent events (``data: {...}`` chunks ending in ``data: [DONE]``). Each job's events arrive on
the event loop in the `Run`'s queue, one hand-over per decode step; a whole response polls for a
disconnected client every `POLL` seconds while it waits, and a stream's client that leaves cancels the
stream (Starlette), which cancels the jobs: either way the scheduler drops the rows before its next
step. Every request ends in one log line and the metrics (`Run.finished`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from nima.serve.errors import ApiError
from nima.serve.fields import option_error
from nima.serve.jobs import Event, Failed, Job, QueueFull, Token
from nima.serve.responses import FINISH, ChoiceText, chat_logprobs, completion_logprobs, envelope, usage
from nima.serve.service import Plan, Service

log = logging.getLogger("nima.serve")
POLL = 0.25  # seconds a whole response waits for an event before it looks at its client again
MAX_PENDING = 16_384  # events a request's client has not taken yet; past it the request is cancelled


class _Stalled:
    """Put in a run's queue when its client stopped taking events: the run ends with an error there."""


class Run:
    """A plan's jobs on the scheduler and the events coming back: ``(prompt index, event)`` pairs."""

    def __init__(self, service: Service, plan: Plan, request_id: str) -> None:
        assert service.scheduler is not None and service.generator is not None
        self.service, self.plan, self.request_id = service, plan, request_id
        self.events: asyncio.Queue[tuple[int, Event | _Stalled]] = asyncio.Queue()
        self.stalled = False
        self.recorded = False  # `finished` has logged the request
        generator = service.generator
        eos = generator._limits(plan.options).eos_ids
        stops = tuple(plan.options.stop_strings)
        self.texts = [
            ChoiceText(generator.tokenizer, eos, stops, () if generator.is_seq2seq else tuple(prompt.ids))
            for prompt in plan.prompts
            for _ in range(plan.per_prompt)
        ]
        self.jobs: list[Job] = []
        for i, prompt in enumerate(plan.prompts):

            def emit(event: Event, i: int = i) -> None:  # on the event loop (`dispatch`)
                if self.stalled:
                    return
                self.events.put_nowait((i, event))
                if plan.stream and self.events.qsize() >= MAX_PENDING:  # a stream nobody reads: memory without end
                    # (a whole response's queue is the server's own to drain: a beam job's tokens arrive at once)
                    self.stalled = True
                    self.cancel()
                    self.events.put_nowait((i, _Stalled()))

            self.jobs.append(Job(prompt.ids, plan.options, plan.overrides, emit, plan.logprobs, plan.bias, plan.copies))
        self.started = time.perf_counter()
        self.created = int(time.time())  # the responses' `created`
        self.first: float | None = None
        self.open = len(self.texts)  # choices not yet finished

    def submit(self) -> None:
        scheduler = self.service.scheduler
        assert scheduler is not None
        try:
            for job in self.jobs:
                scheduler.submit(job)
        except QueueFull as err:
            self.cancel()
            raise ApiError(
                429, f"the server is busy: {err}; retry shortly", code="queue_full", headers={"Retry-After": "1"}
            ) from None

    def cancel(self) -> None:
        for job in self.jobs:
            job.cancelled.set()

    def choice_index(self, prompt: int, index: int) -> int:
        """The choice that completion ``index`` of prompt ``prompt``'s job answers."""
        return prompt * self.plan.per_prompt + index

    async def next(self, timeout: float | None = None) -> tuple[int, str, Event] | None:
        """The next event as (choice index, text it releases, event); None on timeout."""
        try:
            prompt, event = await asyncio.wait_for(self.events.get(), timeout)
        except asyncio.TimeoutError:  # noqa: UP041 - Python 3.10 raises this, not TimeoutError
            return None
        if isinstance(event, Failed):  # an option's failure mid-answer (a schema past a limit) names its field
            named = option_error(event.message) if event.message.startswith("option ") else None
            text, param = (event.message, None) if named is None else (named.message, named.param)
            raise ApiError(500, f"generation failed: {text}", param, code="generation_failed")
        if isinstance(event, _Stalled):
            message = f"cancelled: the client left {MAX_PENDING:,} events unread"
            raise ApiError(408, message, code="client_too_slow")
        choice = self.choice_index(prompt, event.index)
        text = self.texts[choice]
        if isinstance(event, Token):
            if self.first is None:
                self.first = time.perf_counter()
            return choice, text.push(event.choice), event
        self.open -= 1
        return choice, text.finish(event.finish_reason, event.tokens), event

    def finished(self, status: str = "200") -> None:
        """Record the request in the metrics and the log (``status``: 200, or why it ended otherwise); once."""
        if self.recorded:
            return
        self.recorded = True
        metrics = self.service.metrics
        prompt_tokens = sum(len(p.ids) for p in self.plan.prompts)
        generated = sum(len(t.tokens) for t in self.texts)
        metrics.prompt_tokens.inc(prompt_tokens)
        metrics.generated_tokens.inc(generated)
        total = time.perf_counter() - self.started
        metrics.request_duration.observe(total)
        ttft = (self.first - self.started) * 1e3 if self.first is not None else float("nan")
        log.info(
            "request %s status=%s in=%d out=%d ttft=%.1fms total=%.1fms",
            self.request_id,
            status,
            prompt_tokens,
            generated,
            ttft,
            total * 1e3,
        )

    def usage(self) -> dict[str, int]:
        return usage(sum(len(p.ids) for p in self.plan.prompts), sum(len(t.tokens) for t in self.texts))


async def respond(service: Service, plan: Plan, request: Request, chat: bool) -> Response:
    """Submit ``plan``'s jobs and answer ``request``: the whole response once every choice ends (499 if
    the client left first), or the stream; 429 with ``Retry-After`` when the queue is full."""
    request_id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}"
    run = Run(service, plan, request_id)
    kind = "chat.completion" if chat else "text_completion"
    run.submit()
    if plan.stream:
        return StreamingResponse(
            _stream(run, request_id, kind + ".chunk" if chat else kind, chat),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    left = asyncio.ensure_future(_client_left(request))
    try:
        while run.open:
            await run.next(POLL)
            if left.done():
                run.cancel()
                run.finished("client-left")
                return Response(status_code=499)
    except ApiError as err:  # a failed job: logged and counted as the stream's are
        run.cancel()
        run.finished(str(err.status))
        raise
    except BaseException:
        run.cancel()
        raise
    finally:
        left.cancel()
    run.finished()
    choices = [_whole_choice(run, i, chat) for i in range(len(run.texts))]
    return JSONResponse(envelope(request_id, run.created, kind, service.model_name, choices, usage=run.usage()))


async def _client_left(request: Request) -> None:
    """Returns once the client has closed its connection (ASGI's ``http.disconnect``). Waiting for it beside
    the events: `Request.is_disconnected` looks without waiting, and behind an HTTP middleware that look
    never reaches the server's own receive, so a client that left was not seen while its tokens flowed.
    If receiving fails, whether the client left is unknown: it waits until cancelled, as if connected."""
    try:
        while (await request.receive())["type"] != "http.disconnect":
            pass
    except Exception:
        await asyncio.Event().wait()


def _whole_choice(run: Run, i: int, chat: bool) -> dict[str, Any]:
    text = run.texts[i]
    body = text.text()
    prompt = run.plan.prompts[i // run.plan.per_prompt]
    if run.plan.echo:
        body = _prompt_text(run, prompt) + body
    choice: dict[str, Any] = {"index": i, "finish_reason": FINISH[text.finish_reason or "length"]}
    if chat:
        choice["message"] = {"role": "assistant", "content": body}
        choice["logprobs"] = chat_logprobs(text, text.choices) if run.plan.logprobs is not None else None
    else:
        choice["text"] = body
        choice["logprobs"] = completion_logprobs(text, 0, len(text.choices)) if run.plan.logprobs is not None else None
    if run.plan.token_ids:
        choice["token_ids"] = list(text.tokens)
    return choice


def _prompt_text(run: Run, prompt: Any) -> str:
    if prompt.text is not None:
        return prompt.text
    tokenizer = run.texts[0].tokenizer
    return tokenizer.decode(prompt.ids, skip_special_tokens=False) if tokenizer is not None else ""


async def _stream(run: Run, request_id: str, kind: str, chat: bool) -> AsyncIterator[bytes]:
    """Server-sent events: a chunk per text piece (per token with logprobs or token ids), one with each choice's
    finish reason, the usage if asked for, then ``[DONE]``. Cancelled with the client: jobs cancelled."""
    model = run.service.model_name

    def chunk(
        i: int,
        piece: str | None,
        finish: str | None = None,
        logprobs: Any = None,
        token: int | None = None,
        **delta: Any,
    ) -> bytes:
        if chat:
            content = {**delta, **({"content": piece} if piece is not None else {})}
            choice = {"index": i, "delta": content, "logprobs": logprobs, "finish_reason": finish}
        else:
            choice = {"index": i, "text": piece or "", "logprobs": logprobs, "finish_reason": finish}
        if token is not None:
            choice["token_ids"] = [token]
        usage: dict[str, Any] = {"usage": None} if run.plan.include_usage else {}  # OpenAI's: null until the last
        return _sse(envelope(request_id, run.created, kind, model, [choice], **usage))

    try:
        for i in range(len(run.texts)):
            if chat:
                yield chunk(i, "", role="assistant")
            elif run.plan.echo:
                yield chunk(i, _prompt_text(run, run.plan.prompts[i // run.plan.per_prompt]))
        while run.open:
            got = await run.next()
            assert got is not None
            i, piece, event = got
            text = run.texts[i]
            if isinstance(event, Token):
                token = event.choice.token if run.plan.token_ids else None
                if run.plan.logprobs is not None:
                    last = len(text.choices)
                    lp = chat_logprobs(text, [event.choice]) if chat else completion_logprobs(text, last - 1, last)
                    yield chunk(i, piece, logprobs=lp, token=token)
                elif token is not None:  # a chunk per token, text or not
                    yield chunk(i, piece, token=token)
                elif piece:
                    yield chunk(i, piece)
                continue
            if piece:
                yield chunk(i, piece)
            yield chunk(i, None if chat else "", FINISH[text.finish_reason or "length"])
        run.finished()
        if run.plan.include_usage:
            yield _sse(envelope(request_id, run.created, kind, model, [], usage=run.usage()))
    except ApiError as err:
        run.finished(str(err.status))
        yield _sse(err.body())
    except asyncio.CancelledError:
        run.finished("client-left")
        raise
    finally:
        run.cancel()  # a no-op for finished jobs; frees the rows of a client that left
        # closed at a `yield` (the client left while the response was sending): GeneratorExit, not a cancel
        run.finished("client-left")
    yield b"data: [DONE]\n\n"


def _sse(body: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(body, ensure_ascii=False).encode("utf-8") + b"\n\n"
