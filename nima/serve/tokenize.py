"""``POST /tokenize`` and ``POST /detokenize`` in vLLM's shapes: what a prompt or a conversation costs in
tokens before it is sent (``{"count", "max_model_len", "tokens"}``), and the text of token ids
(``{"prompt"}``).

A prompt is tokenized as ``/v1/completions`` tokenizes it and a conversation as
``/v1/chat/completions`` renders and tokenizes it (the same code), so ``count`` is what the request
would cost; ``add_special_tokens`` changes that where asked. Detokenizing keeps special tokens, so
``/tokenize`` then ``/detokenize`` gives the text back.
"""

from __future__ import annotations

from typing import Any

from nima.runtime.errors import GenerateError
from nima.serve.errors import ApiError
from nima.serve.protocol import DetokenizeRequest, TokenizeRequest
from nima.serve.service import Service

NO_TOKENIZER = "this bundle has no tokenizer.json: token ids are its only prompts"


def tokenize(service: Service, request: TokenizeRequest) -> dict[str, Any]:
    """The ids of ``request``'s prompt or conversation, their number and the model's context."""
    generator = service.checked(request)
    tokenizer = generator.tokenizer
    field = "messages" if request.messages is not None else "prompt"
    if tokenizer is None:
        raise ApiError(400, NO_TOKENIZER, field)
    if (request.prompt is None) == (request.messages is None):
        raise ApiError(400, "give either prompt (a text) or messages (a conversation)", "prompt")
    if request.messages is not None:
        text = service.render_chat(
            request.messages, request.add_generation_prompt, request.chat_template, request.chat_template_kwargs
        )
        # as the chat endpoint, unless asked: the template holds the special tokens
        ids = _encode(tokenizer, text, True, field) if request.add_special_tokens else service.encode_chat(text)
    elif request.add_special_tokens is False:
        ids = _encode(tokenizer, request.prompt or "", False, field)
    else:
        try:
            ids = generator.encode(request.prompt or "")  # as the completions endpoint
        except GenerateError as err:
            raise ApiError(400, f"prompt: {err}", "prompt") from None
    result: dict[str, Any] = {"count": len(ids), "max_model_len": generator.spec.max_seq_len, "tokens": ids}
    if request.return_token_strs:
        result["token_strs"] = [tokenizer.id_to_token(token) for token in ids]
    return result


def detokenize(service: Service, request: DetokenizeRequest) -> dict[str, Any]:
    """The text of ``request.tokens``, special tokens included."""
    generator = service.checked(request)
    if generator.tokenizer is None:
        raise ApiError(400, NO_TOKENIZER, "tokens")
    vocab = generator.spec.vocab_size
    bad = next((token for token in request.tokens if not 0 <= token < vocab), None)
    if bad is not None:
        raise ApiError(400, f"tokens: id {bad} is outside the vocabulary (0..{vocab - 1})", "tokens")
    return {"prompt": generator.tokenizer.decode(request.tokens, skip_special_tokens=False)}


def _encode(tokenizer: Any, text: str, specials: bool, field: str) -> list[int]:
    try:
        return list(tokenizer.encode(text, add_special_tokens=specials).ids)
    except Exception:  # tokenizers raises a bare Exception for text its vocabulary cannot encode
        raise ApiError(400, f"{field}: the bundle's tokenizer cannot encode it", field) from None
