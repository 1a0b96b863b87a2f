"""The HTTP API: FastAPI routes over a `Service`, in OpenAI's shapes.

``POST /v1/completions`` and ``/v1/chat/completions`` (whole, or streamed as server-sent events ending
in ``data: [DONE]``), ``GET /v1/models`` and ``/v1/models/{id}``, ``POST /tokenize`` and ``/detokenize``
(vLLM's), ``GET /health`` (200 once the model is loaded, 503 before) and ``GET /metrics``
(Prometheus). Each request becomes one scheduler job per prompt; its events come back from the
scheduler thread, one hand-over per decode step (``call_soon_threadsafe``), into each request's
asyncio queue (`nima.serve.runs`, which also notices clients that leave). Every refusal
is an `ApiError` in OpenAI's error shape; bodies are capped (413) before they are parsed.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nima.serve.errors import ApiError, from_validation
from nima.serve.jobs import Event, Job
from nima.serve.protocol import ChatRequest, CompletionRequest, DetokenizeRequest, TokenizeRequest
from nima.serve.runs import respond
from nima.serve.service import Service
from nima.serve.tokenize import detokenize, tokenize

log = logging.getLogger("nima.serve")
MAX_BODY = 1 << 20  # bytes of a request body
BODY_TIMEOUT = 30.0  # seconds a request body may take to arrive (a client that stalls holds a connection)
KEYED = ("/v1/", "/tokenize", "/detokenize")  # paths --api-key guards; /health and /metrics stay open for probes


def create_app(
    service: Service, api_key: str | None = None, max_body: int = MAX_BODY, allow_origins: list[str] | None = None
) -> FastAPI:
    """The app; its startup loads ``service`` on a worker thread unless it is loaded already. ``allow_origins``:
    the web origins whose pages may call it (CORS; ``["*"]``: any), none by default."""

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
        refused = ApiError(err.status_code, f"{request.method} {request.url.path}: {message}", headers=err.headers)
        return refused.response()  # a 405 keeps its Allow header

    @app.exception_handler(Exception)
    async def unexpected(request: Request, err: Exception) -> JSONResponse:
        log.exception("request failed: %s %s", request.method, request.url.path)
        return ApiError(500, f"the server failed on this request ({type(err).__name__}); see its log").response()

    @app.middleware("http")
    async def count_and_authorise(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        if api_key is not None and request.url.path.startswith(KEYED) and not _authorised(request, api_key):
            response: Response = ApiError(401, "Incorrect API key provided", code="invalid_api_key").response()
        else:
            response = await call_next(request)
        service.metrics.requests.labels(status=str(response.status_code)).inc()
        if response.status_code >= 400:
            log.info("request %s %s status=%d", request.method, request.url.path, response.status_code)
        return response

    @app.api_route("/health", methods=["GET", "HEAD"])
    async def health() -> JSONResponse:
        if service.ready:
            return JSONResponse({"status": "ok"})
        if service.load_error:
            return JSONResponse({"status": "error", "message": service.load_error}, status_code=500)
        return JSONResponse({"status": "loading"}, status_code=503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(service.metrics.text(), media_type="text/plain; version=0.0.4; charset=utf-8")

    started = int(time.time())  # the model card's `created`: the same in every answer

    def card() -> dict[str, Any]:
        return {"id": service.model_name, "object": "model", "created": started, "owned_by": "nima"}

    @app.get("/v1/models")
    async def models() -> JSONResponse:
        return JSONResponse({"object": "list", "data": [card()]})

    @app.get("/v1/models/{model:path}")
    async def model(model: str) -> JSONResponse:
        if model != service.model_name:
            message = f"The model '{model}' does not exist; this server serves '{service.model_name}'"
            raise ApiError(404, message, "model", "model_not_found")
        return JSONResponse(card())

    @app.post("/tokenize")
    async def tokenize_route(request: Request) -> JSONResponse:
        body = _parse(TokenizeRequest, await _json(request))
        return JSONResponse(await asyncio.to_thread(tokenize, service, body))

    @app.post("/detokenize")
    async def detokenize_route(request: Request) -> JSONResponse:
        body = _parse(DetokenizeRequest, await _json(request))
        return JSONResponse(await asyncio.to_thread(detokenize, service, body))

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        body = _parse(CompletionRequest, await _json(request))
        plan = await asyncio.to_thread(service.plan_completion, body)  # tokenizing: off the event loop
        return await respond(service, plan, request, chat=False)

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = _parse(ChatRequest, await _json(request))
        plan = await asyncio.to_thread(service.plan_chat, body)  # a template renders off the event loop
        return await respond(service, plan, request, chat=True)

    if allow_origins:  # outermost: a browser's preflight carries no key and must be answered before the key check
        app.add_middleware(
            CORSMiddleware,
            allow_origins=allow_origins,
            allow_methods=["GET", "POST", "HEAD"],
            allow_headers=["*"],  # the official JavaScript client sends X-Stainless-* headers; the key still applies
            expose_headers=["Retry-After"],
            max_age=600,
        )
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
        if "integer string conversion" in str(err):  # Python's limit on digits, with advice for programmers
            raise ApiError(400, "the body is not valid JSON: a number with too many digits") from None
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
        deadline = time.monotonic() + BODY_TIMEOUT
        while True:
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - time.monotonic()))
            except asyncio.TimeoutError:  # noqa: UP041 - Python 3.10 raises this, not TimeoutError
                late = ApiError(408, f"the request body did not arrive within {BODY_TIMEOUT:.0f} s")
                await late.response()(scope, receive, send)
                return
            if message["type"] != "http.request":  # the client left before sending its body: logged as 499
                await ApiError(499, "the client closed the connection before its body ended").response()(
                    scope, receive, send
                )
                return
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
