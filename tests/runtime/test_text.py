"""Text prompts, streaming and stop strings on a bundle with a byte-level BPE tokenizer."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from runtime_support import torch_greedy
from tokenizers import Tokenizer

from nima.builders.models import DecoderLM
from nima.runtime import Generator
from nima.runtime.text import TextStream, completion_text, cut_at_stop

PROMPT = "First Citizen:\nBefore we proceed"


def test_text_prompt_round_trip(text_bundle: tuple[Path, DecoderLM]) -> None:
    path, model = text_bundle
    gen = Generator(path)
    result = gen.generate(PROMPT, max_new_tokens=40, do_sample=False)[0]
    assert result.prompt_ids == gen.tokenizer.encode(PROMPT).ids
    assert result.token_ids == torch_greedy(model, result.prompt_ids, 40)
    assert result.text == gen.tokenizer.decode(result.token_ids)


@pytest.mark.parametrize("options", [{"do_sample": False}, {"do_sample": True, "seed": 3, "top_k": 20}])
def test_stream_pieces_join_to_the_generated_text(text_bundle: tuple[Path, DecoderLM], options: dict) -> None:
    path, _ = text_bundle
    gen = Generator(path)
    pieces = list(gen.stream(PROMPT, max_new_tokens=60, **options))
    assert len(pieces) > 5
    assert "".join(pieces) == gen.generate(PROMPT, max_new_tokens=60, **options)[0].text


def test_stop_string_cuts_text_and_stream(text_bundle: tuple[Path, DecoderLM]) -> None:
    path, _ = text_bundle
    gen = Generator(path)
    full = gen.generate(PROMPT, max_new_tokens=60, do_sample=False)[0].text
    stop = full[20:23]  # a piece of the text the model is going to write
    assert stop.strip(), "pick a visible stop string"
    result = gen.generate(PROMPT, max_new_tokens=60, do_sample=False, stop_strings=[stop])[0]
    assert result.completions[0].finish_reason == "stop"
    assert result.text == full[: full.index(stop)]
    assert len(result.token_ids) < 60
    streamed = "".join(gen.stream(PROMPT, max_new_tokens=60, do_sample=False, stop_strings=[stop]))
    assert streamed == result.text


def test_stop_string_late_in_a_long_generation(text_bundle: tuple[Path, DecoderLM]) -> None:
    """The stop check decodes only the last tokens; the cut is still where the full text has it."""
    path, _ = text_bundle
    gen = Generator(path)
    full = gen.generate(PROMPT, max_new_tokens=150, do_sample=False)[0].text
    assert full is not None and len(full) > 120
    stop = next(full[i : i + 6] for i in range(len(full) - 30, 0, -1) if full.index(full[i : i + 6]) == i)
    result = gen.generate(PROMPT, max_new_tokens=150, do_sample=False, stop_strings=["@@never@@", stop])[0]
    assert result.completions[0].finish_reason == "stop"
    assert result.text == full[: full.index(stop)]
    assert len(result.token_ids) > 60, "the stop should come late enough to be outside a short window"


def test_text_stream_holds_back_partial_stop_strings(text_bundle: tuple[Path, DecoderLM]) -> None:
    tokenizer = Generator(text_bundle[0]).tokenizer
    ids = tokenizer.encode("To be, or not to be").ids
    stream = TextStream(tokenizer, stop_strings=["not to"])
    released = "".join(stream.push(t) for t in ids)
    final, stopped = cut_at_stop(tokenizer.decode(ids), ["not to"])
    assert stopped and final == "To be, or "
    assert final.startswith(released) and "not" not in released
    assert released + stream.finish(final) == final


def test_generation_runs_without_torch(text_bundle: tuple[Path, DecoderLM]) -> None:
    code = textwrap.dedent(
        f"""
        import sys
        from nima.runtime import Generator
        out = Generator({str(text_bundle[0])!r}).generate("To be", max_new_tokens=5, do_sample=False)
        assert len(out[0].token_ids) == 5
        print("torch loaded:", any(m == "torch" or m.startswith("torch.") for m in sys.modules))
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "torch loaded: False"


