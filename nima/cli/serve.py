"""`nima serve BUNDLE`: an OpenAI-compatible HTTP server with continuous batching (`nima.serve`)."""

from __future__ import annotations

import errno
import logging
import re
import socket
from pathlib import Path
from typing import Annotated

import typer

from nima.cli.common import fail

Opt = typer.Option


def serve(
    bundle: Annotated[Path, typer.Argument(metavar="BUNDLE", help="A folder written by nima export --onnx.")],
    host: Annotated[str, Opt(help="Address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    port: Annotated[int, Opt(min=1, max=65535, help="Port to listen on.")] = 8000,
    max_batch: Annotated[int, Opt(min=1, max=256, help="Most rows decoded together; more wait in the queue.")] = 16,
    max_queue: Annotated[int, Opt(min=0, max=100_000, help="Most requests waiting; beyond: 429.")] = 64,
    api_key: Annotated[
        str | None,
        Opt(envvar="NIMA_API_KEY", help="Require 'Authorization: Bearer KEY' on /v1, /tokenize, /detokenize."),
    ] = None,
    model_name: Annotated[str | None, Opt(help="The model's name in the API (default: the bundle folder's).")] = None,
    provider: Annotated[str, Opt(help="ONNX Runtime provider: cpu | cuda.")] = "cpu",
    threads: Annotated[int | None, Opt(min=1, help="CPU threads for ONNX Runtime (default: all cores).")] = None,
    spin: Annotated[
        bool,
        Opt("--spin/--no-spin", help="ORT threads busy-wait between steps (off: HTTP needs cores)."),
    ] = False,
    max_body: Annotated[int, Opt(min=1024, help="Largest request body in bytes (beyond: 413).")] = 1 << 20,
    prefill_budget: Annotated[
        int | None,
        Opt(min=1, help="Most prompt tokens prefilled between two decode steps while rows run (one prompt always)."),
    ] = None,
    trust_request_chat_template: Annotated[
        bool,
        Opt(help="Render chat templates sent in requests (chat_template); off: only the bundle's is rendered."),
    ] = False,
    allow_origin: Annotated[
        list[str] | None,
        Opt(help="A web origin whose pages may call the API (CORS): http://localhost:3000, or '*'. Repeatable."),
    ] = None,
) -> None:
    """Serve BUNDLE over OpenAI's API: /v1/completions, /v1/chat/completions, /v1/models, /health, /metrics."""
    from nima.cli.common import require_runtime
    from nima.installed import serve_problem

    require_runtime("serve")
    problem = serve_problem("nima serve")
    if problem:
        fail(problem)
    from nima.runtime.bundle import read_bundle
    from nima.runtime.errors import GenerateError

    try:
        found = read_bundle(bundle)  # the quick checks, before the port is taken; sessions load in the server
        found.model_spec  # noqa: B018 - the whole spec, validated: the scheduler reads it (cache moves)
    except GenerateError as err:
        fail(str(err))
    if provider not in ("cpu", "cuda"):
        fail(f"--provider {provider}: use cpu or cuda")
    if api_key is not None and not api_key.strip():
        fail("--api-key is empty")
    origins = list(allow_origin or [])
    for origin in origins:
        if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin):
            fail(f"--allow-origin {origin}: give a scheme and host (http://localhost:3000) or '*'")
    _check_port(host, port)

    import uvicorn

    from nima.serve.app import create_app
    from nima.serve.service import Service

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    name = model_name or found.path.resolve().name
    service = Service(
        found.path, name, max_batch, max_queue, provider, threads, spin, prefill_budget, trust_request_chat_template
    )
    typer.echo(f"serving {name} ({found.spec.architecture}) at http://{host}:{port}/v1", err=True)
    app = create_app(service, api_key, max_body, origins)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


def _check_port(host: str, port: int) -> None:
    """Fail with one line when ``host:port`` cannot be bound (in use, or an address this machine lacks)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                fail(f"--port {port}: already in use on {host}; pick another with --port")
            fail(f"--host {host} --port {port}: cannot listen there ({err.strerror or err})")
