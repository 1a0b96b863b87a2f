"""`nima generate`: streaming text, JSON, batches from a file, and one-line errors with exit 2."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nima.builders.models import DecoderLM
from nima.cli import app
from nima.runtime import Generator


def run(*args: object) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["generate", *map(str, args)])
    return result.exit_code, result.stdout, result.stderr


def test_streams_prompt_and_continuation(text_bundle: tuple[Path, DecoderLM]) -> None:
    path, _ = text_bundle
    code, out, _ = run(path, "--prompt", "To be", "--max-new-tokens", 30, "--greedy")
    assert code == 0
    expected = Generator(path).generate("To be", max_new_tokens=30, do_sample=False)[0].text
    assert out == "To be" + expected + "\n"


def test_json_batch_from_file_and_flags(text_bundle: tuple[Path, DecoderLM], tmp_path: Path) -> None:
    path, _ = text_bundle
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("To be\n\nWhat say you\n")
    code, out, _ = run(path, "--prompts-file", prompts, "--json", "--num-beams", 3, "--num-return-sequences", 2)
    assert code == 0
    data = json.loads(out)
    assert [d["prompt"] for d in data] == ["To be", "What say you"]
    assert all(len(d["completions"]) == 2 and d["completions"][0]["score"] is not None for d in data)
    direct = Generator(path).generate(["To be", "What say you"], num_beams=3, num_return_sequences=2)
    assert [c["token_ids"] for c in data[1]["completions"]] == [c.token_ids for c in direct[1].completions]


def test_prompt_ids_without_tokenizer(bundles: dict[str, tuple[Path, DecoderLM]]) -> None:
    path, _ = bundles["llama"]
    expected = Generator(path).generate([[1, 2, 3]], max_new_tokens=6, do_sample=False)[0].token_ids
    for pages in ("--huge-pages", "--no-huge-pages"):
        code, out, _ = run(path, "--prompt-ids", "1,2,3", "--max-new-tokens", 6, "--greedy", pages)
        assert code == 0
        assert out.strip() == ",".join(map(str, expected))


def test_huge_pages_flags_reach_the_generator(
    bundles: dict[str, tuple[Path, DecoderLM]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a flag the CLI asks for huge pages by size (``None``: it loads the model for one
    run), unlike `Generator`'s default; the flags force them on or off."""
    import nima.runtime

    asked: list[bool | None] = []

    class Recording(Generator):
        def __init__(self, *args: object, huge_pages: bool | None = True, **kwargs: object) -> None:
            asked.append(huge_pages)
            super().__init__(*args, huge_pages=huge_pages, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(nima.runtime, "Generator", Recording)
    path, _ = bundles["llama"]
    for flags in ([], ["--huge-pages"], ["--no-huge-pages"]):
        code, _, err = run(path, "--prompt-ids", "1,2,3", "--max-new-tokens", 2, *flags)
        assert code == 0, err
    assert asked == [None, True, False]


def test_bad_input_is_one_line_and_exit_2(bundles: dict[str, tuple[Path, DecoderLM]], tmp_path: Path) -> None:
    path, _ = bundles["llama"]
    cases = [
        ([path, "--prompt-ids", "1,2", "--top-p", "1.5"], "--top-p"),
        ([path, "--prompt-ids", "1,x"], "--prompt-ids"),
        ([path], "no prompt"),
        ([path, "--prompt", "hello"], "no tokenizer"),
        ([path, "--prompt-ids", "1", "--provider", "tpu"], "provider"),
        ([tmp_path / "nothing", "--prompt-ids", "1"], "no such bundle"),
        ([path, "--prompts-file", tmp_path / "missing.txt"], "missing.txt"),
        ([path, "--prompt-ids", "1,2", "--temperature", "-0.5"], "temperature"),
        ([path, "--prompt-ids", "1,2", "--num-beams", "0"], "--num-beams"),
        ([path, "--prompt-ids", ",".join(["1"] * 128)], "context is 128"),
    ]
    for args, named in cases:
        code, out, err = run(*args)
        assert code == 2, (args, out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0], (args, err)


def test_every_option_flag_reaches_the_generator(
    bundles: dict[str, tuple[Path, DecoderLM]], text_bundle: tuple[Path, DecoderLM]
) -> None:
    """The sampling and stopping flags give what `Generator.generate` gives with the same options."""
    path, _ = bundles["gpt2"]
    flags = ["--sample", "--seed", 11, "--temperature", 0.8, "--top-k", 20, "--top-p", 0.9, "--min-p", 0.02]
    flags += ["--repetition-penalty", 1.3, "--no-repeat-ngram-size", 2, "--min-new-tokens", 4, "--eos-id", 5]
    code, out, err = run(path, "--prompt-ids", "1,2,3", "--prompt-ids", "4,5", *flags, "--max-new-tokens", 16, "--json")
    assert code == 0, err
    options = {"do_sample": True, "seed": 11, "temperature": 0.8, "top_k": 20, "top_p": 0.9, "min_p": 0.02}
    options |= {"repetition_penalty": 1.3, "no_repeat_ngram_size": 2, "min_new_tokens": 4, "eos_token_ids": [5]}
    direct = Generator(path).generate([[1, 2, 3], [4, 5]], max_new_tokens=16, **options)
    assert [d["completions"][0]["token_ids"] for d in json.loads(out)] == [g.token_ids for g in direct]
    # and with a different seed the CLI samples something else: the flag is not ignored
    code, other, _ = run(path, "--prompt-ids", "1,2,3", *flags[:1], "--seed", 12, *flags[3:], "--max-new-tokens", 16)
    assert code == 0 and other.strip() != ",".join(map(str, direct[0].token_ids))

    text_path, _ = text_bundle
    full = Generator(text_path).generate("To be", max_new_tokens=24, do_sample=False)[0].text
    stop = full[len(full) // 2 : len(full) // 2 + 2]  # text the greedy continuation is known to reach
    code, out, err = run(text_path, "--prompt", "To be", "--greedy", "--max-new-tokens", 24, "--stop", stop, "--json")
    assert code == 0, err
    completion = json.loads(out)[0]["completions"][0]
    assert completion["finish_reason"] == "stop" and stop not in completion["text"]
    assert full.startswith(completion["text"])


def test_defaults_come_from_the_bundles_generation_section(
    bundles: dict[str, tuple[Path, DecoderLM]], tmp_path: Path
) -> None:
    """A bundle whose nima.json says ``generation: {max_new_tokens: 7, ...}`` generates 7 tokens;
    a flag overrides it."""
    source, _ = bundles["llama"]
    path = tmp_path / "bundle"
    shutil.copytree(source, path)
    spec = json.loads((path / "nima.json").read_text())
    spec["generation"] = {**spec.get("generation", {}), "max_new_tokens": 7, "do_sample": False}
    (path / "nima.json").write_text(json.dumps(spec))
    assert len(Generator(path).generate([[1, 2, 3]])[0].token_ids) == 7
    code, out, _ = run(path, "--prompt-ids", "1,2,3")
    assert code == 0 and len(out.strip().split(",")) == 7
    code, out, _ = run(path, "--prompt-ids", "1,2,3", "--max-new-tokens", 3)
    assert code == 0 and len(out.strip().split(",")) == 3


def test_every_option_is_checked_before_any_output(text_bundle: tuple[Path, DecoderLM]) -> None:
    """An end id outside the vocabulary is refused before the prompt is echoed; the thread count is
    bounded by the machine's cores (a huge one made ONNX Runtime crash or hang)."""
    path, _ = text_bundle
    code, out, err = run(path, "--prompt", "To be", "--eos-id", -5)
    assert code == 2 and out == "" and err.startswith("error: --eos-id: -5"), (out, err)
    code, out, err = run(path, "--prompt", "To be", "--threads", 100000)
    assert code == 2 and out == "" and "threads: 100000" in err and len(err.strip().splitlines()) == 1, err


def test_prompts_file_dash_reads_standard_input(text_bundle: tuple[Path, DecoderLM]) -> None:
    path, _ = text_bundle
    result = CliRunner().invoke(
        app, ["generate", str(path), "--prompts-file", "-", "--json", "--max-new-tokens", "4"], input="To be\nNay\n"
    )
    assert result.exit_code == 0, result.output
    assert [d["prompt"] for d in json.loads(result.stdout)] == ["To be", "Nay"]


def test_a_prompts_file_that_is_not_a_regular_file_is_refused(
    text_bundle: tuple[Path, DecoderLM], tmp_path: Path
) -> None:
    fifo = tmp_path / "prompts.fifo"
    os.mkfifo(fifo)  # reading it would block until a writer came
    code, out, err = run(text_bundle[0], "--prompts-file", fifo)
    assert (code, out) == (2, "")
    assert err.strip() == f"error: {fifo}: cannot read prompts (not a regular file)"


def test_a_prompt_past_the_context_is_refused_before_it_is_printed(text_bundle: tuple[Path, DecoderLM]) -> None:
    path, _ = text_bundle
    code, out, err = run(path, "--prompt", "To be or not " * 400)
    assert code == 2
    assert out == ""  # the prompt is echoed only once it is accepted
    context = Generator(path).spec.max_seq_len
    assert re.fullmatch(rf"error: prompt 0 has \d+ tokens: the context is {context}, no room to generate\n", err), err


def test_running_out_of_context_is_said(text_bundle: tuple[Path, DecoderLM]) -> None:
    """Generation cut by the model's context, not by --max-new-tokens: finish reason "context" and a
    warning, streamed or not."""
    path, _ = text_bundle
    generator = Generator(path)
    context = generator.spec.max_seq_len
    prompt = "To be"
    while len(generator.encode(prompt + " or not")) < context - 3:
        prompt += " or not"
    warning = (
        f"warning: stopped at the model's context of {context} tokens (prompt and output) before --max-new-tokens 500"
    )
    code, out, err = run(path, "--prompt", prompt, "--max-new-tokens", 500, "--greedy")
    assert code == 0 and out.startswith(prompt)
    assert err.strip().splitlines()[-1] == warning
    code, out, err = run(path, "--prompt", prompt, "--max-new-tokens", 500, "--greedy", "--json")
    assert code == 0 and json.loads(out)[0]["completions"][0]["finish_reason"] == "context"
    code, out, err = run(path, "--prompt", prompt, "--max-new-tokens", 2, "--greedy")
    assert code == 0 and "warning" not in err


def test_a_draft_bundle_gives_the_greedy_tokens(bundles: dict[str, tuple[Path, DecoderLM]], tmp_path: Path) -> None:
    """``--draft`` (and ``--draft-tokens``) decode speculatively: greedy, the tokens without a draft, and a
    seeded sample the same twice; a draft without its bundle, or of another vocabulary, is one line, exit 2."""
    path, draft = bundles["llama"][0], bundles["gpt2"][0]
    expected = Generator(path).generate([[1, 2, 3]], max_new_tokens=20, do_sample=False)[0].token_ids
    code, out, err = run(path, "--prompt-ids", "1,2,3", "--max-new-tokens", 20, "--greedy", "--draft", draft)
    assert code == 0, err
    assert out.strip() == ",".join(map(str, expected))
    sampled = [
        run(path, "--prompt-ids", "1,2,3", "--sample", "--seed", 3, "--draft", draft, "--draft-tokens", 2)
        for _ in range(2)
    ]
    assert sampled[0][0] == 0 and sampled[0][1] == sampled[1][1]  # stdout; stderr has the timing
    for args, message in (
        (["--draft-tokens", 3], "--draft-tokens: only with --draft"),
        (["--draft", tmp_path / "none"], "no such bundle folder"),
        (["--draft", draft, "--num-beams", 2], "draft bundle: one sequence at a time"),
        (["--draft", draft, "--draft-tokens", 0], "--draft-tokens"),
    ):
        code, out, err = run(path, "--prompt-ids", "1,2,3", *args)
        assert code == 2 and out == "", (args, out)
        assert len(err.strip().splitlines()) == 1 and message in err, (args, err)


def test_option_errors_name_the_flag(bundles: dict[str, tuple[Path, DecoderLM]]) -> None:
    """The runtime says "option top_p"; the command line names the flag the user typed."""
    path = bundles["llama"][0]
    for args, start in (
        (["--top-p", 2], "error: --top-p: Input should be less than or equal to 1"),
        (["--num-beams", 2, "--length-penalty", 100], "error: --length-penalty: Input should be less than or equal"),
        (["--draft-tokens", 0, "--draft", path], "error: --draft-tokens: Input should be greater than or equal to 1"),
        (["--num-beams", 2, "--num-return-sequences", 4], "error: --num-return-sequences: 4 exceeds --num-beams 2"),
    ):
        code, _, err = run(path, "--prompt-ids", "1,2", "--max-new-tokens", 3, *args)
        assert code == 2 and err.startswith(start), err


def test_json_schema_from_a_file_or_inline(text_bundle: tuple[Path, DecoderLM], tmp_path: Path) -> None:
    """``--json-schema`` takes a file or the JSON itself and gives what `Generator.generate` gives with it;
    what is neither, or no object, or a schema the engine refuses, is one line and exit 2."""
    path, _ = text_bundle
    schema = {"type": "object", "properties": {"w": {"type": "string", "maxLength": 3}}, "required": ["w"]}
    schema |= {"additionalProperties": False, "x-guidance": {"whitespace_flexible": False}}
    file = tmp_path / "schema.json"
    file.write_text(json.dumps(schema))
    sparse = tmp_path / "huge.json"
    with sparse.open("wb") as f:  # 1 GB, nothing on disk: refused by its size before it is read
        f.truncate(1 << 30)
    expected = Generator(path).generate("To be", max_new_tokens=40, do_sample=False, json_schema=schema)[0].text
    assert "w" in json.loads(expected)  # a whole document: the test model closes it within 40 tokens
    for given in (file, json.dumps(schema)):
        code, out, err = run(path, "--prompt", "To be", "--greedy", "--max-new-tokens", 40, "--json-schema", given)
        assert (code, out) == (0, "To be" + expected + "\n"), err
    for given, words in (
        (tmp_path / "missing.json", "no such file"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "a JSON object, not list"),
        ('{"type": "nonsense"}', "cannot be followed"),
        ('{"items": ' * 5000 + "{}" + "}" * 5000, "nested too deeply"),
        (sparse, "bytes; a schema is at most"),
    ):
        code, out, err = run(path, "--prompt", "To be", "--json-schema", given)
        assert code == 2 and out == ""
        assert err.startswith("error: --json-schema") and words in err and len(err.strip().splitlines()) == 1


def test_a_prompt_past_any_context_is_refused_before_it_is_tokenized(
    text_bundle: tuple[Path, DecoderLM], tmp_path: Path
) -> None:
    """A line of 20 MB (tokenizing it took 2.8 GB before the length check) and a prompts file of 300 MB
    (nothing on disk): refused by their size, at once, one line each."""
    path, _ = text_bundle
    context = Generator(path).spec.max_seq_len
    line = tmp_path / "line.txt"
    line.write_text("hello world " * (context * 8))
    code, out, err = run(path, "--prompts-file", line)
    assert code == 2 and out == "" and f"a context of {context:,} tokens holds no more than" in err
    huge = tmp_path / "huge.txt"
    with huge.open("wb") as f:
        f.truncate(300 << 20)
    code, out, err = run(path, "--prompts-file", huge)
    assert code == 2 and out == "" and "bytes of prompts; at most 268,435,456" in err
