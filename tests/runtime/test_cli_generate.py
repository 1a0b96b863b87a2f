"""`nima generate`: streaming text, JSON, batches from a file, and one-line errors with exit 2."""

from __future__ import annotations

import json
from pathlib import Path

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


def test_bad_input_is_one_line_and_exit_2(bundles: dict[str, tuple[Path, DecoderLM]], tmp_path: Path) -> None:
    path, _ = bundles["llama"]
    cases = [
        ([path, "--prompt-ids", "1,2", "--top-p", "1.5"], "top_p"),
        ([path, "--prompt-ids", "1,x"], "--prompt-ids"),
        ([path], "no prompt"),
        ([path, "--prompt", "hello"], "no tokenizer"),
        ([path, "--prompt-ids", "1", "--provider", "tpu"], "provider"),
        ([tmp_path / "nothing", "--prompt-ids", "1"], "no such bundle"),
        ([path, "--prompts-file", tmp_path / "missing.txt"], "missing.txt"),
    ]
    for args, named in cases:
        code, out, err = run(*args)
        assert code == 2, (args, out, err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and named in lines[0], (args, err)
