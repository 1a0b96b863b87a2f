"""The spec, summary and CLI modules must import (and load specs) without importing torch.

Each check runs in a fresh interpreter, because the test process itself may already hold torch.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Prints the torch modules that were imported and exits 1 if there are any.
REPORT = textwrap.dedent(
    """
    import sys
    loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
    print("TORCH:" + ",".join(loaded[:5]))
    sys.exit(1 if loaded else 0)
    """
)

CHECKS = {
    "nima": "import nima",
    "load_spec": "import nima, nima.spec\nnima.load_spec('specs/llama-style.yaml')\n"
    "nima.spec.load_spec('specs/t5-small.yaml', overrides=['n_layers=2'])",
    "figures": "from nima.spec import figures, load_spec\nfigures(load_spec('specs/sparse.yaml'))",
    "schema": "from nima.spec.schema import spec_json_schema\nspec_json_schema()",
    "summary": "import nima.summary\nfrom nima.spec import figures, load_spec\n"
    "s = load_spec('specs/alibi.yaml')\nnima.summary.summary_table(s, figures(s))",
    "cli": "import nima.cli",
    "cli build without -o": "from typer.testing import CliRunner\nfrom nima.cli import app\n"
    "r = CliRunner().invoke(app, ['build', 'specs/llama-style.yaml', '--json'])\nassert r.exit_code == 0, r.output",
    "runtime": "import nima.runtime",
    "serve": "import nima.serve.app, nima.serve.scheduler, nima.cli.serve",
}


def run_check(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code + "\n" + REPORT],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


@pytest.mark.parametrize("name", list(CHECKS))
def test_imports_without_torch(name: str) -> None:
    proc = run_check(CHECKS[name])
    assert "TORCH:" in proc.stdout, f"check did not run to the end:\n{proc.stdout}\n{proc.stderr}"
    assert proc.returncode == 0, f"{name} imported torch: {proc.stdout.strip()}\n{proc.stderr}"
    assert proc.stdout.strip().endswith("TORCH:")


def test_the_check_detects_torch() -> None:
    # The same harness must notice torch when it is imported (here via the builders).
    proc = run_check("import nima.builders")
    assert proc.returncode == 1, proc.stderr
    assert "TORCH:torch" in proc.stdout
