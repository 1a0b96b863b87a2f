"""Chat messages to a prompt: the bundle's chat template, rendered by Jinja2 in a sandbox.

A chat template is data that came with a model (``chat_template`` in ``tokenizer_config.json``, or a
``chat_template.jinja`` file, as Hugging Face keeps them) or with a request (``chat_template``, as vLLM
takes it). Either way it is never code with access to Python: it renders in Jinja2's immutable
sandbox, where attribute access to internals (``__class__``, ``__globals__``), calls of unsafe
callables and changes to the messages raise `TemplateRefused`, and its output is capped. The
context is Hugging Face's: ``messages``, ``add_generation_prompt``, ``bos_token``, ``eos_token``,
``raise_exception`` and ``strftime_now``, its ``tojson`` (keys in order, text unescaped), its
``{% generation %}`` block and the ``{% break %}`` and ``{% continue %}`` of Jinja2's loop controls, so
a template renders the prompt `apply_chat_template` renders.

Bundles without a template get `DEFAULT_TEMPLATE`: one ``role: content`` line per message, then
``assistant:`` — plain text any tokenizer can encode, for base models that were never chat-tuned.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import TemplateError, nodes
from jinja2.ext import Extension
from jinja2.parser import Parser
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError, safe_range
from jinja2.utils import Namespace

from nima.layout import CHAT_TEMPLATE_FILE, TOKENIZER_CONFIG_FILE
from nima.serve.protocol import Message

DEFAULT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant:{% endif %}"
)
TEMPLATE_FILE = CHAT_TEMPLATE_FILE
TOKENIZER_CONFIG = TOKENIZER_CONFIG_FILE
MAX_RENDERED = 1 << 20  # characters a rendering may produce
MAX_RANGE_ITEMS = 1_000_000  # items all the ``range`` calls of one rendering may make together
MAX_JSON_PAD = 64  # characters of a ``tojson`` indent or separator


class TemplateRefused(ValueError):
    """The template is unreadable, reached for something the sandbox forbids, or raised an error itself
    (``deliberate``: the conversation's doing, not the template's: refused through ``raise_exception``,
    or rendering past the output cap)."""

    def __init__(self, message: str, deliberate: bool = False) -> None:
        super().__init__(message)
        self.deliberate = deliberate


@dataclass(frozen=True)
class ChatTemplate:
    """A template's source and the special tokens it is rendered with; ``builtin``: `DEFAULT_TEMPLATE`."""

    source: str
    bos_token: str = ""
    eos_token: str = ""
    builtin: bool = False


def bundle_template(folder: Path) -> ChatTemplate:
    """The bundle's chat template (``chat_template.jinja``, else ``tokenizer_config.json``), or the default."""
    config: dict[str, Any] = {}
    config_path = folder / TOKENIZER_CONFIG
    if config_path.is_file():
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError):
            config = {}
        if not isinstance(config, dict):  # a JSON array or number: no template, no tokens in it
            config = {}
    bos, eos = _token_text(config.get("bos_token")), _token_text(config.get("eos_token"))
    file = folder / TEMPLATE_FILE
    if file.is_file():
        return ChatTemplate(file.read_text(encoding="utf-8"), bos, eos)
    source = config.get("chat_template")
    if isinstance(source, list):  # named templates: the "default" one
        named = {item.get("name"): item.get("template") for item in source if isinstance(item, dict)}
        source = named.get("default")
    if isinstance(source, str) and source:
        return ChatTemplate(source, bos, eos)
    return ChatTemplate(DEFAULT_TEMPLATE, bos, eos, builtin=True)


MAX_POWER_BITS = 1 << 16  # largest integer (in bits) a template's ``**`` may make


class _Sandbox(ImmutableSandboxedEnvironment):
    """Jinja2's immutable sandbox, where reaching for an unsafe attribute fails at once (the stock sandbox
    renders it as an empty undefined value, which hides what the template tried), and where the operators
    that multiply sizes are capped: ``*`` and ``+`` cannot make a text or list past the output cap, nor
    ``*`` and ``**`` an integer past `MAX_POWER_BITS` (``'x' * 2000000000`` took 2 GB and seconds with the
    stock sandbox; ``range`` draws on a budget per rendering, `_budgeted_range`). Other ways to grow a
    value (``~``, ``%`` with a width, filters such as ``center``) and time itself are not bounded: a
    request's template renders only on a server that trusts them (`--trust-request-chat-template`)."""

    intercepted_binops = frozenset({"*", "**", "+"})

    def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
        raise SecurityError(f"access to attribute {attribute!r} of a {type(obj).__name__!r} object is unsafe")

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        sequences = str | list | tuple
        items = 0
        if operator == "*":
            for sized, count in ((left, right), (right, left)):
                if isinstance(sized, sequences) and isinstance(count, int):
                    items = max(items, len(sized) * count)
        elif operator == "+" and isinstance(left, sequences) and isinstance(right, sequences):
            items = len(left) + len(right)
        if items > MAX_RENDERED:
            raise SecurityError(f"a value of {items:,} items passes {MAX_RENDERED:,}")
        if isinstance(left, int) and isinstance(right, int):
            bits = 0
            if operator == "*":
                bits = left.bit_length() + right.bit_length()
            elif operator == "**" and right > 0 and abs(left) > 1:
                bits = (abs(left).bit_length() - 1) * right + 1  # at least this many: 2 ** right has right + 1
            if bits > MAX_POWER_BITS:
                raise SecurityError(f"an integer of about {bits:,} bits passes {MAX_POWER_BITS:,}")
        return super().call_binop(context, operator, left, right)


