"""``/tokenize`` and ``/detokenize`` (vLLM's shapes) against the bundle's tokenizer.json read on its own,
and against what the completion endpoints count as a request's prompt; ``/v1/models/{id}``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from serve_support import RunningServer
from tokenizers import Tokenizer

PROMPT = "To be, or not to be: that is the question."
MESSAGES = [{"role": "system", "content": "Speak as a king."}, {"role": "user", "content": "Who goes there?"}]


@pytest.fixture(scope="module")
def server(text_bundle: Path) -> Iterator[RunningServer]:
    running = RunningServer(text_bundle)
    yield running
    running.stop()


def post(server: RunningServer, path: str, body: dict) -> httpx.Response:
    return httpx.post(server.url + path, json=body, timeout=60)


def test_a_prompt_counts_what_a_completion_costs(server: RunningServer, text_bundle: Path) -> None:
    tokenizer = Tokenizer.from_file(str(text_bundle / "tokenizer.json"))
    got = post(server, "/tokenize", {"model": "tiny", "prompt": PROMPT, "return_token_strs": True}).json()
    expected = tokenizer.encode(PROMPT).ids
    assert got["tokens"] == expected and got["count"] == len(expected) > 5
    assert got["token_strs"] == [tokenizer.id_to_token(t) for t in expected]
    assert got["max_model_len"] == 512
    completion = post(server, "/v1/completions", {"model": "tiny", "prompt": PROMPT, "max_tokens": 1}).json()
    assert completion["usage"]["prompt_tokens"] == got["count"]
    bare = post(server, "/tokenize", {"prompt": PROMPT, "add_special_tokens": False}).json()  # model optional
    assert bare["tokens"] == tokenizer.encode(PROMPT, add_special_tokens=False).ids


def test_messages_count_what_a_chat_costs(server: RunningServer) -> None:
    got = post(server, "/tokenize", {"messages": MESSAGES}).json()
    chat = post(server, "/v1/chat/completions", {"model": "tiny", "messages": MESSAGES, "max_tokens": 1}).json()
    assert got["count"] == chat["usage"]["prompt_tokens"] == len(got["tokens"]) > 0
    shorter = post(server, "/tokenize", {"messages": MESSAGES, "add_generation_prompt": False}).json()
    assert shorter["count"] < got["count"]  # the default template opens the assistant's turn


def test_detokenize_gives_the_text_back(server: RunningServer, text_bundle: Path) -> None:
    tokens = post(server, "/tokenize", {"prompt": PROMPT}).json()["tokens"]
    assert post(server, "/detokenize", {"tokens": tokens}).json() == {"prompt": PROMPT}
    tokenizer = Tokenizer.from_file(str(text_bundle / "tokenizer.json"))
    end = tokenizer.token_to_id("<|endoftext|>")
    text = post(server, "/detokenize", {"model": "tiny", "tokens": [*tokens, end]}).json()["prompt"]
    assert text == PROMPT + "<|endoftext|>"  # special tokens kept


@pytest.mark.parametrize(
    ("path", "body", "status", "needle", "param"),
    [
        ("/tokenize", {"prompt": PROMPT, "messages": MESSAGES}, 400, "either", "prompt"),
        ("/tokenize", {}, 400, "either", "prompt"),
        ("/tokenize", {"model": "gpt-4", "prompt": PROMPT}, 404, "does not exist", "model"),
        ("/tokenize", {"prompt": 5}, 400, "string", "prompt"),
        ("/tokenize", {"prompt": PROMPT, "extra": 1}, 400, "", "extra"),
        ("/detokenize", {"tokens": [1, 100000]}, 400, "outside the vocabulary", "tokens"),
        ("/detokenize", {"tokens": [-1]}, 400, "outside the vocabulary", "tokens"),
        ("/detokenize", {"tokens": "1 2"}, 400, "list", "tokens"),
    ],
)
def test_bad_requests(server: RunningServer, path: str, body: dict, status: int, needle: str, param: str) -> None:
    got = post(server, path, body)
    error = got.json()["error"]
    assert got.status_code == status and needle in error["message"] and error["param"] == param, got.text


def test_a_bundle_without_a_tokenizer_says_so(bundles: dict[str, Path]) -> None:
    running = RunningServer(bundles["llama-ort"])
    try:
        for path, body in (("/tokenize", {"prompt": "x"}), ("/detokenize", {"tokens": [1]})):
            got = post(running, path, body)
            assert got.status_code == 400 and "no tokenizer.json" in got.json()["error"]["message"]
    finally:
        running.stop()


def test_models_retrieve(server: RunningServer) -> None:
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    first, second = client.models.retrieve("tiny"), client.models.retrieve("tiny")
    assert first.id == "tiny" and first.object == "model" and first.created == second.created
    assert [m.id for m in client.models.list()] == ["tiny"] and client.models.list().data[0].created == first.created
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")
