"""The request bodies of ``/v1/completions`` and ``/v1/chat/completions``: OpenAI's fields, and Nima's extras
under their Hugging Face names.

Strict models: a field of the wrong type is refused (``"5"`` is not a number), and so is a field
neither OpenAI nor Nima defines, as OpenAI's API refuses one ("Unrecognized request argument"). Fields
OpenAI defines that Nima does not implement (``tools``, ``suffix``, ...) are known, so their error says
they are not supported rather than unknown. Ranges are OpenAI's where it has one. A known field sent
as ``null`` is as if it were not sent: OpenAI's API takes ``null`` for every optional field
(``"n": null``, ``"stream": null``, ``"presence_penalty": null``), and client libraries send it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_N = 16  # completions per prompt
MAX_PROMPTS = 64  # prompts per completions request
MAX_STOP = 16  # stop strings (OpenAI allows 4)
MAX_LOGPROBS = 20
MAX_LOGIT_BIAS = 1024  # tokens a request may bias (OpenAI sets no number; each costs every step a write)
LOGIT_BIAS = 100.0  # OpenAI's bound on a bias: -100 bans a token, 100 all but forces it


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _null_is_unset(cls, data: Any) -> Any:
        """Known fields sent as ``null`` are left out, so they take their defaults (unknown ones stay: refused)."""
        if isinstance(data, dict):
            return {key: value for key, value in data.items() if value is not None or key not in cls.model_fields}
        return data


class StreamOptions(Strict):
    include_usage: bool = False
    include_obfuscation: bool = True  # OpenAI pads chunks against length side channels; a local server does not


class TextFormat(Strict):
    type: Literal["text"]


class JsonObjectFormat(Strict):
    """OpenAI's JSON mode: the answer is a JSON object."""

    type: Literal["json_object"]


class JsonSchema(Strict):
    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")  # None: any JSON object
    strict: bool | None = None  # the schema is always followed exactly here


class JsonSchemaFormat(Strict):
    """OpenAI's structured outputs: the answer is a JSON document ``json_schema.schema`` describes."""

    type: Literal["json_schema"]
    json_schema: JsonSchema


ResponseFormat = Annotated[TextFormat | JsonObjectFormat | JsonSchemaFormat, Field(discriminator="type")]


class Sampling(Strict):
    """What both endpoints take: OpenAI's sampling fields, then Nima's extras (HF names)."""

    model: str = Field(min_length=1, max_length=256)
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=MAX_N)
    stop: str | Annotated[list[str], Field(max_length=MAX_STOP)] | None = None
    seed: int | None = Field(None, ge=-(2**63), le=2**63 - 1)  # OpenAI's int64; a negative one as its 64 bits
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    user: str | None = Field(None, max_length=256)
    # Nima's extras, as transformers names them
    top_k: int | None = Field(None, ge=0)
    min_p: float | None = Field(None, ge=0.0, le=1.0)
    repetition_penalty: float | None = Field(None, gt=0.0, le=10.0)
    no_repeat_ngram_size: int | None = Field(None, ge=0)
    min_tokens: int | None = Field(None, ge=0)
    num_beams: int | None = Field(None, ge=1, le=MAX_N)
    length_penalty: float | None = None
    return_token_ids: bool = False  # each choice also carries its token ids (always, for bundles without a tokenizer)
    # vLLM's extras: more end tokens; end tokens do not end the completion (it runs to max_tokens)
    stop_token_ids: list[Annotated[int, Field(ge=0)]] | None = Field(None, max_length=MAX_STOP)
    ignore_eos: bool = False
    # OpenAI's bookkeeping, taken and not acted on: nothing is stored, tiered or cached by key here
    store: bool | None = None
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = Field(None, max_length=16)
    service_tier: str | None = Field(None, max_length=32)
    prompt_cache_key: str | None = Field(None, max_length=256)
    safety_identifier: str | None = Field(None, max_length=256)
    response_format: ResponseFormat | None = None  # OpenAI's (chat); taken by completions too, as vLLM does
    # token id (as a JSON key) -> a number added to its logit before the token is chosen
    logit_bias: (
        Annotated[dict[str, Annotated[float, Field(ge=-LOGIT_BIAS, le=LOGIT_BIAS)]], Field(max_length=MAX_LOGIT_BIAS)]
        | None
    ) = None


class CompletionRequest(Sampling):
    """``POST /v1/completions``."""

    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None


class TextPart(Strict):
    type: Literal["text"]
    text: str


class RefusalPart(Strict):
    """An assistant's refusal as a content part (OpenAI's), sent back with the history."""

    type: Literal["refusal"]
    refusal: str


class Message(Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[Annotated[TextPart | RefusalPart, Field(discriminator="type")]] | None = None
    name: str | None = Field(None, max_length=256)
    tool_call_id: str | None = Field(None, max_length=256)  # a tool's answer: the call it answers
    tool_calls: list[dict[str, Any]] | None = Field(None, max_length=128)  # an assistant's calls, as sent back
    # what OpenAI's responses put on an assistant message, so a client that sends the message back as it
    # came (``message.model_dump()``) is not refused: the refusal is its text, the rest is not the model's
    refusal: str | None = None
    audio: dict[str, Any] | None = None
    function_call: dict[str, Any] | None = None
    annotations: list[Any] | None = None

    def text(self) -> str:
        """The content as one string (parts joined by newlines, as vLLM joins them for templates that read
        a string; a refusal alone when there is no content)."""
        if self.content is None:
            return self.refusal or ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(part.text if isinstance(part, TextPart) else part.refusal for part in self.content)


class ChatRequest(Sampling):
    """``POST /v1/chat/completions``."""

    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
    chat_template: str | None = Field(None, max_length=65536)  # vLLM's extra: a template for this request
    chat_template_kwargs: dict[str, Any] | None = Field(None, max_length=64)  # vLLM's: more template variables
    add_generation_prompt: bool = True
    parallel_tool_calls: bool | None = None  # about tools, which are refused: taken for clients that always send it
    modalities: list[str] | None = Field(None, max_length=4)  # ["text"] only
    # OpenAI's, not implemented
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    function_call: Any = None
    reasoning_effort: Any = None
    verbosity: Any = None
    audio: Any = None
    prediction: Any = None
    web_search_options: Any = None


class TokenizeRequest(Strict):
    """``POST /tokenize`` (vLLM's): a ``prompt`` as ``/v1/completions`` tokenizes it, or ``messages`` as
    ``/v1/chat/completions`` renders and tokenizes them."""

    model: str | None = Field(None, min_length=1, max_length=256)
    prompt: str | None = None
    messages: list[Message] | None = Field(None, min_length=1)
    add_special_tokens: bool | None = None  # default: what the endpoint mirrored does (a prompt: yes; messages: no)
    add_generation_prompt: bool = True
    chat_template: str | None = Field(None, max_length=65536)  # as the chat endpoint takes them
    chat_template_kwargs: dict[str, Any] | None = Field(None, max_length=64)
    return_token_strs: bool = False


class DetokenizeRequest(Strict):
    """``POST /detokenize`` (vLLM's): token ids to text."""

    model: str | None = Field(None, min_length=1, max_length=256)
    tokens: list[int]


# Known fields whose use is refused: field -> when it is acceptable (None: never).
UNSUPPORTED: dict[str, Any] = {
    "suffix": None,
    "tools": None,
    "tool_choice": None,
    "functions": None,
    "function_call": None,
    "reasoning_effort": None,
    "verbosity": None,
    "audio": None,
    "prediction": None,
    "web_search_options": None,
}
