"""The server through the official ``openai`` client: completions and chat, whole and streamed, equal to
`Generator.generate` with the same options; many clients at once; a client that leaves."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from serve_support import RunningServer, metric

from nima.runtime import Generator
from nima.serve.chat import bundle_template, render

PROMPTS = ["To be or not", "Romeo, Romeo", "What light through", "Now is the winter of our"]


@pytest.fixture(scope="module")
def server(text_bundle: Path) -> Iterator[RunningServer]:
    running = RunningServer(text_bundle, max_batch=16, max_queue=64)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def generator(text_bundle: Path) -> Generator:
    return Generator(text_bundle)


def client(server: RunningServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


CASES: list[tuple[dict[str, Any], dict[str, Any]]] = [  # (request fields, the same as Generator options)
    ({"temperature": 0}, {"do_sample": False}),
    ({"temperature": 0.8, "top_p": 0.9, "seed": 7}, {"do_sample": True, "temperature": 0.8, "top_p": 0.9, "seed": 7}),
    (
        {"temperature": 1.0, "seed": 3, "extra_body": {"top_k": 20, "min_p": 0.05}},
        {"do_sample": True, "seed": 3, "top_k": 20, "min_p": 0.05},
    ),
    (
        {"temperature": 0, "presence_penalty": 1.5, "frequency_penalty": 0.5},
        {"do_sample": False, "presence_penalty": 1.5, "frequency_penalty": 0.5},
    ),
    (
        {"temperature": 0, "extra_body": {"repetition_penalty": 1.3, "min_tokens": 5}},
        {"do_sample": False, "repetition_penalty": 1.3, "min_new_tokens": 5},
    ),
]


@pytest.mark.parametrize("case", range(len(CASES)))
@pytest.mark.parametrize("stream", [False, True])
def test_completions_equal_generator(case: int, stream: bool, server: RunningServer, generator: Generator) -> None:
    fields, options = CASES[case]
    prompt = PROMPTS[case % len(PROMPTS)]
    expected = generator.generate([prompt], max_new_tokens=24, **options)[0].completions[0]
    fields = {**fields, "extra_body": {**fields.get("extra_body", {}), "return_token_ids": True}}
    api = client(server)
    if not stream:
        got = api.completions.create(model="tiny", prompt=prompt, max_tokens=24, **fields)
        choice = got.choices[0]
        assert choice.token_ids == expected.token_ids  # type: ignore[attr-defined]
        assert choice.text == expected.text
        assert choice.finish_reason == "length"
        assert got.usage is not None and got.usage.completion_tokens == 24
        assert got.usage.prompt_tokens == len(generator.encode(prompt))
        return
    pieces, tokens, finish = [], [], None
    for chunk in api.completions.create(model="tiny", prompt=prompt, max_tokens=24, stream=True, **fields):
        pieces.append(chunk.choices[0].text)
        tokens += getattr(chunk.choices[0], "token_ids", None) or []  # one chunk per token with return_token_ids
        finish = chunk.choices[0].finish_reason or finish
    assert "".join(pieces) == expected.text
    assert tokens == expected.token_ids
    assert finish == "length"


def test_stop_strings_cut_text_and_finish_with_stop(server: RunningServer, generator: Generator) -> None:
    prompt = PROMPTS[0]
    free = generator.generate([prompt], max_new_tokens=40, do_sample=False)[0].text
    assert free is not None and len(free) > 6
    stop = free[4:6]
    expected = generator.generate([prompt], max_new_tokens=40, do_sample=False, stop_strings=[stop])[0].completions[0]
    api = client(server)
    whole = api.completions.create(model="tiny", prompt=prompt, max_tokens=40, temperature=0, stop=stop)
    assert (whole.choices[0].text, whole.choices[0].finish_reason) == (expected.text, "stop")
    streamed = api.completions.create(
        model="tiny", prompt=prompt, max_tokens=40, temperature=0, stop=[stop], stream=True
    )
    assert "".join(c.choices[0].text for c in streamed) == expected.text
    assert stop not in expected.text


def test_beams_equal_generator_and_refuse_to_stream(server: RunningServer, generator: Generator) -> None:
    expected = generator.generate([PROMPTS[1]], max_new_tokens=12, num_beams=3, num_return_sequences=2)[0]
    got = client(server).completions.create(
        model="tiny", prompt=PROMPTS[1], max_tokens=12, n=2, extra_body={"num_beams": 3, "return_token_ids": True}
    )
    assert [c.token_ids for c in got.choices] == [c.token_ids for c in expected.completions]  # type: ignore[attr-defined]
    with pytest.raises(openai.BadRequestError, match="cannot stream"):
        client(server).completions.create(model="tiny", prompt="x", stream=True, extra_body={"num_beams": 2})


def test_chat_renders_the_template_and_equals_generator(
    server: RunningServer, generator: Generator, text_bundle: Path
) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Who is there?"}]
    rendered = render(bundle_template(text_bundle), messages)
    assert rendered == "system: Be brief.\nuser: Who is there?\nassistant:"  # the documented default template
    ids = generator.tokenizer.encode(rendered, add_special_tokens=False).ids  # type: ignore[union-attr]
    expected = generator.generate([ids], max_new_tokens=16, do_sample=True, seed=11)[0].completions[0]
    api = client(server)
    whole = api.chat.completions.create(model="tiny", messages=messages, max_tokens=16, temperature=1.0, seed=11)  # type: ignore[arg-type]
    assert whole.choices[0].message.content == expected.text
    assert whole.usage is not None and whole.usage.prompt_tokens == len(ids)
    chunks = list(
        api.chat.completions.create(
            model="tiny",
            messages=messages,
            max_completion_tokens=16,
            temperature=1.0,
            seed=11,
            stream=True,  # type: ignore[arg-type]
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected.text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 16 and not chunks[-1].choices


def test_logprobs_are_the_models_and_rank_the_top_tokens(server: RunningServer, generator: Generator) -> None:
    got = client(server).completions.create(model="tiny", prompt=PROMPTS[2], max_tokens=6, temperature=0, logprobs=3)
    lp = got.choices[0].logprobs
    assert lp is not None and len(lp.token_logprobs) == 6 and len(lp.top_logprobs) == 6
    for chosen, top in zip(lp.token_logprobs, lp.top_logprobs, strict=True):
        # greedy: the chosen token is the most likely; tokens with equal texts share one entry
        assert 1 <= len(top) <= 3 and max(top.values()) == pytest.approx(chosen)
        assert chosen <= 0.0
    chat = client(server).chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=4,
        temperature=0,
        logprobs=True,
        top_logprobs=2,
    )
    content = chat.choices[0].logprobs.content  # type: ignore[union-attr]
    assert len(content) == 4 and all(len(entry.top_logprobs) == 2 for entry in content)


def test_several_prompts_and_completions_per_request(server: RunningServer, generator: Generator) -> None:
    got = client(server).completions.create(
        model="tiny",
        prompt=PROMPTS[:2],
        max_tokens=8,
        n=2,
        temperature=0.9,
        seed=4,
        extra_body={"return_token_ids": True},
    )
    assert [c.index for c in got.choices] == [0, 1, 2, 3]
    for p, prompt in enumerate(PROMPTS[:2]):
        first = generator.generate([prompt], max_new_tokens=8, do_sample=True, temperature=0.9, seed=4)[0]
        assert got.choices[2 * p].token_ids == first.token_ids  # type: ignore[attr-defined]
    echoed = client(server).completions.create(model="tiny", prompt=PROMPTS[0], max_tokens=3, temperature=0, echo=True)
    assert echoed.choices[0].text.startswith(PROMPTS[0])


def test_sixteen_concurrent_streams_each_get_what_they_get_alone(server: RunningServer, generator: Generator) -> None:
    requests = []
    for i in range(16):
        options: dict[str, Any] = {"max_tokens": 10 + 3 * i, "seed": 100 + i}
        options["temperature"] = 0 if i % 3 == 0 else 0.7 + 0.02 * i
        if i % 4 == 1:
            options["top_p"] = 0.8
        requests.append((PROMPTS[i % 4] * (1 + i % 3), options))
    expected = []
    for prompt, options in requests:
        sampling = {"do_sample": options["temperature"] > 0, "seed": options["seed"], "top_p": options.get("top_p")}
        if options["temperature"]:
            sampling["temperature"] = options["temperature"]
        expected.append(generator.generate([prompt], max_new_tokens=options["max_tokens"], **sampling)[0].text)
    steps_before = metric(server, "nima_step_batch_size_count")
    single_before = metric(server, 'nima_step_batch_size_bucket{le="1.0"}')

    async def one(api: openai.AsyncOpenAI, prompt: str, options: dict[str, Any]) -> str:
        stream = await api.completions.create(model="tiny", prompt=prompt, stream=True, **options)
        return "".join([chunk.choices[0].text async for chunk in stream])

    async def everyone() -> list[str]:
        api = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
        return await asyncio.gather(*(one(api, prompt, options) for prompt, options in requests))

    assert asyncio.run(everyone()) == expected
    steps = metric(server, "nima_step_batch_size_count") - steps_before
    single = metric(server, 'nima_step_batch_size_bucket{le="1.0"}') - single_before
    assert steps > 0 and single < steps, "some steps should have decoded more than one row"


def test_a_client_that_leaves_frees_its_row(server: RunningServer, generator: Generator) -> None:
    """A client that closes its stream after 3 chunks has its row dropped (counted in the metrics), and the
    other client's stream is unaffected. On a loaded machine the server may write all 500 tokens before the
    client's close arrives (nothing left to cancel: the generated-token count shows it); then the case is
    tried again, at most 3 times, and it must be seen cancelled once."""
    expected = generator.generate([PROMPTS[3]], max_new_tokens=60, do_sample=False)[0].text
    whole = len(generator.generate([PROMPTS[0]], max_new_tokens=500, do_sample=False)[0].token_ids) + 60  # not cut

    async def leave_and_stay() -> str:
        api = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
        leaving = await api.completions.create(
            model="tiny", prompt=PROMPTS[0], max_tokens=500, temperature=0, stream=True
        )
        staying = await api.completions.create(
            model="tiny", prompt=PROMPTS[3], max_tokens=60, temperature=0, stream=True
        )
        seen = 0
        async for _ in leaving:
            seen += 1
            if seen == 3:
                break
        await leaving.close()  # the connection goes; the server should drop the row
        return "".join([chunk.choices[0].text async for chunk in staying])

    for _ in range(3):
        cancelled = metric(server, "nima_cancelled_rows_total")
        generated = metric(server, "nima_generated_tokens_total")
        assert asyncio.run(leave_and_stay()) == expected
        deadline = time.monotonic() + 10
        while metric(server, "nima_running_rows") > 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert metric(server, "nima_running_rows") == 0
        while (
            metric(server, "nima_cancelled_rows_total") == cancelled
            and metric(server, "nima_generated_tokens_total") - generated < whole
            and time.monotonic() < deadline
        ):  # cancelled, or ran out and logged (both requests' tokens counted)
            time.sleep(0.05)
        if metric(server, "nima_cancelled_rows_total") == cancelled + 1:
            assert metric(server, "nima_generated_tokens_total") - generated < whole  # cut short
            return
        assert metric(server, "nima_generated_tokens_total") - generated == whole  # it ran out before the close
    raise AssertionError("the leaving row finished before its client's close in 3 tries: never cancelled")


def test_models_health_and_metrics(server: RunningServer) -> None:
    assert [m.id for m in client(server).models.list()] == ["tiny"]
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    text = httpx.get(server.url + "/metrics").text
    for name in (
        "nima_requests_total",
        "nima_time_to_first_token_seconds",
        "nima_inter_token_latency_seconds",
        "nima_queue_depth",
        "nima_running_rows",
        "nima_generated_tokens_total",
        "nima_prompt_tokens_total",
    ):
        assert name in text
