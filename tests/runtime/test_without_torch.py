"""An install without PyTorch or without ONNX Runtime (the base install has neither; `[cpu]` or `[cuda]`
adds ONNX Runtime, `[torch]` PyTorch): `nima generate` works with torch unimportable, and what needs
the missing one says, in one line, how to install it. The metadata side: tests/test_packaging.py."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from nima.builders.models import DecoderLM

ROOT = Path(__file__).resolve().parents[2]


def run_blocked(*args: str, blocked: str = "torch") -> subprocess.CompletedProcess[str]:
    """`nima ARGS` in a fresh interpreter where importing the module ``blocked`` raises ImportError."""
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules[{blocked!r}] = None  # any import of it now fails
        sys.argv = ["nima", *{list(args)!r}]
        from nima.cli import main
        main()
        """
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)


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
            "lacks: pip install 'nima-lm[torch,cpu]'"
        ], proc.stderr
        assert not any(tmp_path.iterdir())
    assert run_blocked("build", "specs/llama-style.yaml").returncode == 0  # validating a spec needs no torch


def run_python(code: str, blocked: str) -> subprocess.CompletedProcess[str]:
    """Python ``code`` in a fresh interpreter where importing ``blocked`` raises ImportError."""
    prelude = f"import sys\nsys.modules[{blocked!r}] = None\n"
    return subprocess.run([sys.executable, "-c", prelude + code], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_build_model_without_torch_names_the_install() -> None:
    proc = run_python("import nima\nnima.build_model(nima.load_spec('specs/llama-style.yaml'))", blocked="torch")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        "ModuleNotFoundError: nima.build_model needs PyTorch, which this install lacks: "
        "pip install 'nima-lm[torch,cpu]'"
    )


def test_the_runtime_without_onnx_runtime_names_the_install() -> None:
    proc = run_python("import nima.runtime", blocked="onnxruntime")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        "ModuleNotFoundError: nima.runtime needs ONNX Runtime, which this install lacks: "
        "pip install 'nima-lm[cpu]' (or 'nima-lm[cuda]' for NVIDIA GPUs)"
    )


def test_generate_and_export_without_onnx_runtime_name_the_install(
    tmp_path: Path, text_bundle: tuple[Path, DecoderLM]
) -> None:
    for args in (
        ["generate", str(text_bundle[0]), "--prompt", "To be"],
        ["export", "--onnx", "specs/llama-style.yaml", "-o", str(tmp_path / "b")],
    ):
        proc = run_blocked(*args, blocked="onnxruntime")
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.strip().splitlines() == [
            f"error: nima {args[0]} needs ONNX Runtime, which this install lacks: "
            "pip install 'nima-lm[cpu]' (or 'nima-lm[cuda]' for NVIDIA GPUs)"
        ], proc.stderr
        assert not proc.stdout
    assert not any(tmp_path.iterdir())


def test_greedy_generation_without_numpy_random(text_bundle: tuple[Path, DecoderLM]) -> None:
    """Greedy decoding draws nothing, so a process that only decodes greedily runs with ``numpy.random``
    unimportable (6.6 MiB resident it does not load); sampling in the same setup is what needs it."""
    for mode, works in (("--greedy", True), ("--sample", False)):  # the test can fail: sampling imports it
        args = ("generate", str(text_bundle[0]), "--prompt", "To be", "--max-new-tokens", "5", mode, "--json")
        proc = run_blocked(*args, blocked="numpy.random")
        assert (proc.returncode == 0) == works, (mode, proc.stderr[-500:])
        assert ('"token_ids"' in proc.stdout) == works


def test_decoding_without_pydantic(text_bundle: tuple[Path, DecoderLM]) -> None:
    """The runtime reads a bundle and its options without Pydantic (`nima.runtime.bundle_spec`,
    `nima.spec.generation`): a process that only decodes never builds the spec's models (about
    0.07 s and 12 MiB). Reading the whole spec is what needs it, so the test can fail."""
    decode = (
        "from nima.runtime import Generator\n"
        f"generator = Generator({str(text_bundle[0])!r})\n"
        "print(generator.generate('To be', max_new_tokens=4, do_sample=True, top_p=0.9, seed=1)[0].text)\n"
        "print(generator.generate('To be', max_new_tokens=4)[0].text)\n"
    )
    proc = run_python(decode, blocked="pydantic")
    assert proc.returncode == 0, proc.stderr[-800:]
    assert len(proc.stdout.splitlines()) == 2
    proc = run_python(decode + "generator.bundle.model_spec\n", blocked="pydantic")
    assert proc.returncode == 1 and "pydantic" in proc.stderr.splitlines()[-1]
