"""Clients that misbehave on the connection, and requests that must not reach past their own answer: a
client that leaves while its whole (not streamed) response is being made, one that never reads its stream,
one that leaves or stalls mid-body; a request's own chat template (refused unless the server trusts them;
rendered off the event loop when it does)."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from serve_support import RunningServer, metric

from nima.serve import app as serve_app
from nima.serve import runs

CANCELLED = "nima_cancelled_rows_total"
# 256 rows of 500 tokens: seconds of decoding on the test bundle (which makes 30,000 tokens a second), far
# longer than noticing a client that left
LONG = {"model": "tiny", "prompt": ["To be or not"] * 16, "max_tokens": 500, "temperature": 1, "n": 16, "seed": 1}


@pytest.fixture(scope="module")
def server(text_bundle: Path) -> Iterator[RunningServer]:
    running = RunningServer(text_bundle)
    yield running
    running.stop()


def connect(server: RunningServer, receive_buffer: int | None = None) -> socket.socket:
    host, port = server.url.removeprefix("http://").split(":")
    sock = socket.socket()
    if receive_buffer is not None:  # set before connecting: the window the server may fill
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.connect((host, int(port)))
    return sock


def post(sock: socket.socket, path: str, body: bytes, length: int | None = None) -> None:
    head = f"POST {path} HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
    sock.sendall(f"{head}Content-Length: {len(body) if length is None else length}\r\n\r\n".encode() + body)


def wait_for(condition: object, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.05)
    return False


def test_a_request_template_needs_the_servers_trust(server: RunningServer) -> None:
    chat = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    refused = httpx.post(server.url + "/v1/chat/completions", json={**chat, "chat_template": "{{ 1 }}"})
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["param"] == "chat_template" and "--trust-request-chat-template" in error["message"]
    assert httpx.post(server.url + "/v1/chat/completions", json=chat).status_code == 200  # the bundle's own


def test_a_client_that_leaves_a_whole_response_frees_its_rows(server: RunningServer) -> None:
    """The server checks for a client that left every quarter second while tokens flow, not only when
    none came for that long (a running job sends one every step, so it never noticed)."""
    before, left = metric(server, CANCELLED), metric(server, 'nima_requests_total{status="499"}', 0.0)
    with connect(server) as sock:
        post(sock, "/v1/completions", json.dumps(LONG).encode())
        time.sleep(0.3)
    assert wait_for(lambda: metric(server, CANCELLED) > before, 5), "the rows ran on after the client left"
    assert wait_for(lambda: metric(server, 'nima_requests_total{status="499"}', 0.0) == left + 1, 5)


def test_a_stream_nobody_reads_is_cancelled(server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream whose client reads nothing held every event in memory while decoding went on; past
    `runs.MAX_PENDING` unread events its rows are cancelled, and the stream ends with the reason."""
    monkeypatch.setattr(runs, "MAX_PENDING", 200)
    before = metric(server, CANCELLED)
    with connect(server, receive_buffer=4096) as sock:
        post(sock, "/v1/completions", json.dumps({**LONG, "stream": True}).encode())
        assert wait_for(lambda: metric(server, CANCELLED) > before, 30), "an unread stream went on decoding"
        sock.settimeout(10)
        received = b""
        while not received.endswith(b"data: [DONE]\r\n\r\n") and b"0\r\n\r\n" not in received[-16:]:
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            received += chunk
    assert b"client_too_slow" in received
    assert httpx.get(server.url + "/health").status_code == 200


def test_a_client_that_leaves_mid_body_is_not_a_server_error(server: RunningServer) -> None:
    failed, left = (metric(server, f'nima_requests_total{{status="{s}"}}', 0.0) for s in (500, 499))
    with connect(server) as sock:
        post(sock, "/v1/completions", b'{"model": "tiny", "prompt": "To be", "max', length=1000)
    assert wait_for(lambda: metric(server, 'nima_requests_total{status="499"}', 0.0) == left + 1, 5)
    assert metric(server, 'nima_requests_total{status="500"}', 0.0) == failed


