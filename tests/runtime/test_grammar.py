"""`Generator` with ``json_schema``: output that follows a JSON schema token by token (`nima.runtime.grammar`).

Greedy output is compared with a brute-force search independent of the grammar engine
(`grammar_support.listed_greedy`); sampled output is checked by parsing it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from grammar_support import ANSWERS, BOUNDED, LISTED, check_bounded, json_model, listed_greedy
from tokenizers import Tokenizer

from nima.builders import build_model, save_build
from nima.builders.models import DecoderLM
from nima.export.bundle import export_bundle
from nima.runtime import GenerateError, Generator
from nima.runtime.grammar import MAX_SCHEMA_CHARS
from nima.spec import spec_from_dict
from nima.spec.generation import OptionError, check_generation

PROMPTS = ["ROMEO:", "Speak, ", "What say you"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[DecoderLM, Tokenizer, Generator]:
    model, tokenizer, bundle = json_model(tmp_path_factory.mktemp("json"))
    return model, tokenizer, Generator(bundle, threads=1)


def test_greedy_follows_the_schema_as_brute_force_does(setup: tuple[DecoderLM, Tokenizer, Generator]) -> None:
    """Three prompts in one batch (rows leave as they finish) and each alone, streamed: the answers brute
    force gives, ended by the end token."""
    model, tokenizer, generator = setup
    expected = [listed_greedy(model, tokenizer, tokenizer.encode(p).ids, ANSWERS) for p in PROMPTS]
    batch = generator.generate(PROMPTS, json_schema=LISTED, max_new_tokens=40)
    assert [g.completions[0].text for g in batch] == expected
    assert all(g.completions[0].finish_reason == "eos" for g in batch)
    streamed = ["".join(generator.stream(p, json_schema=LISTED, max_new_tokens=40)) for p in PROMPTS]
    assert streamed == expected
    free = generator.generate(PROMPTS[0], max_new_tokens=12)[0].completions[0].text
    assert free not in ANSWERS  # the answers above are the schema's doing


def test_sampled_rows_follow_their_own_grammar(setup: tuple[DecoderLM, Tokenizer, Generator]) -> None:
    """Seeded samples: every answer parses and meets the schema, and a batch gives each prompt what it gives
    alone (each row keeps its own place in the grammar)."""
    _, _, generator = setup
    options = {"json_schema": BOUNDED, "do_sample": True, "temperature": 1.0, "seed": 7, "max_new_tokens": 60}
    batch = generator.generate(PROMPTS, num_return_sequences=3, **options)
    texts = [c.text for g in batch for c in g.completions]
    for text in texts:
        check_bounded(text)
    assert len(set(texts)) > 3
    alone = [c.text for p in PROMPTS for c in generator.generate(p, num_return_sequences=3, **options)[0].completions]
    assert alone == texts


def test_any_object(setup: tuple[DecoderLM, Tokenizer, Generator]) -> None:
    _, _, generator = setup
    completion = generator.generate("ROMEO:", json_schema={"type": "object"}, max_new_tokens=60)[0].completions[0]
    if completion.finish_reason == "eos":
        assert isinstance(json.loads(completion.text), dict)
    else:
        assert completion.text.lstrip().startswith("{")


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"json_schema": {"type": "nonsense"}}, "cannot be followed"),
        ({"json_schema": {"$ref": "#/$defs/missing"}}, "cannot be followed"),
        ({"json_schema": {"enum": ["x" * (MAX_SCHEMA_CHARS + 1)]}}, "at most"),
        ({"json_schema": LISTED, "num_beams": 2}, "beam search"),
        ({"json_schema": LISTED, "min_new_tokens": 2}, "minimum length"),
        ({"json_schema": LISTED, "no_repeat_ngram_size": 3}, "no_repeat_ngram_size"),
        ({"json_schema": LISTED, "prompt_lookup_num_tokens": 3}, "prompt lookup"),
        ({"json_schema": LISTED, "slide_context": True}, "slide_context"),
    ],
)
def test_refused_before_any_decoding(setup: tuple[DecoderLM, Tokenizer, Generator], options: dict, words: str) -> None:
    _, _, generator = setup
    with pytest.raises(GenerateError, match="option json_schema") as err:
        generator.generate("ROMEO:", max_new_tokens=5, **options)
    assert words in str(err.value)


def test_the_option_is_a_json_object() -> None:
    assert check_generation({"json_schema": {"type": "object"}}).json_schema == {"type": "object"}
    for bad in ([1], "schema", {1: "x"}):
        with pytest.raises(OptionError, match="json_schema: Input should be a valid dictionary"):
            check_generation({"json_schema": bad})


SEQ2SEQ = {
    "architecture": "encoder-decoder",
    "vocab_size": 40,
    "max_seq_len": 32,
    "d_model": 32,
    "n_layers": 1,
    "attention": {"n_heads": 4},
    "ffn": {"kind": "gelu", "hidden": 48},
    "position": {"kind": "relative"},
}


def test_bundles_without_text_or_with_an_encoder(bundles: dict[str, tuple[Path, DecoderLM]], tmp_path: Path) -> None:
    """A token-id bundle has no tokenizer to build a grammar over; an encoder-decoder's first token may be
    forced: both refused by name."""
    spec = spec_from_dict({**SEQ2SEQ, "name": "s2s-json"})
    source = save_build(build_model(spec, seed=0), spec, tmp_path / "src")
    seq2seq = export_bundle(source, tmp_path / "bundle", verify=False).out
    for bundle, words in ((bundles["llama"][0], "no tokenizer.json"), (seq2seq, "decoder-only")):
        generator = Generator(bundle, threads=1)
        with pytest.raises(GenerateError, match=words):
            generator.options(json_schema={"type": "object"})


def test_whitespace_between_json_tokens_is_bounded(setup: tuple[DecoderLM, Tokenizer, Generator]) -> None:
    """llama.cpp's rule, checked on the masks a row gets as it takes tokens: after ``{``, one space or one
    or two newlines and then up to 20 spaces or tabs; not two spaces, three newlines or a 21st space. A
    schema's own whitespace keys replace the rule (llguidance's flexible whitespace: any run)."""
    import numpy as np

    _, tokenizer, generator = setup
    (brace,), (newline,), (space,), (tab,) = (tokenizer.encode(c).ids for c in ("{", "\n", " ", "\t"))
    eos = generator._eos_ids(generator.options())

    def allowed_after(schema: dict, tokens: list[int]) -> set[int]:
        row = generator.grammars.compile(schema, eos).start()
        for token in [brace, *tokens]:
            row.take(token)
        scores = np.zeros(generator.spec.vocab_size, dtype=np.float32)
        row.forbid(scores)
        return {t for t in (newline, space, tab) if scores[t] == 0}

    bounded = {"type": "object"}
    assert allowed_after(bounded, []) == {newline, space}
    assert allowed_after(bounded, [space]) == set()
    assert allowed_after(bounded, [newline]) == {newline, space, tab}
    assert allowed_after(bounded, [newline, newline]) == {space, tab}
    assert allowed_after(bounded, [newline, *[space, tab] * 10]) == set()
    assert allowed_after(bounded, [newline, *[space, tab] * 9, space]) == {space, tab}
    free = {"type": "object", "x-guidance": {"whitespace_flexible": True}}
    assert allowed_after(free, [newline, newline, space, newline]) == {newline, space, tab}
