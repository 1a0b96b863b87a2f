"""OpenAI's ``logit_bias`` against a plain PyTorch reference (full forward passes, the bias added to the
last position's logits), alone, streamed and beside other rows of a batch; and ``null`` for a known
field meaning "not sent", as OpenAI's API reads it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import openai
import pytest
import torch
from serve_support import DECODER, KINDS, RunningServer
from tokenizers import Tokenizer

from nima.builders import build_model, save_build
from nima.builders.models import DecoderLM
from nima.export.bundle import export_bundle
from nima.spec import spec_from_dict

PROMPTS = [[5, 17, 33, 2], [40, 41, 9], [1, 2, 3, 4, 5, 6], [60, 12]]
STEPS = 10


@pytest.fixture(scope="module")
def model_and_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[DecoderLM, Path]:
    changes, target = KINDS["llama-ort"]
    spec = spec_from_dict({**DECODER, "name": "serve-bias", **changes})
    model = build_model(spec, seed=11)
    root = tmp_path_factory.mktemp("serve-bias")
    source = save_build(model, spec, root / "src")
    return model.eval(), export_bundle(source, root / "bundle", target=target, verify=False).out


@pytest.fixture(scope="module")
def server(model_and_bundle: tuple[DecoderLM, Path]) -> Iterator[RunningServer]:
    running = RunningServer(model_and_bundle[1], max_batch=16, max_queue=64)
    yield running
    running.stop()


@torch.no_grad()
def biased_greedy(model: DecoderLM, prompt: list[int], bias: dict[int, float], steps: int = STEPS) -> list[int]:
    """Greedy tokens by full forward passes, ``bias`` added to the last position's logits at every step."""
    history = list(prompt)
    for _ in range(steps):
        logits, _ = model(torch.tensor([history]))
        last = logits[0, -1].double().clone()
        for token, value in bias.items():
            last[token] += value
        history.append(int(last.argmax()))
    return history[len(prompt) :]


def client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


def complete(server: RunningServer, prompt: list[int], bias: dict[int, float] | None, **more: Any) -> list[int]:
    fields: dict[str, Any] = {"model": "tiny", "prompt": prompt, "max_tokens": STEPS, "temperature": 0, **more}
    if bias is not None:
        fields["logit_bias"] = {str(token): value for token, value in bias.items()}
    fields["extra_body"] = {"return_token_ids": True, "min_tokens": STEPS}
    if fields.get("stream"):
        tokens: list[int] = []
        for chunk in client(server).completions.create(**fields):
            if chunk.choices:
                tokens += getattr(chunk.choices[0], "token_ids", None) or []
        return tokens
    return list(client(server).completions.create(**fields).choices[0].token_ids)  # type: ignore[attr-defined]


def bias_against(model: DecoderLM, prompt: list[int]) -> dict[int, float]:
    """A bias that changes this prompt's greedy run: down on its first two tokens, up on a third one."""
    plain = biased_greedy(model, prompt, {})
    other = next(t for t in range(3, 64) if t not in plain)
    return {plain[0]: -2.5, plain[1]: -1.0, other: 1.5}


@pytest.mark.parametrize("stream", [False, True])
def test_logit_bias_equals_the_reference(
    stream: bool, server: RunningServer, model_and_bundle: tuple[DecoderLM, Path]
) -> None:
    model = model_and_bundle[0]
    for prompt in PROMPTS[:2]:
        bias = bias_against(model, prompt)
        expected = biased_greedy(model, prompt, bias)
        assert expected != biased_greedy(model, prompt, {})  # the bias matters here
        assert complete(server, prompt, bias, stream=stream) == expected


def test_each_row_of_a_batch_keeps_its_own_bias(
    server: RunningServer, model_and_bundle: tuple[DecoderLM, Path]
) -> None:
    model = model_and_bundle[0]
    jobs = [(prompt, bias_against(model, prompt) if i % 2 == 0 else None) for i, prompt in enumerate(PROMPTS * 2)]
    results: list[list[int] | None] = [None] * len(jobs)

    def run(i: int) -> None:
        results[i] = complete(server, jobs[i][0], jobs[i][1], stream=True)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for (prompt, bias), got in zip(jobs, results, strict=True):
        assert got == biased_greedy(model, prompt, bias or {})


