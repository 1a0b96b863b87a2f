"""``response_format``: JSON answers, free or to a schema, through a real server and the `openai` client.

The greedy reference is independent of the grammar engine (`grammar_support.listed_greedy`: brute force
over a schema whose answers are listed by hand, on the PyTorch model); sampled answers are checked by
parsing them.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from grammar_support import ANSWERS, BOUNDED, COMPACT, LISTED, check_bounded, json_model, listed_greedy
from serve_support import RunningServer
from tokenizers import Tokenizer

from nima.builders.models import DecoderLM

MESSAGES = [{"role": "user", "content": "Answer in JSON."}]


def schema_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[DecoderLM, Tokenizer, Path]:
    return json_model(tmp_path_factory.mktemp("serve-json"))


@pytest.fixture(scope="module")
def server(setup: tuple[DecoderLM, Tokenizer, Path]) -> Iterator[RunningServer]:
    running = RunningServer(setup[2], max_batch=16, max_queue=64)
    yield running
    running.stop()


def client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def prompt_ids(server: RunningServer) -> list[int]:
    response = httpx.post(server.url + "/tokenize", json={"model": "tiny", "messages": MESSAGES})
    return response.json()["tokens"]


@pytest.mark.parametrize("stream", [False, True])
def test_greedy_follows_the_schema_as_brute_force_does(
    stream: bool, server: RunningServer, setup: tuple[DecoderLM, Tokenizer, Path]
) -> None:
    model, tokenizer, _ = setup
    expected = listed_greedy(model, tokenizer, prompt_ids(server), ANSWERS)
    fields: dict[str, Any] = {"model": "tiny", "messages": MESSAGES, "temperature": 0, "max_tokens": 40}
    fields["response_format"] = schema_format(LISTED)
    if stream:
        chunks = list(client(server).chat.completions.create(**fields, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    else:
        choice = client(server).chat.completions.create(**fields).choices[0]
        text, finish = choice.message.content, [choice.finish_reason]
    assert text == expected
    assert text in ANSWERS
    assert finish == ["stop"]


def test_without_the_format_the_model_answers_otherwise(server: RunningServer) -> None:
    """The schema's answer above is the grammar's doing: unconstrained, this random model writes no JSON."""
    fields: dict[str, Any] = {"model": "tiny", "messages": MESSAGES, "temperature": 0, "max_tokens": 12}
    text = client(server).chat.completions.create(**fields).choices[0].message.content
    assert text not in ANSWERS and not text.startswith('{"a":')


def test_sampled_answers_parse_and_each_row_keeps_its_own_place(server: RunningServer) -> None:
    """Seeded sampled requests, alone and then sixteen at once: each answer parses and meets the schema,
    and each is what the same request gave alone (every row follows its grammar from its own state)."""

    def ask(seed: int) -> tuple[str, str]:
        fields: dict[str, Any] = {"model": "tiny", "messages": MESSAGES, "temperature": 1.0, "seed": seed}
        response = client(server).chat.completions.create(
            **fields, max_tokens=60, response_format=schema_format(BOUNDED)
        )
        return response.choices[0].message.content, response.choices[0].finish_reason

    alone = [ask(seed) for seed in range(16)]
    for text, finish in alone:
        assert finish == "stop"
        check_bounded(text)
    assert len({text for text, _ in alone}) > 4  # sampling, not one answer
    together: list[tuple[str, str] | None] = [None] * 16

    def run(seed: int) -> None:
        together[seed] = ask(seed)

    threads = [threading.Thread(target=run, args=(seed,)) for seed in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert together == alone


def test_json_object_mode_and_greedy_copies(server: RunningServer) -> None:
    """``json_object``: a JSON object; greedy ``n: 3`` gives three equal ones (each row its own grammar)."""
    response = client(server).chat.completions.create(
        model="tiny", messages=MESSAGES, temperature=0, n=3, max_tokens=40, response_format={"type": "json_object"}
    )
    texts = [c.message.content for c in response.choices]
    assert len(set(texts)) == 1
    if response.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(texts[0]), dict)
    else:  # cut by max_tokens: still the start of an object
        assert texts[0].lstrip().startswith("{")


def test_completions_take_a_format_too(server: RunningServer) -> None:
    response = client(server).completions.create(
        model="tiny",
        prompt="ROMEO:",
        max_tokens=60,
        temperature=0.7,
        seed=3,
        extra_body={"response_format": schema_format(BOUNDED)},
    )
    assert response.choices[0].finish_reason == "stop"
    check_bounded(response.choices[0].text)


def post(server: RunningServer, **fields: Any) -> httpx.Response:
    return httpx.post(server.url + "/v1/chat/completions", json={"model": "tiny", "messages": MESSAGES, **fields})


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"response_format": {"type": "yaml"}}, "response_format"),
        ({"response_format": {"type": "json_schema"}}, "json_schema"),
        ({"response_format": {"type": "json_schema", "json_schema": {"schema": {}}}}, "name"),
        ({"response_format": schema_format({"type": "nonsense"})}, "cannot be followed"),
        ({"response_format": schema_format({"$ref": "#/$defs/missing"})}, "cannot be followed"),
        ({"response_format": schema_format({"$ref": "http://example.com/s.json"})}, "cannot be followed"),
        ({"response_format": schema_format({"properties": {f"k{i}": {} for i in range(8000)}})}, "at most"),
        ({"response_format": {"type": "json_object"}, "num_beams": 2}, "beam search"),
        ({"response_format": {"type": "json_object"}, "min_tokens": 3}, "min_tokens"),
        ({"response_format": {"type": "json_object"}, "ignore_eos": True}, "ignore_eos"),
        ({"response_format": {"type": "json_object"}, "no_repeat_ngram_size": 2}, "no_repeat_ngram_size"),
    ],
)
def test_formats_that_cannot_be_followed_are_400s(server: RunningServer, fields: dict[str, Any], message: str) -> None:
    response = post(server, **fields)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] is not None and error["param"].startswith("response_format")
    assert message in error["message"]
    assert post(server, max_tokens=2).status_code == 200  # and the server goes on


def test_a_deeply_nested_schema_is_refused(server: RunningServer) -> None:
    deep = '{"type": "string"}'
    for _ in range(400):  # within the body's own nesting bound, past llguidance's
        deep = '{"type": "array", "items": ' + deep + "}"
    body = '{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "response_format": '
    body += '{"type": "json_schema", "json_schema": {"name": "deep", "schema": ' + deep + "}}}"
    headers = {"content-type": "application/json"}
    response = httpx.post(server.url + "/v1/chat/completions", content=body, headers=headers)
    assert response.status_code == 400
    assert response.json()["error"]["param"].startswith("response_format")


def test_a_schema_past_the_engine_s_limits_mid_answer_fails_alone(server: RunningServer) -> None:
    """2,000 optional properties compile, then pass llguidance's items-per-row limit a few tokens in: that
    request ends with the engine's reason, naming the field; the server goes on."""
    many = schema_format({"type": "object", "properties": {f"k{i}": {} for i in range(2000)}, "x-guidance": COMPACT})
    response = post(server, response_format=many, temperature=0, max_tokens=20)
    if response.status_code == 200:  # a model that closes the object at once never reaches the limit
        assert isinstance(json.loads(response.json()["choices"][0]["message"]["content"]), dict)
    else:
        assert response.status_code == 500
        error = response.json()["error"]
        assert error["param"] == "response_format" and "response_format: the grammar engine stopped" in error["message"]
    assert post(server, max_tokens=2).status_code == 200


def test_text_format_changes_nothing(server: RunningServer) -> None:
    plain = post(server, temperature=0, max_tokens=8).json()["choices"][0]["message"]["content"]
    text = post(server, temperature=0, max_tokens=8, response_format={"type": "text"}).json()
    assert text["choices"][0]["message"]["content"] == plain


def test_bundles_the_format_cannot_apply_to(bundles: dict[str, Path]) -> None:
    """A bundle without tokenizer.json has no text to build a grammar over; an encoder-decoder is refused."""
    for kind in ("gpt2", "t5"):
        running = RunningServer(bundles[kind])
        try:
            fields = {"model": "tiny", "prompt": [1, 2, 3], "max_tokens": 2, "response_format": {"type": "json_object"}}
            response = httpx.post(running.url + "/v1/completions", json=fields)
        finally:
            running.stop()
        assert response.status_code == 400, (kind, response.text)
        assert response.json()["error"]["param"] == "response_format"