@pytest.mark.parametrize("kind", ["bpe", "byte", "char", "word"])
def test_stream_pieces_join_to_the_full_decode_for_every_tokenizer_kind(kind: str) -> None:
    """Each of `nima train`'s tokenizer kinds, on text whose characters span several byte tokens: the
    pieces, in order, are exactly what decoding all the ids at once gives (the independent reference),
    and a piece never ends inside a character."""
    from nima.train.tokenizer import train_tokenizer

    corpus = "To be, or not to be: that is the question — ça va? 日本語 naïve 🤖 end.\n" * 8
    tokenizer = train_tokenizer(kind, corpus, 300).tokenizer
    ids = tokenizer.encode(corpus).ids
    stream = TextStream(tokenizer)
    pieces = [stream.push(token) for token in ids]
    assert "".join(pieces) + stream.finish(tokenizer.decode(ids)) == tokenizer.decode(ids)
    assert "".join(pieces) == tokenizer.decode(ids)  # nothing was left for finish() to make up
    assert not any("\ufffd" in piece for piece in pieces)


def sentencepiece_tokenizer() -> Tokenizer:
    """A SentencePiece-style BPE (Metaspace: ``▁`` for spaces, the text's first one dropped), as Llama,
    Mistral and Gemma ship theirs."""
    from tokenizers import SentencePieceBPETokenizer

    trained = SentencePieceBPETokenizer()
    trained.train_from_iterator([CORPUS], vocab_size=300)
    return trained._tokenizer


CORPUS = "To be, or not to be: that is the question — ça va? 日本語 naïve 🤖 end.\n" * 8


@pytest.mark.parametrize("kind", ["bpe", "byte", "char", "word", "sentencepiece"])
def test_a_completion_reads_as_it_continues_its_prompt(kind: str) -> None:
    """Split one text's ids into a prompt and a completion at every point: the completion's text, whole
    (`completion_text`) and streamed (`TextStream` after the prompt), is the full decode's rest after the
    prompt's decode (the independent reference) — the space before a SentencePiece word or between
    word-level tokens included, which decoding the completion alone drops."""
    from nima.train.tokenizer import train_tokenizer

    tokenizer = sentencepiece_tokenizer() if kind == "sentencepiece" else train_tokenizer(kind, CORPUS, 300).tokenizer
    ids = tokenizer.encode(CORPUS[:90]).ids
    full = tokenizer.decode(ids)
    lost = 0
    for cut in range(1, len(ids) - 1):
        prompt, completion = ids[:cut], ids[cut:]
        start = tokenizer.decode(prompt)
        if start.endswith("\ufffd"):  # the prompt ends inside a character: its rest is the completion's first text
            continue
        assert full.startswith(start), (cut, start)
        expected = full[len(start) :]
        assert completion_text(tokenizer, prompt, completion) == expected, cut
        stream = TextStream(tokenizer, before=prompt)
        pieces = "".join(stream.push(token) for token in completion)
        assert pieces + stream.finish(expected) == expected, cut
        lost += tokenizer.decode(completion) != expected
    if kind in ("word", "sentencepiece"):
        assert lost > 5  # decoding alone would have dropped spaces here


def test_generator_text_continues_a_sentencepiece_prompt(tmp_path: Path) -> None:
    """`Generator.generate` and `Generator.stream` on a bundle whose tokenizer is SentencePiece-style:
    the completion's text is the decode of prompt and completion together, less the prompt's."""
    from runtime_support import make_bundle, make_spec

    tokenizer = sentencepiece_tokenizer()
    spec = make_spec("llama", name="rt-sp", vocab_size=tokenizer.get_vocab_size())
    bundle, _ = make_bundle(spec, tmp_path, tokenizer=tokenizer, seed=5)
    generator = Generator(bundle)
    spaced = 0
    for seed in range(6):
        options = {"max_new_tokens": 12, "do_sample": True, "temperature": 1.5, "seed": seed}
        got = generator.generate(["To be, or not"], **options)[0]
        prompt, tokens = got.prompt_ids, got.completions[0].token_ids
        expected = tokenizer.decode(prompt + tokens)[len(tokenizer.decode(prompt)) :]
        assert got.completions[0].text == expected
        assert "".join(generator.stream("To be, or not", **options)) == expected
        if expected.startswith(" ") and len(expected) > 3:  # a stop string with that space, at the very start
            spaced += 1
            stop = expected[:3]
            cut = generator.generate(["To be, or not"], stop_strings=[stop], **options)[0].completions[0]
            assert (cut.text, cut.finish_reason) == ("", "stop"), (stop, cut)
            streamed = generator.stream("To be, or not", stop_strings=[stop], **options)
            assert list(streamed) == []
    assert spaced > 0  # some completion began with a word of its own, and stopped there
