"""bench/speculative.py: plain and prompt-lookup runs, with real and always-wrong drafts, give the same tokens."""

from __future__ import annotations

import io
from contextlib import redirect_stdout
from pathlib import Path

from bench_support import SMALL_SPEC, load_bench, small_bundle

from nima.builders import build_model, save_build
from nima.layout import TOKENIZER_FILE
from nima.runtime import Generator
from nima.spec import spec_from_dict
from nima.train.tokenizer import char_tokenizer

speculative = load_bench("speculative")


def test_every_drafter_gives_the_plain_tokens(tmp_path: Path) -> None:
    bundle, _ = small_bundle(tmp_path, "ort")
    generator = Generator(bundle)
    prompt = [5, 6, 7, 8] * 8
    _, plain = speculative.timed(generator, prompt, 0)
    for k, propose in ((4, None), (8, None), (4, speculative.wrong)):
        tps, tokens = speculative.timed(generator, prompt, k, propose)
        assert tokens == plain and tps > 0
    assert len(plain) == speculative.NEW_TOKENS


def test_the_trained_pair_mode_prints_a_line_per_draft_prompt_and_length(tmp_path: Path) -> None:
    """``--trained``: two model folders with the same character tokenizer (random weights here: the mode
    does not care how they were trained) give 3 drafts x 2 prompts x 2 draft lengths lines, each with an
    agreement and a ratio; tokens are checked equal to plain decoding's inside the bench."""
    text = speculative.TEXT.read_text()
    tokenizer = char_tokenizer(text)
    folders = []
    for name, width in (("target", 64), ("draft", 32)):
        spec = spec_from_dict({**SMALL_SPEC, "name": name, "d_model": width, "vocab_size": tokenizer.get_vocab_size()})
        folder = save_build(build_model(spec, seed=len(folders)), spec, tmp_path / name)
        tokenizer.save(str(folder / TOKENIZER_FILE))
        folders.append(folder)
    out = io.StringIO()
    with redirect_stdout(out):
        speculative.bench_trained(*folders, tmp_path / "bundles", rounds=1)
    rows = [line.split("|")[1:-1] for line in out.getvalue().splitlines() if line.startswith("| passage")]
    assert len(rows) == 12
    for cells in rows:
        agreement, k, *_, ratio = (c.strip() for c in cells[2:])
        assert 0 <= int(agreement.rstrip("%")) <= 100 and k in ("4", "8") and float(ratio.split("x")[0]) > 0