def test_a_full_bias_forces_or_bans_a_token_when_sampling(server: RunningServer) -> None:
    forced = complete(server, PROMPTS[0], {7: 100.0}, temperature=1.0, seed=1)
    assert forced == [7] * STEPS
    free = complete(server, PROMPTS[0], None, temperature=1.5, seed=2)
    banned = complete(server, PROMPTS[0], {t: -100.0 for t in set(free)}, temperature=1.5, seed=2)
    assert len(banned) == STEPS and not set(banned) & set(free)


def test_a_negative_seed_is_its_64_bits(server: RunningServer, model_and_bundle: tuple[DecoderLM, Path]) -> None:
    """OpenAI takes any int64 seed; -1 draws what the unsigned 2**64 - 1 draws."""
    from nima.runtime import Generator

    generator = Generator(model_and_bundle[1])
    expected = generator.generate(
        [PROMPTS[1]], max_new_tokens=STEPS, min_new_tokens=STEPS, do_sample=True, temperature=1.0, seed=2**64 - 1
    )
    got = complete(server, PROMPTS[1], None, temperature=1.0, seed=-1)
    assert got == expected[0].token_ids
    assert got != complete(server, PROMPTS[1], None, temperature=1.0, seed=1)


def test_a_zero_or_empty_bias_changes_nothing(server: RunningServer, model_and_bundle: tuple[DecoderLM, Path]) -> None:
    expected = biased_greedy(model_and_bundle[0], PROMPTS[2], {})
    assert complete(server, PROMPTS[2], {}) == expected
    assert complete(server, PROMPTS[2], {4: 0.0}) == expected


NULLABLE = ("n", "stream", "stream_options", "presence_penalty", "frequency_penalty", "stop", "seed", "user", "top_p")


def test_null_fields_are_as_if_not_sent(text_bundle: Path) -> None:
    server = RunningServer(text_bundle)
    try:
        body = {"model": "tiny", "prompt": "To be", "max_tokens": 6, "temperature": 0, "return_token_ids": True}
        nulls = dict.fromkeys((*NULLABLE, "echo", "logprobs", "logit_bias", "suffix", "best_of"))
        chat = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5, "temperature": 0}
        chat_nulls = dict.fromkeys((*NULLABLE, "logprobs", "top_logprobs", "max_completion_tokens", "tools"))
        for path, plain, extra in (("/v1/completions", body, nulls), ("/v1/chat/completions", chat, chat_nulls)):
            expected = httpx.post(server.url + path, json=plain, timeout=60)
            got = httpx.post(server.url + path, json={**plain, **extra}, timeout=60)
            assert expected.status_code == got.status_code == 200, got.text
            assert got.json()["choices"] == expected.json()["choices"]
        # OpenAI's bookkeeping fields are taken and change nothing
        kept = {"store": True, "metadata": {"team": "a"}, "service_tier": "auto", "prompt_cache_key": "k"}
        kept |= {"safety_identifier": "u1", "stream": True, "stream_options": {"include_obfuscation": False}}
        for path, plain, extra in (
            ("/v1/completions", body, kept),
            ("/v1/chat/completions", chat, {**kept, "parallel_tool_calls": False, "modalities": ["text"]}),
        ):
            expected = httpx.post(server.url + path, json={**plain, "stream": True}, timeout=60)
            got = httpx.post(server.url + path, json={**plain, **extra}, timeout=60)
            assert expected.status_code == got.status_code == 200, got.text
            assert _streamed_text(got.text) == _streamed_text(expected.text) != ""
        unknown = httpx.post(server.url + "/v1/completions", json={**body, "best_of_all": None}, timeout=60)
        assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "best_of_all"
    finally:
        server.stop()


@pytest.mark.parametrize("stream", [False, True])
def test_greedy_n_gives_n_equal_choices(stream: bool, text_bundle: Path) -> None:
    """OpenAI answers n > 1 at temperature 0 with n equal choices."""
    from nima.runtime import Generator

    generator = Generator(text_bundle)
    expected = [g.completions[0] for g in generator.generate(["To be", "Romeo"], max_new_tokens=6)]
    server = RunningServer(text_bundle, max_queue=2)  # a job per prompt, its copies rows of it: 2 jobs here
    try:
        api = client(server)
        fields: dict[str, Any] = {"model": "tiny", "max_tokens": 6, "n": 3, "stream": stream}
        if stream:
            fields["stream_options"] = {"include_usage": True}
        texts = ["", "", "", "", "", ""]
        got = api.completions.create(prompt=["To be", "Romeo"], temperature=0, **fields)
        usage = None
        for chunk in got if stream else [got]:
            usage = chunk.usage or usage
            for choice in chunk.choices:
                texts[choice.index] += choice.text
        assert texts == [expected[0].text] * 3 + [expected[1].text] * 3
        assert usage is not None and usage.completion_tokens == 3 * sum(len(c.token_ids) for c in expected)
        assert usage.prompt_tokens == len(generator.encode("To be")) + len(generator.encode("Romeo"))  # once each
        chat = api.chat.completions.create(messages=[{"role": "user", "content": "hi"}], temperature=0, **fields)
        contents = [""] * 3
        for chunk in chat if stream else [chat]:
            for choice in chunk.choices:
                piece = choice.delta.content if stream else choice.message.content
                contents[choice.index] += piece or ""
        assert len(set(contents)) == 1 and contents[0]
    finally:
        server.stop()


