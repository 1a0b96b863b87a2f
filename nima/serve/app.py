"""The HTTP API: FastAPI routes over a `Service`, in OpenAI's shapes.

``POST /v1/completions`` and ``/v1/chat/completions`` (whole, or streamed as server-sent events ending
in ``data: [DONE]``), ``GET /v1/models``, ``GET /health`` (200 once the model is loaded, 503 before)
and ``GET /metrics`` (Prometheus). Each request becomes one scheduler job per prompt; its events come
back from the scheduler thread, one hand-over per decode step (``call_soon_threadsafe``), into each
request's asyncio queue. A streaming client that disconnects has its jobs cancelled (Starlette cancels the stream), a
waiting one is noticed within a quarter second; either way the scheduler drops the rows before its
next step. Every refusal is an `ApiError` in OpenAI's error shape; bodies are capped (413) before
they are parsed.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nima.serve.errors import ApiError, from_validation
from nima.serve.jobs import Event, Failed, Job, QueueFull, Token
from nima.serve.protocol import ChatRequest, CompletionRequest
from nima.serve.responses import FINISH, ChoiceText, chat_logprobs, completion_logprobs, envelope, usage
from nima.serve.service import Plan, Service

log = logging.getLogger("nima.serve")
MAX_BODY = 1 << 20  # bytes of a request body
POLL = 0.25  # seconds between disconnect checks while a whole response is prepared


def create_app(service: Service, api_key: str | None = None, max_body: int = MAX_BODY) -> FastAPI:
    """The app; its startup loads ``service`` on a worker thread unless it is loaded already."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()

        def dispatch(events: list[tuple[Job, Event]]) -> None:  # on the loop: each job's emit puts in its queue
            for job, event in events:
                job.emit(event)

        service.deliver = lambda events: loop.call_soon_threadsafe(dispatch, events)
        if service.scheduler is not None:  # loaded before the app started
            service.scheduler.deliver = service.deliver
        loading = None
        if not service.ready:
            loading = asyncio.get_running_loop().run_in_executor(None, _load, service)
        yield
        if loading is not None:
            await loading
        service.close()

    app = FastAPI(lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodyLimit, max_body=max_body)  # type: ignore[arg-type]

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError) -> JSONResponse:
        return err.response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        message = "no such endpoint" if err.status_code == 404 else str(err.detail)
        return ApiError(err.status_code, f"{request.method} {request.url.path}: {message}").response()

    @app.exception_handler(Exception)
    async def unexpected(request: Request, err: Exception) -> JSONResponse:
        log.exception("request failed: %s %s", request.method, request.url.path)
        return ApiError(500, f"the server failed on this request ({type(err).__name__}); see its log").response()

    @app.middleware("http")
    async def count_and_authorise(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if api_key is not None and request.url.path.startswith("/v1/") and not _authorised(request, api_key):
            response: Response = ApiError(401, "Incorrect API key provided", code="invalid_api_key").response()
        else:
            response = await call_next(request)
        service.metrics.requests.labels(status=str(response.status_code)).inc()
        if response.status_code >= 400:
            log.info("request %s %s status=%d", request.method, request.url.path, response.status_code)
        return response

    @app.get("/health")
    async def health() -> JSONResponse:
        if service.ready:
            return JSONResponse({"status": "ok"})
        if service.load_error:
            return JSONResponse({"status": "error", "message": service.load_error}, status_code=500)
        return JSONResponse({"status": "loading"}, status_code=503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(service.metrics.text(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/v1/models")
    async def models() -> JSONResponse:
        card = {"id": service.model_name, "object": "model", "created": int(time.time()), "owned_by": "nima"}
        return JSONResponse({"object": "list", "data": [card]})

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        body = _parse(CompletionRequest, await _json(request))
        return await _respond(service, service.plan_completion(body), request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = _parse(ChatRequest, await _json(request))
        return await _respond(service, service.plan_chat(body), request, chat=True)

    return app


def _load(service: Service) -> None:
    try:
        service.load()
    except Exception as err:  # reported by /health and the log; the server keeps answering
        log.error("cannot serve %s: %s", service.bundle, err)
        service.load_error = service.load_error or str(err)


def _authorised(request: Request, key: str) -> bool:
    given = request.headers.get("authorization", "")
    scheme, _, token = given.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), key.encode())


async def _json(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as err:
        raise ApiError(400, f"the body is not valid JSON: {str(err).splitlines()[0][:120]}") from None


def _parse(model: type[BaseModel], body: Any) -> Any:
    if not isinstance(body, dict):
        raise ApiError(400, f"the body must be a JSON object, not {type(body).__name__}")
    try:
        return model.model_validate(body)
    except ValidationError as err:
        raise from_validation(err) from None
    except RecursionError:
        raise ApiError(400, "the body is nested too deeply") from None


# --- running a plan ----------------------------------------------------------------------------


class Run:
    """A plan's jobs on the scheduler and the events coming back: ``(prompt index, event)`` pairs."""

    def __init__(self, service: Service, plan: Plan, request_id: str) -> None:
        assert service.scheduler is not None and service.generator is not None
        self.service, self.plan, self.request_id = service, plan, request_id
        self.events: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()
        generator = service.generator
        eos = generator._limits(plan.options).eos_ids
        n = plan.options.num_return_sequences
        self.texts = [
            ChoiceText(generator.tokenizer, eos, tuple(plan.options.stop_strings)) for _ in range(len(plan.prompts) * n)
        ]
        self.jobs: list[Job] = []
        for i, prompt in enumerate(plan.prompts):

            def emit(event: Event, i: int = i) -> None:  # on the event loop (`dispatch`)
                self.events.put_nowait((i, event))

            self.jobs.append(Job(prompt.ids, plan.options, plan.overrides, emit, plan.logprobs))
        self.started = time.perf_counter()
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
        return prompt * self.plan.options.num_return_sequences + index

    async def next(self, timeout: float | None = None) -> tuple[int, str, Event] | None:
        """The next event as (choice index, text it releases, event); None on timeout."""
        try:
            prompt, event = await asyncio.wait_for(self.events.get(), timeout)
        except asyncio.TimeoutError:  # noqa: UP041 - Python 3.10 raises this, not TimeoutError
            return None
        if isinstance(event, Failed):
            raise ApiError(500, f"generation failed: {event.message}", code="generation_failed")
        choice = self.choice_index(prompt, event.index)
        text = self.texts[choice]
        if isinstance(event, Token):
            if self.first is None:
                self.first = time.perf_counter()
            return choice, text.push(event.choice), event
        self.open -= 1
        return choice, text.finish(event.finish_reason, event.tokens), event

    def finished(self, status: str = "200") -> None:
        """Record the request in the metrics and the log (``status``: 200, or why it ended otherwise)."""
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


async def _respond(service: Service, plan: Plan, request: Request, chat: bool) -> Response:
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
    try:
        while run.open:
            if await run.next(POLL) is None and await request.is_disconnected():
                run.cancel()
                run.finished("client-left")
                return Response(status_code=499)
    except BaseException:
        run.cancel()
        raise
    run.finished()
    choices = [_whole_choice(run, i, chat) for i in range(len(run.texts))]
    return JSONResponse(envelope(request_id, kind, service.model_name, choices, usage=run.usage()))


def _whole_choice(run: Run, i: int, chat: bool) -> dict[str, Any]:
    text = run.texts[i]
    body = text.text()
    prompt = run.plan.prompts[i // run.plan.options.num_return_sequences]
    if run.plan.echo:
        body = _prompt_text(run, prompt) + body
    choice: dict[str, Any] = {"index": i, "finish_reason": FINISH[text.finish_reason or "length"]}
    if chat:
        choice["message"] = {"role": "assistant", "content": body}
        choice["logprobs"] = chat_logprobs(text, text.choices) if run.plan.logprobs is not None else None
    else:
        choice["text"] = body
        choice["logprobs"] = completion_logprobs(text, text.choices, 0) if run.plan.logprobs is not None else None
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
        return _sse(envelope(request_id, kind, model, [choice]))

    offsets = [0] * len(run.texts)
    try:
        for i in range(len(run.texts)):
            if chat:
                yield chunk(i, "", role="assistant")
            elif run.plan.echo:
                echoed = _prompt_text(run, run.plan.prompts[i // run.plan.options.num_return_sequences])
                offsets[i] = len(echoed)
                yield chunk(i, echoed)
        while run.open:
            got = await run.next()
            assert got is not None
            i, piece, event = got
            text = run.texts[i]
            if isinstance(event, Token):
                token = event.choice.token if run.plan.token_ids else None
                if run.plan.logprobs is not None:
                    if chat:
                        lp = chat_logprobs(text, [event.choice])
                    else:
                        lp = completion_logprobs(text, [event.choice], offsets[i])
                    offsets[i] += len(piece)
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
            yield _sse(envelope(request_id, kind, model, [], usage=run.usage()))
    except ApiError as err:
        run.finished(str(err.status))
        yield _sse(err.body())
    except asyncio.CancelledError:
        run.finished("client-left")
        raise
    finally:
        run.cancel()  # a no-op for finished jobs; frees the rows of a client that left
    yield b"data: [DONE]\n\n"


def _sse(body: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(body, ensure_ascii=False).encode("utf-8") + b"\n\n"


class BodyLimit:
    """Refuses request bodies over ``max_body`` bytes with 413, by their Content-Length or as they arrive,
    before the app reads them (pure ASGI: the body is buffered here, then handed on)."""

    def __init__(self, app: ASGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        too_big = ApiError(413, f"the request body is over {self.max_body:,} bytes")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_body):
            await too_big.response()(scope, receive, send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left before sending its body
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body:
                await too_big.response()(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
