"""Structured output's reference for the runtime and server tests: a schema whose answers can be listed by
hand, and greedy decoding restricted to them by brute force on the PyTorch model (independent of the
grammar engine under test)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tokenizer_support import shakespeare_tokenizer
from tokenizers import Tokenizer

from nima.builders import build_model, save_build
from nima.builders.models import DecoderLM
from nima.export.bundle import export_bundle
from nima.spec import spec_from_dict

EOS = 0  # shakespeare_tokenizer's <|endoftext|>
COMPACT = {"whitespace_flexible": False}  # llguidance's option: no whitespace between JSON tokens
# two required properties in this order, each from a short list: six answers in all
LISTED: dict[str, Any] = {
    "type": "object",
    "properties": {"a": {"enum": ["yes", "no", "maybe"]}, "b": {"type": "boolean"}},
    "required": ["a", "b"],
    "additionalProperties": False,
    "x-guidance": COMPACT,
}
ANSWERS = [f'{{"a":"{a}","b":{b}}}' for a in ("yes", "no", "maybe") for b in ("true", "false")]
BOUNDED: dict[str, Any] = {  # a short word and a small number: a sampled answer ends well within 60 tokens
    "type": "object",
    "properties": {"w": {"type": "string", "maxLength": 4}, "k": {"type": "integer", "minimum": 0, "maximum": 99}},
    "required": ["w", "k"],
    "additionalProperties": False,
    "x-guidance": COMPACT,
}
LLAMA: dict[str, Any] = {
    "vocab_size": 320,
    "max_seq_len": 256,
    "d_model": 64,
    "n_layers": 2,
    "attention": {"n_heads": 4, "n_kv_heads": 2},
    "init": {"kind": "normal", "std": 0.3},
    "ffn": {"kind": "swiglu", "hidden": 48},
    "position": {"kind": "rope"},
    "norm": {"kind": "rmsnorm"},
    "bias": False,
    "tie_embeddings": False,
}


def json_model(root: Path, target: str = "ort") -> tuple[DecoderLM, Tokenizer, Path]:
    """A random LLaMA-style model over a 320-token Shakespeare BPE, and its exported bundle."""
    tokenizer = shakespeare_tokenizer(320)
    spec = spec_from_dict({**LLAMA, "name": "json"})
    model = build_model(spec, seed=5)
    source = save_build(model, spec, root / "src")
    tokenizer.save(str(source / "tokenizer.json"))
    return model.eval(), tokenizer, export_bundle(source, root / "bundle", target=target, verify=False).out


@torch.no_grad()
def listed_greedy(model: DecoderLM, tokenizer: Tokenizer, prompt: list[int], answers: list[str]) -> str:
    """Greedy decoding restricted, by brute force, to texts that stay a prefix of one of ``answers``: full
    forward passes, at each step the likeliest token that keeps the text such a prefix (the end token
    once the text is an answer)."""
    vocab = tokenizer.get_vocab_size()
    pieces = {t: tokenizer.decode([t], skip_special_tokens=False) for t in range(vocab) if t != EOS}
    history, text = list(prompt), ""
    while True:
        logits = model(torch.tensor([history]))[0][0, -1].double()
        allowed = [t for t, piece in pieces.items() if piece and any(a.startswith(text + piece) for a in answers)]
        if text in answers:
            allowed.append(EOS)
        token = max(allowed, key=lambda t: float(logits[t]))
        if token == EOS:
            return text
        history.append(token)
        text += pieces[token]


def check_bounded(text: str) -> None:
    """``text`` is a document `BOUNDED` describes (checked by parsing it, not by the grammar engine)."""
    import json

    found = json.loads(text)
    assert set(found) == {"w", "k"}
    assert isinstance(found["w"], str) and len(found["w"]) <= 4
    assert type(found["k"]) is int and 0 <= found["k"] <= 99
