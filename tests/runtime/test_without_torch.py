"""A deployment without PyTorch: the base install's dependencies hold no torch, `nima generate`
works with torch unimportable, and the commands that need torch say how to get it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from nima.builders.models import DecoderLM

ROOT = Path(__file__).resolve().parents[2]


def run_blocked(*args: str) -> subprocess.CompletedProcess[str]:
    """`nima ARGS` in a fresh interpreter where `import torch` raises ImportError."""
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["torch"] = None  # any import of torch now fails
        sys.argv = ["nima", *{list(args)!r}]
        from nima.cli import main
        main()
        """
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_base_dependencies_have_no_torch() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    base = text.split("\ndependencies = [", 1)[1].split("\n]", 1)[0]  # the base list (tomllib needs 3.11)
    extra = text.split("\ntorch = [", 1)[1].split("\n]", 1)[0]
    names = [line.strip().strip('",').split(">")[0].split(";")[0] for line in base.splitlines()]
    names = [name for name in names if name and not name.startswith("#")]
    assert "pydantic" in names and "tokenizers" in names
    assert "torch" not in names and "onnx" not in names
    assert '"torch>=' in extra


def test_generate_without_torch(text_bundle: tuple[Path, DecoderLM]) -> None:
    proc = run_blocked("generate", str(text_bundle[0]), "--prompt", "To be", "--max-new-tokens", "5", "--json")
    assert proc.returncode == 0, proc.stderr
    assert '"token_ids"' in proc.stdout


def test_torch_commands_explain_what_is_missing(tmp_path: Path) -> None:
    for args in (
        ["build", "specs/llama-style.yaml", "-o", str(tmp_path / "m")],
        ["export", "--onnx", "specs/llama-style.yaml", "-o", str(tmp_path / "b")],
        ["train", "specs/shakespeare-char.yaml", "--data", "README.md", "-o", str(tmp_path / "r")],
    ):
        proc = run_blocked(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.strip().splitlines() == [
            f"error: nima {args[0] + (' -o' if args[0] == 'build' else '')} needs PyTorch, which this install "
            "lacks: pip install 'nima[torch]'"
        ], proc.stderr
        assert not any(tmp_path.iterdir())
    assert run_blocked("build", "specs/llama-style.yaml").returncode == 0  # validating a spec needs no torch
