"""What the server serves: the bundle, loaded once, and requests turned into scheduler jobs.

`Service` owns the `Generator` (its session, tokenizer and checks), the `Scheduler` that decodes for
every client, the chat template and the metrics. `plan_completion` and `plan_chat` check a request
against the bundle — the model name, the prompt's tokens and length, every option as
`Generator.options` checks it — and return a `Plan`: one job per prompt, nothing submitted yet. A
request that fails a check raises `ApiError` (400, naming the field) before anything runs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nima.runtime.errors import GenerateError
from nima.runtime.generator import Generator
from nima.runtime.options import is_greedy
from nima.runtime.token_bytes import token_bytes
from nima.serve.chat import ChatTemplate, TemplateRefused, bundle_template, render, template_message
from nima.serve.choose import LogitBias
from nima.serve.errors import ApiError
from nima.serve.fields import logit_bias, option_error, seeded, without_option
from nima.serve.fields import overrides as request_overrides
from nima.serve.jobs import Event, Job
from nima.serve.metrics import Metrics
from nima.serve.protocol import (
    MAX_PROMPTS,
    UNSUPPORTED,
    ChatRequest,
    CompletionRequest,
    DetokenizeRequest,
    Message,
    Sampling,
    TokenizeRequest,
)
from nima.serve.scheduler import Scheduler
from nima.spec.generation import GenerationSpec

log = logging.getLogger("nima.serve")


@dataclass
class Prompt:
    """One prompt of a request: its token ids (a source, for encoder-decoders) and its text if given as text."""

    ids: list[int]
    text: str | None


@dataclass
class Plan:
    """A checked request: its prompts, the options every prompt runs with (and the overrides they came
    from), the log-probabilities wanted, and what the response shows."""

    prompts: list[Prompt]
    options: GenerationSpec
    overrides: dict[str, Any]
    logprobs: int | None = None
    echo: bool = False
    stream: bool = False
    include_usage: bool = False
    token_ids: bool = False
    bias: LogitBias | None = None
    copies: int = 1  # greedy with n > 1: n equal rows per prompt's job, from one prefill (OpenAI gives n choices)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def per_prompt(self) -> int:
        """Choices per prompt: choice ``i`` answers prompt ``i // per_prompt``."""
        return self.copies * self.options.num_return_sequences