def render(
    template: ChatTemplate,
    messages: Sequence[dict[str, Any]],
    add_generation_prompt: bool = True,
    extra: dict[str, Any] | None = None,
) -> str:
    """The prompt ``template`` makes of ``messages``; `TemplateRefused` with one line on any failure.
    ``extra``: more variables for the template (a request's ``chat_template_kwargs``, JSON values, such
    as Qwen3's ``enable_thinking``); they cannot replace the four above."""
    env = _Sandbox(
        trim_blocks=True, lstrip_blocks=True, autoescape=False, extensions=[_Generation, "jinja2.ext.loopcontrols"]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = _strftime_now
    env.globals["namespace"] = _Namespace
    env.globals["range"] = _budgeted_range([MAX_RANGE_ITEMS])
    try:
        compiled = env.from_string(template.source)
        pieces = []
        size = 0
        context = {
            **(extra or {}),
            "messages": [dict(message) for message in messages],
            "add_generation_prompt": add_generation_prompt,
            "bos_token": template.bos_token,
            "eos_token": template.eos_token,
        }
        for piece in compiled.generate(**context):
            size += len(piece)
            if size > MAX_RENDERED:
                raise TemplateRefused(f"chat template: its output passed {MAX_RENDERED:,} characters", deliberate=True)
            pieces.append(piece)
    except SecurityError as err:
        raise TemplateRefused(f"chat template: refused by the sandbox: {_first_line(err)}") from None
    except TemplateError as err:
        raise TemplateRefused(f"chat template: {_first_line(err)}") from None
    except TemplateRefused:
        raise
    except Exception as err:  # a template can raise Python errors (a division by zero, a bad index)
        raise TemplateRefused(f"chat template: {type(err).__name__}: {_first_line(err)}") from None
    return "".join(pieces)


class _Generation(Extension):
    """Hugging Face's ``{% generation %}...{% endgeneration %}`` (it marks the assistant's tokens for
    training masks): rendered as its body."""

    tags = {"generation"}

    def parse(self, parser: Parser) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller: Callable[[], str]) -> str:
        return caller()


class _Namespace(Namespace):
    """Jinja2's ``namespace`` without names that start with an underscore (Hugging Face's rule: no road to
    Python's internals through a namespace's attributes)."""

    def __init__(*args: Any, **kwargs: Any) -> None:  # noqa: N805 - Jinja2's own signature trick
        self, rest = args[0], args[1:]
        attrs = dict(*rest, **kwargs)
        for name in attrs:
            _Namespace._check(name)
        Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _Namespace._check(name)
        Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise SecurityError(f"a namespace attribute may not start with an underscore ({name!r})")


def _tojson(
    value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None, sort_keys: bool = False
) -> str:
    """Hugging Face's ``tojson``: JSON as the model saw it in training (keys in their order, text as it is),
    where Jinja2's own sorts keys and escapes ``<``, ``>``, ``&``, ``'`` and every non-ASCII character.
    Indents and separators are bounded (an indent of a billion spaces would be written before the
    output's cap could see it)."""
    for part in (indent, *(separators or ())):
        if (isinstance(part, int) and part > MAX_JSON_PAD) or (isinstance(part, str) and len(part) > MAX_JSON_PAD):
            raise SecurityError(f"tojson: an indent or separator past {MAX_JSON_PAD} characters")
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(format: str) -> str:  # noqa: A002 - the name templates call it with
    """Hugging Face's ``strftime_now``: today's date in a template's format (Llama 3.1's, Granite's)."""
    return datetime.now().strftime(format)


def _budgeted_range(left: list[int]) -> Callable[..., range]:
    """Jinja2's sandboxed ``range`` (at most 100,000 items a call), drawing every call's items from one
    render's budget: nested loops over ranges (100,000 x 800 iterations took 27 s) stop at `MAX_RANGE_ITEMS`."""

    def budgeted(*args: int) -> range:
        found = safe_range(*args)
        left[0] -= len(found)
        if left[0] < 0:
            raise SecurityError(f"the template's ranges pass {MAX_RANGE_ITEMS:,} items in all")
        return found

    return budgeted


def _raise(message: str) -> None:
    raise TemplateRefused(f"chat template: {message}", deliberate=True)


def _token_text(token: Any) -> str:
    """A special token from ``tokenizer_config.json``: a string, or ``{"content": ...}``."""
    if isinstance(token, dict):
        token = token.get("content")
    return token if isinstance(token, str) else ""


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:200]


def template_message(message: Message) -> dict[str, Any]:
    """A message as chat templates read it (Hugging Face's): role and content, and the fields it sets of
    ``name``, ``tool_call_id`` and ``tool_calls`` (an assistant's calls, which tool messages answer)."""
    found: dict[str, Any] = {"role": message.role, "content": message.text()}
    for key in ("name", "tool_call_id", "tool_calls"):
        value = getattr(message, key)
        if value:
            found[key] = value
    if message.tool_calls:  # OpenAI sends a call's arguments as JSON text; templates read them as a mapping
        found["tool_calls"] = [_parsed_arguments(call) for call in message.tool_calls]
    return found


def _parsed_arguments(call: dict[str, Any]) -> dict[str, Any]:
    """A tool call with its ``function.arguments`` parsed from JSON text to a mapping, as vLLM passes them
    (Llama 3.1's ``arguments | tojson`` would write the text quoted; Qwen's ``arguments | items`` fails on
    text); arguments that are not a JSON object stay as they came."""
    function = call.get("function")
    if not isinstance(function, dict) or not isinstance(function.get("arguments"), str):
        return call
    try:
        parsed = json.loads(function["arguments"])
    except ValueError:
        return call
    if not isinstance(parsed, dict):
        return call
    return {**call, "function": {**function, "arguments": parsed}}
