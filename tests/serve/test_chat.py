"""Chat templates render the prompt transformers' ``apply_chat_template`` renders (its environment: loop
controls, ``strftime_now``, its ``tojson``, the ``{% generation %}`` block), messages reach them as vLLM
passes them (a tool call's arguments as a mapping), and a bundle's broken template is the server's
failure, not the client's."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
from serve_support import RunningServer
from tokenizer_support import shakespeare_tokenizer
from transformers import PreTrainedTokenizerFast

from nima.serve.chat import ChatTemplate, TemplateRefused, render, template_message
from nima.serve.protocol import Message

TEMPLATES = {
    "loop controls": (
        "{% for m in messages %}{% if m['role'] == 'system' %}{% continue %}{% endif %}"
        "{{ m['role'] }}: {{ m['content'] }}\n{% if loop.index > 3 %}{% break %}{% endif %}{% endfor %}"
    ),
    "date": "Today is {{ strftime_now('%d %B %Y') }}.\n{% for m in messages %}{{ m['content'] }}\n{% endfor %}",
    "tojson": (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}"
        "{% if m['tool_calls'] is defined %}{% for c in m['tool_calls'] %}"
        "{{ c['function']['arguments'] | tojson }} {{ c['function'] | tojson(indent=2) }}"
        "{% endfor %}{% endif %}\n{% endfor %}"
    ),
    "generation": (
        "{% for m in messages %}{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] }}{% endgeneration %}"
        "{% else %}{{ m['content'] }}{% endif %}\n{% endfor %}{% if add_generation_prompt %}>{% endif %}"
    ),
    "namespace": (
        "{% set ns = namespace(n=0) %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% endfor %}"
        "{{ ns.n }} messages; last: {{ messages[-1]['content'] }}"
    ),
}
MESSAGES: list[dict[str, Any]] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Wie ist das Wetter in Zürich <heute>?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": {"city": "Zürich", "a": 1}}}
        ],
    },
    {"role": "tool", "content": "Sonnig & 21°", "tool_call_id": "c1"},
    {"role": "user", "content": "Und morgen?"},
]


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_templates_render_what_transformers_renders(name: str) -> None:
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=shakespeare_tokenizer(300))
    expected = tokenizer.apply_chat_template(
        MESSAGES, chat_template=TEMPLATES[name], tokenize=False, add_generation_prompt=True
    )
    assert render(ChatTemplate(TEMPLATES[name]), MESSAGES) == expected


def test_a_tool_calls_arguments_reach_the_template_as_a_mapping() -> None:
    """OpenAI's clients send arguments as JSON text; the template reads them as vLLM passes them."""
    call = {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": '{"city": "Zürich", "a": 1}'}}
    message = template_message(Message.model_validate({"role": "assistant", "content": None, "tool_calls": [call]}))
    assert message["tool_calls"][0]["function"]["arguments"] == {"city": "Zürich", "a": 1}
    text = render(ChatTemplate(TEMPLATES["tojson"]), [message])
    assert '{"city": "Zürich", "a": 1}' in text
    for odd in ("not json", "[1, 2]"):  # arguments that are no JSON object stay as they came
        call["function"]["arguments"] = odd
        kept = template_message(Message.model_validate({"role": "assistant", "tool_calls": [call]}))
        assert kept["tool_calls"][0]["function"]["arguments"] == odd


@pytest.mark.parametrize(
    "source",
    [
        "{% set ns = namespace(_x=1) %}{{ ns._x }}",
        "{% set ns = namespace() %}{% set ns.__class__ = 1 %}",
        "{{ messages | tojson(indent=1000000000) }}",
        "{{ messages | tojson(separators=(',' * 100, ':')) }}",
    ],
)
def test_the_additions_stay_inside_the_sandbox(source: str) -> None:
    with pytest.raises(TemplateRefused, match="sandbox"):
        render(ChatTemplate(source), MESSAGES)


def test_a_broken_bundle_template_is_the_servers_failure(
    text_bundle: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A bundle whose template cannot render: the server says so in its log at load, and a chat request
    gets a 500 that says the template failed, not a 400 blaming the request; a template that refuses a
    conversation through ``raise_exception`` is still the request's 400."""
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(text_bundle, broken)
    (broken / "chat_template.jinja").write_text(
        "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system messages') }}"
        "{% endif %}{{ m['content'] | no_such_filter }}{% endfor %}"
    )
    with caplog.at_level(logging.WARNING, logger="nima.serve"):
        server = RunningServer(broken)
    try:
        assert any("chat_template_failed" in r.getMessage() for r in caplog.records)
        url = server.url + "/v1/chat/completions"
        user = {"role": "user", "content": "hi"}
        response = httpx.post(url, json={"model": "tiny", "messages": [user], "max_tokens": 2})
        assert response.status_code == 500
        assert response.json()["error"]["code"] == "chat_template_failed"
        assert "no_such_filter" in response.json()["error"]["message"]
        system = {"role": "system", "content": "x"}
        (broken / "chat_template.jinja").write_text(
            "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system messages') }}"
            "{% endif %}{{ m['content'] }}{% endfor %}"
        )
    finally:
        server.stop()
    refusing = RunningServer(broken)
    try:
        response = httpx.post(url.replace(server.url, refusing.url), json={"model": "tiny", "messages": [system, user]})
        assert response.status_code == 400 and response.json()["error"]["param"] == "messages"
        assert "no system messages" in response.json()["error"]["message"]
        assert httpx.get(refusing.url + "/health").status_code == 200
    finally:
        refusing.stop()


def test_content_parts_join_with_newlines_as_vllm_joins_them() -> None:
    parts = [{"type": "text", "text": "First."}, {"type": "text", "text": "Second."}]
    message = template_message(Message.model_validate({"role": "user", "content": parts}))
    assert message["content"] == "First.\nSecond."
    assert template_message(Message.model_validate({"role": "assistant", "content": None}))["content"] == ""


def test_a_tokenizer_config_that_is_no_object_gives_the_default_template(tmp_path: Path) -> None:
    """A bundle's tokenizer_config.json holding a JSON array: the server used to fail at load on it."""
    from nima.serve.chat import bundle_template

    (tmp_path / "tokenizer_config.json").write_text("[1, 2]")
    assert bundle_template(tmp_path).builtin