class Service:
    """See the module docstring. `load` may run on another thread: `ready` turns true when it is done."""

    def __init__(
        self,
        bundle: Path,
        model_name: str | None = None,
        max_batch: int = 16,
        max_queue: int = 64,
        provider: str = "cpu",
        threads: int | None = None,
        spin: bool = False,
        prefill_budget: int | None = None,
        trust_request_templates: bool = False,
    ) -> None:
        self.bundle = Path(bundle)
        self.trust_request_templates = trust_request_templates  # render a request's own chat_template
        self.prefill_budget = prefill_budget
        self.model_name = model_name or self.bundle.resolve().name
        self.max_batch = max_batch
        self.max_queue = max_queue
        self.provider, self.threads, self.spin = provider, threads, spin
        self.metrics = Metrics()
        self.generator: Generator | None = None
        self.scheduler: Scheduler | None = None
        self.template = ChatTemplate("")
        self.load_error: str | None = None
        self.deliver: Callable[[list[tuple[Job, Event]]], None] | None = None  # set by the app: see `Scheduler`
        self._ready = threading.Event()

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    def load(self) -> None:
        """Open the bundle and start the scheduler (`GenerateError` for a bundle that cannot be served)."""
        try:
            generator = Generator(self.bundle, self.provider, self.threads, spin=self.spin)
        except GenerateError as err:
            self.load_error = str(err)
            raise
        self.generator = generator
        self.template = bundle_template(self.bundle)
        _try_template(self.template)
        if generator.tokenizer is not None:
            token_bytes(generator.tokenizer)  # made here, not on the event loop at the first logprobs request
        self.scheduler = Scheduler(
            generator, self.max_batch, self.max_queue, self.metrics, self.deliver, self.prefill_budget
        )
        self.scheduler.start()
        self._ready.set()

    def close(self) -> None:
        if self.scheduler is not None:
            self.scheduler.stop()

    # --- requests to plans --------------------------------------------------------------------

    def plan_completion(self, request: CompletionRequest) -> Plan:
        generator = self.checked(request)
        if request.best_of is not None and request.best_of != request.n:
            raise ApiError(400, "best_of: only best_of equal to n is supported", "best_of", "unsupported_parameter")
        if request.echo and generator.is_seq2seq:
            raise ApiError(400, "echo: an encoder-decoder's prompt is its source, not the start of its output", "echo")
        if request.echo and request.logprobs is not None:
            raise ApiError(400, "echo: the prompt's log-probabilities are not computed; drop echo or logprobs", "echo")
        prompts = self._prompts(request.prompt)
        plan = self._plan(request, prompts, request.max_tokens, request.logprobs)
        plan.echo = request.echo
        return plan

    def plan_chat(self, request: ChatRequest) -> Plan:
        self.checked(request)
        if request.modalities not in (None, ["text"]):
            raise ApiError(400, "modalities: only ['text'] is supported", "modalities", "unsupported_parameter")
        text = self.render_chat(
            request.messages, request.add_generation_prompt, request.chat_template, request.chat_template_kwargs
        )
        ids = self.encode_chat(text)
        if request.top_logprobs is not None and not request.logprobs:
            raise ApiError(400, "top_logprobs: needs logprobs: true", "top_logprobs")
        logprobs = (request.top_logprobs or 0) if request.logprobs else None
        max_tokens = request.max_completion_tokens or request.max_tokens
        return self._plan(request, [Prompt(ids, text)], max_tokens, logprobs)

    def render_chat(
        self,
        messages: list[Message],
        add_generation_prompt: bool,
        chat_template: str | None,
        extra: dict[str, Any] | None = None,
    ) -> str:
        """The conversation as the bundle's template (or, if trusted, the request's) renders it; ``extra``:
        more template variables (``chat_template_kwargs``)."""
        if chat_template is not None and not self.trust_request_templates:
            raise ApiError(
                400,
                "chat_template: this server renders its bundle's template only (start it with "
                "--trust-request-chat-template to take templates from requests)",
                "chat_template",
            )
        template = self.template if chat_template is None else ChatTemplate(chat_template)
        try:
            return render(template, [template_message(m) for m in messages], add_generation_prompt, extra)
        except TemplateRefused as err:
            if chat_template is not None or err.deliberate:  # the request's template, or the bundle's refusing
                raise ApiError(400, str(err), "chat_template" if chat_template else "messages") from None
            message = f"the bundle's {err} (the server's template failed, not the request)"
            raise ApiError(500, message, code="chat_template_failed") from None

    # --- helpers ------------------------------------------------------------------------------

    def checked(self, request: Sampling | TokenizeRequest | DetokenizeRequest) -> Generator:
        """The generator, once the request names this model (or none, where ``model`` is optional) and
        uses nothing unsupported."""
        if not self.ready:  # `load` sets the generator before the template and the scheduler
            if self.load_error:  # it will not load: say why, not "retry"
                raise ApiError(500, f"this server cannot serve its model: {self.load_error}", code="model_load_failed")
            raise ApiError(503, "the model is still loading; retry when GET /health answers 200", code="loading")
        if request.model is not None and request.model != self.model_name:
            raise ApiError(
                404,
                f"The model '{request.model}' does not exist; this server serves '{self.model_name}'",
                "model",
                "model_not_found",
            )
        given = request.model_fields_set
        for name in UNSUPPORTED:
            if name in given and getattr(request, name) not in (None, [], {}):
                raise ApiError(400, f"{name}: not supported by this server", name, "unsupported_parameter")
        assert self.generator is not None  # ready: loaded
        return self.generator

    def _prompts(self, prompt: str | list[str] | list[int] | list[list[int]]) -> list[Prompt]:
        """Each prompt's ids: text through the tokenizer, ids checked against the vocabulary."""
        generator = self.generator
        assert generator is not None
        if isinstance(prompt, str) or (prompt and isinstance(prompt[0], int)):
            given: list[Any] = [prompt]
        else:
            given = list(prompt)
        if not given:
            raise ApiError(400, "prompt: no prompt given", "prompt")
        if len(given) > MAX_PROMPTS:
            raise ApiError(400, f"prompt: {len(given)} prompts; at most {MAX_PROMPTS} per request", "prompt")
        found = []
        for i, item in enumerate(given):
            try:
                ids = generator.encode(item)
            except GenerateError as err:
                raise ApiError(400, f"prompt: {without_option(str(err))}", "prompt") from None
            if not ids:
                raise ApiError(400, f"prompt {i} is empty: the model needs at least one token", "prompt")
            found.append(Prompt(ids, item if isinstance(item, str) else None))
        return found

    def encode_chat(self, text: str) -> list[int]:
        """A rendered conversation's ids: the template holds the special tokens, so none are added."""
        generator = self.generator
        assert generator is not None
        tokenizer = generator.tokenizer
        if tokenizer is None:
            raise ApiError(400, "messages: this bundle has no tokenizer.json; use /v1/completions with token ids")
        try:
            ids = list(tokenizer.encode(text, add_special_tokens=False).ids)  # the template holds the specials
        except Exception:  # tokenizers raises a bare Exception for text its vocabulary cannot encode
            message = "messages: the bundle's tokenizer cannot encode the rendered conversation"
            raise ApiError(400, message, "messages") from None
        if not ids:
            raise ApiError(400, "messages: the conversation renders to no tokens", "messages")
        if max(ids) >= generator.spec.vocab_size:
            raise ApiError(400, "messages: the tokenizer gave ids past the model's vocabulary", "messages")
        return ids

    def _plan(self, request: Sampling, prompts: list[Prompt], max_tokens: int | None, logprobs: int | None) -> Plan:
        generator = self.generator
        assert generator is not None
        context = generator.spec.max_seq_len
        longest = max(len(p.ids) for p in prompts)
        what = generator.family.input_word
        field_name = "messages" if isinstance(request, ChatRequest) else "prompt"
        limit = context if generator.is_seq2seq else context - 1
        if longest > limit:
            raise ApiError(
                400,
                f"This model's maximum context length is {context} tokens; the {what} has {longest}",
                field_name,
                "context_length_exceeded",
            )
        if max_tokens is not None and not generator.is_seq2seq and longest + max_tokens > context:
            raise ApiError(
                400,
                f"This model's maximum context length is {context} tokens; you requested {longest + max_tokens} "
                f"({longest} in the {what}, {max_tokens} for the completion)",
                "max_tokens",
                "context_length_exceeded",
            )
        overrides = request_overrides(request, max_tokens, generator)
        if request.stream and overrides.get("num_beams", 1) > 1:
            raise ApiError(
                400, "num_beams: beam search cannot stream (it knows its best beam only at the end)", "stream"
            )
        copies = 1
        try:
            single = seeded(generator.options(**{**overrides, "num_return_sequences": 1}), request)
            if request.n > 1 and is_greedy(single) and single.num_beams == 1:
                options, copies = single, request.n  # greedy returns one sequence: n jobs give OpenAI's n choices
            else:
                options = seeded(generator.options(**overrides), request)
        except GenerateError as err:
            raise option_error(str(err)) from None
        if options.num_beams > 1 and logprobs is not None:
            raise ApiError(400, "logprobs: not reported for beam search", "logprobs")
        bias = logit_bias(request.logit_bias, generator.spec.vocab_size)
        if bias is not None and options.num_beams > 1:
            raise ApiError(400, "logit_bias: not applied in beam search", "logit_bias")
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        if request.stream_options is not None and not request.stream:
            raise ApiError(400, "stream_options: only with stream: true", "stream_options")
        return Plan(
            prompts,
            options,
            overrides,
            logprobs,
            stream=request.stream,
            include_usage=include_usage,
            token_ids=request.return_token_ids or generator.tokenizer is None,
            bias=bias,
            copies=copies,
        )


def _try_template(template: ChatTemplate) -> None:
    """Render the bundle's template once at load, so that a template that cannot work (a syntax error, a
    filter it lacks) is in the log at the start, not first found by a client."""
    try:
        render(template, [{"role": "user", "content": "Hello."}])
    except TemplateRefused as err:
        if not err.deliberate:
            log.warning("the bundle's %s: chat requests will get 500 chat_template_failed", err)
