"""Every command in README.md's tour, serve and import sections runs, in order, as written.

The commands are read from the README itself (``console`` blocks: the lines after ``$``; ``bash``
blocks: every line; ``python`` blocks: the whole block), so a README edit that breaks one fails
here. They run in a fresh folder beside a link to ``specs/``, with ``nima`` from this environment,
in one shell that stops at the first failure. The few that need what a test cannot have get a
stated change: the data set is copied from ``../shared/data`` instead of downloaded, training
stops after a few steps, ``path/to/hf-model`` is a small random Llama made with transformers, and the
server listens on a free port instead of 8000 (tests run side by side).
"""

from __future__ import annotations

import os
import re
import shlex
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from transformers_support import tiny_llama

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SECTIONS = ("## A five-minute tour", "## Serve", "## Bring a Hugging Face model")
SHAKESPEARE = next(
    (p / "shared" / "data" / "tinyshakespeare.txt" for p in ROOT.parents if (p / "shared" / "data").is_dir()),
    None,
)
# command prefix -> what the test does instead (a replacement) or adds (a suffix), and why
CHANGES: dict[str, tuple[str, str]] = {
    "curl --create-dirs": ("replace", 'mkdir -p "$(dirname "$DATA")" && cp "$SHAKESPEARE" "$DATA"'),  # no network
    "nima train specs/shakespeare-char.yaml": ("suffix", "--set training.max_steps=30 --set training.eval_every=15"),
}


def readme_steps() -> list[tuple[str, str]]:
    """(kind, text) in README order: kind "sh" for a shell command, "python" for a Python block."""
    text = README.read_text(encoding="utf-8")
    steps: list[tuple[str, str]] = []
    for section in SECTIONS:
        start = text.index(section)
        end = text.find("\n## ", start + len(section))
        body = text[start : end if end != -1 else len(text)]
        for lang, block in re.findall(r"```(\w+)\n(.*?)```", body, flags=re.S):
            if lang == "python":
                steps.append(("python", block))
            elif lang == "console":
                steps += [("sh", line[2:]) for line in block.splitlines() if line.startswith("$ ")]
            elif lang == "bash":
                steps += [("sh", line) for line in block.splitlines() if line.strip() and not line.startswith("#")]
    return steps


def changed(command: str) -> str:
    for prefix, (how, text) in CHANGES.items():
        if command.startswith(prefix):
            return text if how == "replace" else f"{command.split('#')[0].rstrip()} {text}"
    return command


def test_the_readme_commands_run_in_order(tmp_path: Path) -> None:
    if SHAKESPEARE is None:
        pytest.skip("tinyshakespeare.txt is not beside the repository")
    steps = readme_steps()
    commands = [text for kind, text in steps if kind == "sh"]
    assert any(c.startswith("nima train") for c in commands) and any(c.startswith("nima import") for c in commands)
    for prefix in CHANGES:
        assert any(c.startswith(prefix) for c in commands), f"the README has no {prefix!r} command any more"

    (tmp_path / "specs").symlink_to(ROOT / "specs")
    tiny_llama(tmp_path / "path" / "to" / "hf-model", vocab_size=8000)  # large enough for the README's ids
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    script = ["set -euo pipefail", "trap 'kill $(jobs -p) 2>/dev/null || true' EXIT"]  # no server outlives a failure
    for i, (kind, text) in enumerate(steps):
        text = text.replace("127.0.0.1:8000", f"127.0.0.1:{port}").replace("--port 8000", f"--port {port}")
        if kind == "python":
            (tmp_path / f"step{i}.py").write_text(text)
            text = f"python step{i}.py"
        else:
            text = changed(text)
        script += [f"printf '\\n>>> %s\\n' {shlex.quote(text)}", text]  # a new line: a step may end without one
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "SHAKESPEARE": str(SHAKESPEARE),
        "OMP_NUM_THREADS": "1",
    }
    proc = subprocess.run(
        ["bash", "-c", "\n".join(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900
    )
    ran = [line[4:] for line in proc.stdout.splitlines() if line.startswith(">>> ")]
    assert proc.returncode == 0, f"failed at: {ran[-1] if ran else '?'}\n{proc.stderr[-3000:]}"
    assert len(ran) == len(steps)
    assert "124439808" in proc.stdout  # `nima build specs/gpt2-small.yaml --json | jq .figures.parameters`
    assert (tmp_path / "bundle" / "shakespeare-char" / "model.onnx").is_file()
    assert (tmp_path / "bundle" / "my-llama" / "model.onnx").is_file()
    assert '"object":"text_completion"' in proc.stdout  # the server answered curl
