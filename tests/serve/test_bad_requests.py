"""Requests a server must refuse, each with its status, OpenAI's error shape and a message naming the field;
the server answers normally after all of them. Also: the queue limit, the API key, health while loading,
an encoder-decoder bundle, the bundle's own chat template."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from serve_support import RunningServer

from nima.runtime import Generator
from nima.serve.service import Service

OK: dict[str, Any] = {"model": "tiny", "prompt": "To be", "max_tokens": 4}
CHAT: dict[str, Any] = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
# (name, path, body (dict, or raw bytes), status, words the message holds, param)
BAD: list[tuple[str, str, Any, int, str, str | None]] = [
    ("broken json", "/v1/completions", b'{"model": "tiny", "prompt": ', 400, "not valid JSON", None),
    ("not an object", "/v1/completions", b"[1, 2, 3]", 400, "JSON object", None),
    ("empty body", "/v1/completions", b"", 400, "not valid JSON", None),
    ("missing prompt", "/v1/completions", {"model": "tiny"}, 400, "prompt: a required field is missing", "prompt"),
    ("missing model", "/v1/completions", {"prompt": "x"}, 400, "model", "model"),
    ("prompt a number", "/v1/completions", {**OK, "prompt": 5}, 400, "prompt", "prompt"),
    ("max_tokens a string", "/v1/completions", {**OK, "max_tokens": "5"}, 400, "max_tokens", "max_tokens"),
    (
        "max_tokens negative",
        "/v1/completions",
        {**OK, "max_tokens": -3},
        400,
        "greater than or equal to 1",
        "max_tokens",
    ),
    ("max_tokens zero", "/v1/completions", {**OK, "max_tokens": 0}, 400, "max_tokens", "max_tokens"),
    ("max_tokens huge", "/v1/completions", {**OK, "max_tokens": 10**9}, 400, "maximum context length", "max_tokens"),
    ("temperature too high", "/v1/completions", {**OK, "temperature": 5}, 400, "temperature", "temperature"),
    ("temperature a bool", "/v1/completions", {**OK, "temperature": True}, 400, "temperature", "temperature"),
    ("top_p zero", "/v1/completions", {**OK, "top_p": 0}, 400, "top_p", "top_p"),
    ("n too big", "/v1/completions", {**OK, "n": 1000, "temperature": 1}, 400, "n:", "n"),
    ("n past beams", "/v1/completions", {**OK, "n": 3, "num_beams": 2}, 400, "n:", "n"),
    ("unknown field", "/v1/completions", {**OK, "frobnicate": 1}, 400, "Unrecognized request argument", "frobnicate"),
    ("stop not text", "/v1/completions", {**OK, "stop": 7}, 400, "stop", "stop"),
    ("empty stop", "/v1/completions", {**OK, "stop": [""]}, 400, "stop", "stop"),
    ("too many stops", "/v1/completions", {**OK, "stop": ["a"] * 17}, 400, "at most 16", "stop"),
    ("seed past int64", "/v1/completions", {**OK, "seed": 2**63}, 400, "seed", "seed"),
    ("seed below int64", "/v1/completions", {**OK, "seed": -(2**63) - 1}, 400, "seed", "seed"),
    ("logprobs too many", "/v1/completions", {**OK, "logprobs": 50}, 400, "logprobs", "logprobs"),
    (
        "presence out of range",
        "/v1/completions",
        {**OK, "presence_penalty": 3},
        400,
        "presence_penalty",
        "presence_penalty",
    ),
    (
        "token id outside the vocabulary",
        "/v1/completions",
        {**OK, "prompt": [1, 99999]},
        400,
        "outside the vocabulary",
        "prompt",
    ),
    ("empty prompt list", "/v1/completions", {**OK, "prompt": []}, 400, "prompt", "prompt"),
    ("empty prompt text", "/v1/completions", {**OK, "prompt": ""}, 400, "prompt 0 is empty", "prompt"),
    (
        "an empty prompt among ids",
        "/v1/completions",
        {**OK, "prompt": [[5, 6], []]},
        400,
        "prompt 1 is empty",
        "prompt",
    ),
    ("too many prompts", "/v1/completions", {**OK, "prompt": ["a"] * 65}, 400, "at most 64", "prompt"),
    ("echo with logprobs", "/v1/completions", {**OK, "echo": True, "logprobs": 1}, 400, "echo", "echo"),
    (
        "prompt past the context",
        "/v1/completions",
        {**OK, "prompt": "ab " * 600},
        400,
        "maximum context length",
        "prompt",
    ),
    ("logit_bias: not an id", "/v1/completions", {**OK, "logit_bias": {"a": 1.0}}, 400, "not a token id", "logit_bias"),
    ("logit_bias: negative", "/v1/completions", {**OK, "logit_bias": {"-1": 1.0}}, 400, "not a token id", "logit_bias"),
    (
        "logit_bias past the vocabulary",
        "/v1/completions",
        {**OK, "logit_bias": {"100000": 1.0}},
        400,
        "past the model's vocabulary",
        "logit_bias",
    ),
    ("logit_bias too large", "/v1/completions", {**OK, "logit_bias": {"5": 101}}, 400, "100", "logit_bias.5"),
    ("logit_bias not a number", "/v1/completions", {**OK, "logit_bias": {"5": "1"}}, 400, "number", "logit_bias.5"),
    (
        "logit_bias too many",
        "/v1/completions",
        {**OK, "logit_bias": {str(i): 1.0 for i in range(1025)}},
        400,
        "1024",
        "logit_bias",
    ),
    (
        "logit_bias with beams",
        "/v1/completions",
        {**OK, "logit_bias": {"5": 1.0}, "num_beams": 2},
        400,
        "beam search",
        "logit_bias",
    ),
    ("suffix", "/v1/completions", {**OK, "suffix": "x"}, 400, "not supported", "suffix"),
    ("reasoning", "/v1/chat/completions", {**CHAT, "reasoning_effort": "low"}, 400, "supported", "reasoning_effort"),
    ("audio out", "/v1/chat/completions", {**CHAT, "modalities": ["text", "audio"]}, 400, "text", "modalities"),
    (
        "an image part",
        "/v1/chat/completions",
        {**CHAT, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
        400,
        "image_url",
        "messages.0.content.0",
    ),
    (
        "metadata too long",
        "/v1/completions",
        {**OK, "metadata": {str(i): "v" for i in range(17)}},
        400,
        "16",
        "metadata",
    ),
    ("stream beams", "/v1/completions", {**OK, "stream": True, "num_beams": 2}, 400, "cannot stream", "stream"),
    (
        "stream_options without stream",
        "/v1/completions",
        {**OK, "stream_options": {"include_usage": True}},
        400,
        "stream",
        "stream_options",
    ),
    ("unknown model", "/v1/completions", {**OK, "model": "gpt-4"}, 404, "does not exist", "model"),
    ("no messages", "/v1/chat/completions", {**CHAT, "messages": []}, 400, "messages", "messages"),
    (
        "bad role",
        "/v1/chat/completions",
        {**CHAT, "messages": [{"role": "wizard", "content": "x"}]},
        400,
        "role",
        "messages.0.role",
    ),
    (
        "content a number",
        "/v1/chat/completions",
        {**CHAT, "messages": [{"role": "user", "content": 3}]},
        400,
        "content",
        "messages.0.content",
    ),
    ("tools", "/v1/chat/completions", {**CHAT, "tools": [{"type": "function"}]}, 400, "not supported", "tools"),
    ("top_logprobs alone", "/v1/chat/completions", {**CHAT, "top_logprobs": 2}, 400, "needs logprobs", "top_logprobs"),
    (
        "unknown response format",
        "/v1/chat/completions",
        {**CHAT, "response_format": {"type": "yaml"}},
        400,
        "json_schema",
        "response_format",
    ),
    (
        "template reaching Python",
        "/v1/chat/completions",
        {**CHAT, "chat_template": "{{ ''.__class__.__mro__[1].__subclasses__() }}"},
        400,
        "sandbox",
        "chat_template",
    ),
    (
        "template reaching globals",
        "/v1/chat/completions",
        {**CHAT, "chat_template": "{{ raise_exception.__globals__ }}"},
        400,
        "sandbox",
        "chat_template",
    ),
    (
        "template changing messages",
        "/v1/chat/completions",
        {**CHAT, "chat_template": "{{ messages.append(1) }}"},
        400,
        "chat template",
        "chat_template",
    ),
    (
        "template raising",
        "/v1/chat/completions",
        {**CHAT, "chat_template": "{{ raise_exception('no system role') }}"},
        400,
        "no system role",
        "chat_template",
    ),
    (
        "template broken",
        "/v1/chat/completions",
        {**CHAT, "chat_template": "{% for %}"},
        400,
        "chat template",
        "chat_template",
    ),
    (
        "template too long output",
        "/v1/chat/completions",
        {**CHAT, "chat_template": "{% for i in range(99999) %}{{ 'x' * 99 }}{% endfor %}"},
        400,
        "passed",
        "chat_template",
    ),
    (
        "template repeating a string 2e9 times",
        "/v1/chat/completions",
        {**CHAT, "chat_template": "{{ ('x' * 2000000000)|length }}"},
        400,
        "items passes",
        "chat_template",
    ),
    (
        "template raising a power",
        "/v1/chat/completions",
        {**CHAT, "chat_template": "{{ 2 ** 100000000 }}"},
        400,
        "bits passes",
        "chat_template",
    ),
    (
        "template with nested ranges",
        "/v1/chat/completions",
        {**CHAT, "chat_template": "{% for i in range(100000) %}{% for j in range(800) %}{% endfor %}{% endfor %}"},
        400,
        "ranges pass 1,000,000 items",
        "chat_template",
    ),
    (
        "template doubling an integer",
        "/v1/chat/completions",
        {**CHAT, "chat_template": "{% set a = 2**30000 %}{% set b = a*a %}{% set c = b*b %}{{ c*c > 0 }}"},
        400,
        "bits passes",
        "chat_template",
    ),
    (
        "template concatenating texts",
        "/v1/chat/completions",
        {**CHAT, "chat_template": "{% set a = 'x' * 1000000 %}{{ (a + a)|length }}"},
        400,
        "items passes",
        "chat_template",
    ),
    (  # as raw JSON: httpx cannot encode a lone surrogate, a client that writes JSON itself can
        "stop a lone surrogate",
        "/v1/completions",
        b'{"model": "tiny", "prompt": "To be", "max_tokens": 4, "stop": ["\\udfff"]}',
        400,
        "not valid Unicode",
        "stop",
    ),
    (
        "length_penalty huge",
        "/v1/completions",
        {**OK, "num_beams": 2, "length_penalty": 1e308},
        400,
        "length_penalty",
        "length_penalty",
    ),
    (
        "length_penalty hugely negative",
        "/v1/completions",
        {**OK, "num_beams": 2, "length_penalty": -1e308},
        400,
        "length_penalty",
        "length_penalty",
    ),
    (
        "a number of 5000 digits",
        "/v1/completions",
        b'{"model": "tiny", "seed": ' + b"9" * 5000 + b"}",
        400,
        "too many digits",
        None,
    ),
    ("wrong endpoint", "/v1/embeddings", OK, 404, "no such endpoint", None),
]


@pytest.fixture(scope="module")
def server(text_bundle: Path) -> Iterator[RunningServer]:
    running = RunningServer(text_bundle, max_body=64 * 1024, trust_request_templates=True)
    yield running
    running.stop()


@pytest.mark.parametrize("case", BAD, ids=[case[0] for case in BAD])
def test_bad_request_is_refused_by_field(case: tuple, server: RunningServer) -> None:
    _, path, body, status, words, param = case
    if isinstance(body, bytes):
        response = httpx.post(server.url + path, content=body, headers={"content-type": "application/json"})
    else:
        response = httpx.post(server.url + path, json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert words in error["message"], error["message"]
    assert error["param"] == param
    assert "Traceback" not in response.text


def test_oversized_body_is_refused_before_it_is_read(server: RunningServer) -> None:
    response = httpx.post(server.url + "/v1/completions", json={**OK, "prompt": "x" * 100_000})
    assert response.status_code == 413 and "over 65,536 bytes" in response.json()["error"]["message"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"model": "tiny", "prompt": "'
        for _ in range(100):
            yield b"x" * 1024
        yield b'"}'

    streamed = httpx.post(server.url + "/v1/completions", content=chunks())
    assert streamed.status_code == 413


def test_deeply_nested_json_is_refused(server: RunningServer) -> None:
    body = b'{"model": "tiny", "prompt": ' + b"[" * 20_000 + b"]" * 20_000 + b"}"
    response = httpx.post(server.url + "/v1/completions", content=body)
    assert response.status_code in (400, 413) and "error" in response.json()


def test_the_server_still_answers_after_bad_requests(server: RunningServer) -> None:
    for _, path, body, *_ in BAD[:10]:
        if isinstance(body, bytes):
            httpx.post(server.url + path, content=body)
        else:
            httpx.post(server.url + path, json=body)
    api = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
    assert api.completions.create(**OK, temperature=0).choices[0].finish_reason == "length"
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    assert 'nima_requests_total{status="400"}' in httpx.get(server.url + "/metrics").text


def test_api_key(text_bundle: Path) -> None:
    running = RunningServer(text_bundle, api_key="s3cret")
    try:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            response = httpx.post(running.url + "/v1/completions", json=OK, headers=headers)
            assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
            assert response.json()["error"]["type"] == "invalid_request_error"  # OpenAI's type for it
        assert httpx.get(running.url + "/v1/models").status_code == 401
        assert httpx.post(running.url + "/tokenize", json={"prompt": "To be"}).status_code == 401
        assert httpx.post(running.url + "/detokenize", json={"tokens": [1]}).status_code == 401
        keyed = {"Authorization": "Bearer s3cret"}
        assert httpx.post(running.url + "/tokenize", json={"prompt": "To be"}, headers=keyed).status_code == 200
        assert httpx.get(running.url + "/health").status_code == 200  # probes need no key
        right = openai.OpenAI(base_url=running.url + "/v1", api_key="s3cret", max_retries=0)
        assert right.completions.create(**OK).choices[0].text is not None
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=running.url + "/v1", api_key="nope", max_retries=0).models.list()
    finally:
        running.stop()


def test_a_full_queue_answers_429_with_retry_after(text_bundle: Path) -> None:
    running = RunningServer(text_bundle, max_batch=1, max_queue=1)
    scheduler = running.service.scheduler
    assert scheduler is not None
    step = scheduler._step

    def slow_step() -> None:  # a busy server: the first request's 500 steps take seconds
        time.sleep(0.005)
        step()

    scheduler._step = slow_step  # type: ignore[method-assign]
    try:
        long = {**OK, "max_tokens": 500, "temperature": 0, "stream": True}
        with httpx.Client(timeout=60) as first, httpx.Client(timeout=60) as second:
            with first.stream("POST", running.url + "/v1/completions", json=long) as streaming:
                lines = streaming.iter_lines()  # kept: a dropped iterator closes the stream, and the row leaves
                next(lines)  # the first row runs, alone in a batch of one
                waiting = threading.Thread(target=lambda: second.post(running.url + "/v1/completions", json=OK))
                waiting.start()
                deadline = time.monotonic() + 10
                while len(scheduler.waiting) == 0 and time.monotonic() < deadline:
                    time.sleep(0.005)
                refused = httpx.post(running.url + "/v1/completions", json=OK)
                assert refused.status_code == 429, refused.text
                assert refused.headers["retry-after"] == "1"
                assert refused.json()["error"]["type"] == "rate_limit_error"
            waiting.join(timeout=60)
    finally:
        running.stop()


class SlowService(Service):
    """A service whose loading waits for a signal: health must say 503 until it has loaded."""

    release = threading.Event()

    def load(self) -> None:
        self.release.wait(30)
        super().load()


def test_health_is_503_until_the_model_is_loaded(text_bundle: Path) -> None:
    running = RunningServer(text_bundle, wait_ready=False, service=SlowService)
    try:
        assert httpx.get(running.url + "/health").status_code == 503
        loading = httpx.post(running.url + "/v1/completions", json=OK)
        assert loading.status_code == 503 and "loading" in loading.json()["error"]["message"]
        SlowService.release.set()
        deadline = time.monotonic() + 30
        while httpx.get(running.url + "/health").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert httpx.get(running.url + "/health").json() == {"status": "ok"}
        assert httpx.post(running.url + "/v1/completions", json=OK).status_code == 200
    finally:
        running.stop()


def test_a_bundle_that_fails_to_load_is_reported_to_every_request(tmp_path: Path, text_bundle: Path) -> None:
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(text_bundle, broken)
    (broken / "model.onnx").write_bytes(b"not a graph")
    running = RunningServer(broken, wait_ready=False)
    try:
        deadline = time.monotonic() + 30
        while httpx.get(running.url + "/health").status_code == 503 and time.monotonic() < deadline:
            time.sleep(0.02)
        health = httpx.get(running.url + "/health")
        assert health.status_code == 500 and "cannot load" in health.json()["message"]
        refused = httpx.post(running.url + "/v1/completions", json=OK)
        error = refused.json()["error"]
        assert refused.status_code == 500 and error["code"] == "model_load_failed", refused.text
        assert "cannot load" in error["message"] and "retry" not in error["message"]
    finally:
        running.stop()


def test_an_encoder_decoder_bundle_is_served(bundles: dict[str, Path]) -> None:
    generator = Generator(bundles["t5"])
    running = RunningServer(bundles["t5"], model_name="t5")
    try:
        api = openai.OpenAI(base_url=running.url + "/v1", api_key="x", max_retries=0)
        sources = [[5, 9, 12, 30, 7], [8, 8, 19]]
        got = api.completions.create(model="t5", prompt=sources, max_tokens=12, temperature=0)
        for source, choice in zip(sources, got.choices, strict=True):
            expected = generator.generate(sources=[source], max_new_tokens=12, do_sample=False)[0].completions[0]
            assert choice.token_ids == expected.token_ids  # type: ignore[attr-defined]  # no tokenizer: ids shown
        chunks = list(api.completions.create(model="t5", prompt=sources[0], max_tokens=5, temperature=0, stream=True))
        assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    finally:
        running.stop()


def test_the_bundles_chat_template_is_used(text_bundle: Path, tmp_path: Path) -> None:
    bundle = tmp_path / "templated"
    shutil.copytree(text_bundle, bundle)
    config = (
        json.loads((bundle / "tokenizer_config.json").read_text())
        if (bundle / "tokenizer_config.json").exists()
        else {}
    )
    config["chat_template"] = (
        "{{ bos_token }}{% for m in messages %}[{{ m['role'] | upper }}] {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}[ASSISTANT]{% endif %}"
    )
    config["bos_token"] = "<|endoftext|>"
    (bundle / "tokenizer_config.json").write_text(json.dumps(config))
    generator = Generator(bundle)
    rendered = "<|endoftext|>[USER] hi\n[ASSISTANT]"
    ids = generator.tokenizer.encode(rendered, add_special_tokens=False).ids  # type: ignore[union-attr]
    running = RunningServer(bundle)
    try:
        got = httpx.post(
            running.url + "/v1/chat/completions", json={**CHAT, "temperature": 0, "return_token_ids": True}
        ).json()
        assert got["usage"]["prompt_tokens"] == len(ids)
        expected = generator.generate([ids], max_new_tokens=4, do_sample=False)[0]
        assert got["choices"][0]["token_ids"] == expected.token_ids
    finally:
        running.stop()


def test_a_fault_in_the_scheduler_fails_the_requests_in_flight_and_serving_goes_on(text_bundle: Path) -> None:
    running = RunningServer(text_bundle)
    scheduler = running.service.scheduler
    assert scheduler is not None
    step = scheduler.batch.step
    faults = [RuntimeError("a bug")]

    def faulty(tokens):  # noqa: ANN001, ANN202 - the first decode step raises, the next ones run
        if faults:
            raise faults.pop()
        return step(tokens)

    scheduler.batch.step = faulty  # type: ignore[method-assign]
    try:
        failed = httpx.post(running.url + "/v1/completions", json={**OK, "max_tokens": 8, "temperature": 0})
        assert failed.status_code == 500
        assert "the server failed on this request (RuntimeError)" in failed.json()["error"]["message"]
        assert "Traceback" not in failed.text
        again = httpx.post(running.url + "/v1/completions", json={**OK, "max_tokens": 8, "temperature": 0})
        assert again.status_code == 200 and again.json()["usage"]["completion_tokens"] == 8
        assert httpx.get(running.url + "/metrics").text.count("nima_running_rows 0.0") == 1
    finally:
        running.stop()


def test_tool_messages_in_openais_shape_reach_the_template(server: RunningServer) -> None:
    """An assistant's ``tool_calls`` (content null) and a tool's answer with its ``tool_call_id``, as the
    `openai` client sends them, are taken and given to the template (it raises where one is missing)."""
    call = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "content": "42", "tool_call_id": "call_1"},
    ]
    template = (
        "{% if messages[2].tool_call_id != 'call_1' %}{{ raise_exception('no tool_call_id') }}{% endif %}"
        "{% if messages[1].tool_calls[0].function.name != 'f' %}{{ raise_exception('no tool_calls') }}{% endif %}"
        "To be"
    )
    body = {"model": "tiny", "messages": messages, "max_tokens": 2, "chat_template": template}
    response = httpx.post(server.url + "/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    body["messages"] = [messages[0], messages[1], {"role": "tool", "content": "42"}]
    refused = httpx.post(server.url + "/v1/chat/completions", json=body)
    assert refused.status_code == 400 and "no tool_call_id" in refused.json()["error"]["message"]
