"""bench/'s layout: every file imports, scripts import only the shared ``_`` modules, and the
processes that time a deployment load no torch.

bench/ holds scripts (``python bench/NAME.py``, each with a ``main``) and the modules they share
(``_harness``, ``_models``, ...: a ``_`` prefix, no ``main``). A script that imported another
script would hide shared code inside one benchmark again; these tests keep the two apart, and
catch a broken import without running any benchmark.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from bench_support import BENCH, load_bench

FILES = sorted(BENCH.glob("*.py"))
SCRIPTS = {path.stem for path in FILES if not path.stem.startswith("_")}
SHARED = {path.stem for path in FILES if path.stem.startswith("_")}
# Third-party packages some benchmarks need that Nima does not (transformers is in the test extra,
# onnxruntime-genai, gguf, CTranslate2 and llama-cpp-python are not): a file that needs a missing one
# is skipped, not failed.
OPTIONAL = {"transformers", "tokenizers", "onnxruntime_genai", "gguf", "ctranslate2", "llama_cpp"}


def _imported(path: Path) -> set[str]:
    """The top-level names of every module ``path`` imports, at its top or inside a function."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _has_main_guard(path: Path) -> bool:
    """Whether ``path`` ends in ``if __name__ == "__main__":`` at its top level."""
    return any(
        isinstance(node, ast.If) and "__name__" in ast.unparse(node.test) and "__main__" in ast.unparse(node.test)
        for node in ast.parse(path.read_text(), str(path)).body
    )


def test_there_are_scripts_and_shared_modules() -> None:
    assert {"decode", "genai_compare", "processes"} <= SCRIPTS
    assert {"_harness", "_models"} <= SHARED


@pytest.mark.parametrize("path", FILES, ids=lambda path: path.name)
def test_a_file_imports_no_script(path: Path) -> None:
    assert not _imported(path) & SCRIPTS, f"{path.name} imports a script; move what it needs to a _ module"
    assert "sys.path" not in path.read_text(), f"{path.name} edits sys.path; its folder is already on it"


@pytest.mark.parametrize("path", FILES, ids=lambda path: path.name)
def test_scripts_have_a_main_and_shared_modules_none(path: Path) -> None:
    script = path.stem in SCRIPTS
    assert _has_main_guard(path) == script, f"{path.name}: a script runs main(), a _ module does not"


@pytest.mark.parametrize("path", FILES, ids=lambda path: path.name)
def test_every_file_imports(path: Path) -> None:
    """Importing runs no benchmark: the scripts' work is behind their ``__main__`` guard."""
    try:
        module = load_bench(path.stem)
    except ModuleNotFoundError as err:
        if err.name in OPTIONAL:
            pytest.skip(f"{path.name} needs {err.name}")
        raise
    if path.stem in SCRIPTS:
        assert callable(module.main)


def test_the_deployment_processes_load_no_torch() -> None:
    """bench/processes.py and bench/huge_pages.py start processes that each time one runtime as
    deployed: importing them, and the genai process's runner, must not load torch."""
    pytest.importorskip("onnxruntime_genai")
    code = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(BENCH)!r})
        import processes, huge_pages, _genai
        print(sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))[:5])
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]", done.stdout