def test_an_assistant_message_sent_back_as_it_came(text_bundle: Path) -> None:
    """``messages.append(response.choices[0].message.model_dump())`` carries OpenAI's response fields
    (``refusal``, ``audio``, ``function_call``, ``annotations``): taken, and rendered as the plain message."""
    server = RunningServer(text_bundle)
    try:
        api = client(server)
        question = {"role": "user", "content": "Who goes there?"}
        answer = api.chat.completions.create(model="tiny", messages=[question], max_tokens=5, temperature=0)
        returned = answer.choices[0].message.model_dump()
        assert {"refusal", "audio", "function_call"} <= set(returned)  # what the client sends back
        follow = {"role": "user", "content": "Speak on."}
        again = api.chat.completions.create(
            model="tiny",
            messages=[question, returned, follow],
            max_tokens=5,
            temperature=0,  # type: ignore[list-item]
        )
        assert again.choices[0].finish_reason in ("stop", "length")
        plain = {"role": "assistant", "content": answer.choices[0].message.content}
        refused = {"role": "assistant", "content": None, "refusal": "I will not say.", "annotations": []}
        as_parts = {"role": "assistant", "content": [{"type": "refusal", "refusal": "I will not say."}]}
        as_text = {"role": "assistant", "content": "I will not say."}

        def ids(messages: list[dict[str, Any]]) -> list[int]:
            got = httpx.post(server.url + "/tokenize", json={"messages": messages}, timeout=60)
            assert got.status_code == 200, got.text
            return got.json()["tokens"]

        assert ids([question, returned, follow]) == ids([question, plain, follow])
        assert ids([question, refused]) == ids([question, as_parts]) == ids([question, as_text])
    finally:
        server.stop()


def test_stream_chunks_share_created_and_carry_null_usage(text_bundle: Path) -> None:
    import json

    server = RunningServer(text_bundle)
    try:
        body = {"model": "tiny", "prompt": "To be", "max_tokens": 8, "temperature": 0, "n": 2, "stream": True}
        body["stream_options"] = {"include_usage": True}
        events = httpx.post(server.url + "/v1/completions", json=body, timeout=60).text.splitlines()
        chunks = [json.loads(line[6:]) for line in events if line.startswith("data: {")]
        assert len(chunks) > 4 and events[-2:] == ["data: [DONE]", ""]
        assert len({chunk["created"] for chunk in chunks}) == 1 and len({chunk["id"] for chunk in chunks}) == 1
        assert all("usage" in chunk and chunk["usage"] is None for chunk in chunks[:-1])
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 16
        for path, sent in (("/v1/completions", {**body, "model": "gpt-4"}), ("/v1/models/gpt-4", None)):
            got = httpx.post(server.url + path, json=sent) if sent else httpx.get(server.url + path)
            assert got.status_code == 404 and got.json()["error"]["type"] == "invalid_request_error"
            assert got.json()["error"]["code"] == "model_not_found"
    finally:
        server.stop()