def test_a_body_that_stalls_gets_408(server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(serve_app, "BODY_TIMEOUT", 0.5)
    with connect(server) as sock:
        post(sock, "/v1/completions", b'{"model": "tiny", ', length=1000)
        sock.settimeout(10)
        answer = b""
        while b"did not arrive within" not in answer:  # the head and the body may come in two reads
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 408") and b"did not arrive within" in answer


def test_405_names_the_allowed_methods_and_health_answers_head(server: RunningServer) -> None:
    wrong = httpx.get(server.url + "/v1/completions")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
    assert httpx.head(server.url + "/health").status_code == 200


def test_a_slow_template_does_not_hold_the_event_loop(text_bundle: Path) -> None:
    """A trusted request's template that takes a second to render: the server answers others meanwhile."""
    running = RunningServer(text_bundle, trust_request_templates=True)
    # nested loops over a message's text (ranges are budgeted): 144 million empty iterations, seconds
    slow = "{% for a in messages[0].content %}{% for b in messages[0].content %}{% endfor %}{% endfor %}To be"
    message = {"role": "user", "content": "x" * 12_000}
    chat = {"model": "tiny", "messages": [message], "max_tokens": 2, "chat_template": slow}
    try:
        took: list[float] = []

        def render() -> None:
            start = time.monotonic()
            assert httpx.post(running.url + "/v1/chat/completions", json=chat, timeout=60).status_code == 200
            took.append(time.monotonic() - start)

        thread = threading.Thread(target=render)
        thread.start()
        time.sleep(0.2)  # the template is rendering
        start = time.monotonic()
        assert httpx.get(running.url + "/health").status_code == 200
        health = time.monotonic() - start
        thread.join(60)
        assert took and took[0] > 1.0, took  # the check below means something only if rendering was slow
        assert health < took[0] / 2, (health, took)
    finally:
        running.stop()


def test_a_request_that_fails_fails_alone(server: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fault in one row's own work (its stop strings) or in one beam search fails that request (500, one
    line; the log has the traceback) while a stream beside it runs to its end: before, any fault in the
    scheduler's step failed every request in flight."""
    from nima.runtime import generator as generator_module
    from nima.runtime.rows import Limits

    finish_reason, beam_steps = Limits.finish_reason, generator_module.beam_steps

    def faulty_finish(self: Limits, row: object) -> str | None:
        if "BOOM" in self.stop_strings:
            raise RuntimeError("boom")
        return finish_reason(self, row)  # type: ignore[arg-type]

    def faulty_beams(*args: object, **kwargs: object) -> object:
        options = args[2]
        if options.length_penalty == 7.0:  # type: ignore[attr-defined]
            raise RuntimeError("boom")
        return (yield from beam_steps(*args, **kwargs))  # type: ignore[arg-type]

    monkeypatch.setattr(Limits, "finish_reason", faulty_finish)
    monkeypatch.setattr(generator_module, "beam_steps", faulty_beams)
    scheduler = server.service.scheduler
    assert scheduler is not None
    step = scheduler._step

    def slow_step() -> None:  # 300 steps take seconds: the failing requests surely meet the stream
        time.sleep(0.005)
        step()

    monkeypatch.setattr(scheduler, "_step", slow_step)
    long = {"model": "tiny", "prompt": "To be", "max_tokens": 300, "temperature": 0, "stream": True}
    bad = [
        {"model": "tiny", "prompt": "To be", "max_tokens": 20, "stop": ["BOOM"]},
        {"model": "tiny", "prompt": "To be", "max_tokens": 20, "num_beams": 2, "length_penalty": 7.0},
    ]
    with httpx.Client(timeout=60) as client, client.stream("POST", server.url + "/v1/completions", json=long) as stream:
        lines = stream.iter_lines()
        next(lines)  # the stream's row is running
        for body in bad:
            failed = httpx.post(server.url + "/v1/completions", json=body, timeout=60)
            assert failed.status_code == 500 and "RuntimeError" in failed.json()["error"]["message"], failed.text
        rest = [line for line in lines if line]
    assert rest[-1] == "data: [DONE]" and not any("error" in line for line in rest)
    assert json.loads(rest[-2].removeprefix("data: "))["choices"][0]["finish_reason"] in ("length", "stop")


def test_a_whole_response_is_never_cut_for_unread_events(
    server: RunningServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The cap on unread events is for streams: a whole response's queue is the server's own to drain, and a
    beam job's tokens all arrive at once (64 beam prompts of 16 tokens passed 16,384)."""
    monkeypatch.setattr(runs, "MAX_PENDING", 10)
    body = {"model": "tiny", "prompt": ["To be", "or not"], "max_tokens": 20, "num_beams": 4, "n": 4}
    response = httpx.post(server.url + "/v1/completions", json=body, timeout=60)
    assert response.status_code == 200, response.text
    assert len(response.json()["choices"]) == 8