def test_text_offsets_point_into_the_text_whole_and_streamed(text_bundle: Path) -> None:
    """A token's text_offset is where its text starts in the completion; a byte piece of a character points
    where the character stands. Checked against the tokenizer read on its own: the text of the tokens
    before, as of the last one after which it did not end in U+FFFD."""
    tokenizer = Tokenizer.from_file(str(text_bundle / "tokenizer.json"))
    server = RunningServer(text_bundle)
    try:
        fields: dict[str, Any] = {"model": "tiny", "max_tokens": 40, "temperature": 0, "logprobs": 1}
        fields["extra_body"] = {"return_token_ids": True}
        checked = 0
        for prompt in ("ROMEO:", "To be", "What light"):
            whole = client(server).completions.create(prompt=prompt, **fields).choices[0]
            offsets, tokens = whole.logprobs.text_offset, whole.token_ids  # type: ignore[union-attr,attr-defined]
            streamed: list[int] = []
            for chunk in client(server).completions.create(prompt=prompt, stream=True, **fields):
                streamed += chunk.choices[0].logprobs.text_offset if chunk.choices[0].logprobs else []
            assert streamed == offsets and len(offsets) == len(tokens) == 40
            assert offsets == sorted(offsets) and offsets[-1] <= len(whole.text)
            released = 0  # text is final once it does not end in U+FFFD (a partial character, or one not yet known bad)
            for i in range(len(tokens)):
                assert offsets[i] == released, (i, offsets, whole.text)
                text = tokenizer.decode(tokens[: i + 1])
                if text.endswith("\ufffd"):
                    checked += 1
                else:
                    assert whole.text.startswith(text)
                    released = len(text)
        assert checked > 0  # the model's byte pieces made some
    finally:
        server.stop()


def _streamed_text(events: str) -> str:
    """The text of a stream of server-sent events, completions or chat chunks."""
    import json

    text = ""
    for line in events.splitlines():
        if line.startswith("data: {"):
            for choice in json.loads(line[6:])["choices"]:
                text += choice.get("text") or (choice.get("delta") or {}).get("content") or ""
    return text


def test_bias_arrays_are_what_was_asked() -> None:
    from nima.serve.fields import logit_bias

    bias = logit_bias({"3": 1.5, "10": -100.0, "4": 0.0}, 64)
    assert bias is not None
    assert dict(zip(bias.ids.tolist(), bias.values.tolist(), strict=True)) == {3: 1.5, 10: -100.0}
    assert bias.ids.dtype == np.int64 and bias.values.dtype == np.float32
    assert logit_bias({"4": 0.0}, 64) is None and logit_bias(None, 64) is None


def test_a_served_choice_reads_as_it_continues_its_prompt() -> None:
    """The server's per-choice text (whole and streamed) after a SentencePiece-style prompt keeps the space a
    completion's first word has, as the decode of prompt and completion together does."""
    from tokenizers import SentencePieceBPETokenizer

    from nima.serve.choose import Choice
    from nima.serve.responses import ChoiceText

    trained = SentencePieceBPETokenizer()
    trained.train_from_iterator(["To be, or not to be: that is the question.\n"] * 8, vocab_size=120)
    tokenizer = trained._tokenizer
    ids = tokenizer.encode("To be, or not to be: that is the question.").ids
    spaced = 0
    for cut in range(1, len(ids) - 1):
        prompt, completion = ids[:cut], ids[cut:]
        expected = tokenizer.decode(ids)[len(tokenizer.decode(prompt)) :]
        spaced += expected.startswith(" ")
        choice = ChoiceText(tokenizer, (), (), tuple(prompt))
        streamed = "".join(choice.push(Choice(token)) for token in completion)
        streamed += choice.finish("length")
        assert choice.text() == streamed == expected, cut
        assert "".join(choice.token_text(token) for token in completion) == expected, cut  # logprobs' tokens
    assert spaced > 3


def test_stop_token_ids_end_a_completion(server: RunningServer, model_and_bundle: tuple[DecoderLM, Path]) -> None:
    """vLLM's stop_token_ids: the completion ends at the first of them, which it includes (as an end token)."""
    model = model_and_bundle[0]
    plain = biased_greedy(model, PROMPTS[0], {})
    stop = plain[4]
    fields = {"model": "tiny", "prompt": PROMPTS[0], "max_tokens": STEPS, "temperature": 0}
    got = httpx.post(
        server.url + "/v1/completions",
        json={**fields, "stop_token_ids": [stop], "return_token_ids": True},
        timeout=60,
    ).json()["choices"][0]
    assert got["token_ids"] == plain[: plain.index(stop) + 1] and got["finish_reason"] == "stop"
    bad = httpx.post(server.url + "/v1/completions", json={**fields, "stop_token_ids": [64]}, timeout=60)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "stop_token_ids"


def test_ignore_eos_runs_to_max_tokens(text_bundle: Path) -> None:
    """vLLM's ignore_eos (its benchmarks' fixed-length requests): no end token ends the completion early."""
    tokenizer = Tokenizer.from_file(str(text_bundle / "tokenizer.json"))
    end = tokenizer.token_to_id("<|endoftext|>")
    server = RunningServer(text_bundle)
    try:
        fields = {"model": "tiny", "prompt": "To be", "max_tokens": 12, "temperature": 0, "return_token_ids": True}
        fields["logit_bias"] = {str(end): 8.0}  # the end token likely at once
        early = httpx.post(server.url + "/v1/completions", json=fields, timeout=60).json()["choices"][0]
        assert early["finish_reason"] == "stop" and early["token_ids"][-1] == end and len(early["token_ids"]) < 12
        full = httpx.post(server.url + "/v1/completions", json={**fields, "ignore_eos": True}, timeout=60).json()
        choice = full["choices"][0]
        assert choice["finish_reason"] == "length" and len(choice["token_ids"]) == 12 and end not in choice["token_ids"]
        # with stop_token_ids, those end it and the model's end token is generated and passed, as in vLLM
        fields |= {"ignore_eos": True, "stop_token_ids": [end + 1 if end + 1 < 320 else end - 1]}
        passed = httpx.post(server.url + "/v1/completions", json=fields, timeout=60).json()["choices"][0]["token_ids"]
        assert len(passed) == 12 and end in passed
        fields["stop_token_ids"] = [passed[5]]
        stopped = httpx.post(server.url + "/v1/completions", json=fields, timeout=60).json()["choices"][0]
        assert stopped["token_ids"] == passed[: passed.index(passed[5]) + 1] and stopped["finish_reason"] == "stop"
    finally:
        server.stop()


def test_chat_template_kwargs_reach_the_template(text_bundle: Path) -> None:
    """vLLM's chat_template_kwargs (Qwen3's enable_thinking): more variables for the template, never in place of
    the conversation."""
    from nima.serve.chat import ChatTemplate, render

    template = ChatTemplate("{% if enable_thinking %}<think>{% endif %}{{ messages | length }}")
    message = {"role": "user", "content": "hi"}
    assert render(template, [message], True, {"enable_thinking": True, "messages": []}) == "<think>1"
    assert render(template, [message], True, None) == "1"
    server = RunningServer(text_bundle, trust_request_templates=True)
    try:
        chat = {"model": "tiny", "messages": [message], "max_tokens": 1, "chat_template": template.source}
        counts = []
        for thinking in (False, True):
            got = httpx.post(
                server.url + "/v1/chat/completions",
                json={**chat, "chat_template_kwargs": {"enable_thinking": thinking}},
                timeout=60,
            )
            assert got.status_code == 200, got.text
            counts.append(got.json()["usage"]["prompt_tokens"])
            tokenized = httpx.post(
                server.url + "/tokenize",
                json={k: v for k, v in chat.items() if k not in ("model", "max_tokens")}
                | {"chat_template_kwargs": {"enable_thinking": thinking}},
                timeout=60,
            )
            assert tokenized.json()["count"] == counts[-1]  # /tokenize counts what the chat endpoint counts
        assert counts[1] > counts[0]
    finally:
        server.stop()


def test_a_request_without_temperature_or_max_tokens_samples_to_the_end(text_bundle: Path) -> None:
    """What OpenAI's and vLLM's clients expect of fields left out (LangChain's ``ChatOpenAI`` sends neither):
    the request samples at the bundle's temperature although the bundle's section says greedy (n choices
    differ, seeds matter, a seed repeats) and runs past the section's ``max_new_tokens`` (128)."""
    from nima.runtime import Generator

    generator = Generator(text_bundle)
    assert not generator.spec.generation.do_sample and generator.spec.generation.max_new_tokens == 128
    server = RunningServer(text_bundle)
    try:
        api = client(server)
        chat = {"model": "tiny", "messages": [{"role": "user", "content": "Speak."}]}
        many = api.chat.completions.create(n=3, max_tokens=20, **chat)
        assert len({c.message.content for c in many.choices}) == 3
        one, two, again = (api.chat.completions.create(seed=s, max_tokens=20, **chat) for s in (1, 2, 1))
        assert one.choices[0].message.content != two.choices[0].message.content
        assert one.choices[0].message.content == again.choices[0].message.content
        long = api.completions.create(model="tiny", prompt="To be", seed=3, extra_body={"ignore_eos": True})
        assert long.usage.completion_tokens == generator.spec.max_seq_len - len(generator.encode("To be"))
        assert long.choices[0].finish_reason == "length"
    finally:
        server.stop()
