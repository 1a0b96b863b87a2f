"""What every `nima` command shares: the one-line error, path flags, ``--set``, spec loading, the torch check.

Exit codes: 0 success, 1 a check failed, 2 bad input (spec, file, flag) — reported as one
line per problem, no traceback, nothing written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, NoReturn

import typer

EXIT_BAD_INPUT = 2


def fail(lines: list[str] | str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    """Print each problem on its own line to stderr and exit with ``code``."""
    for line in [lines] if isinstance(lines, str) else lines:
        typer.echo(f"error: {line}", err=True)
    raise typer.Exit(code)


def path_given(value: str | Path) -> Path:
    """Parse a path flag, refusing an empty one: Path("") is the current folder, so an unset shell
    variable in `-o "$OUT"` would otherwise write a run or a bundle into wherever the command ran."""
    if isinstance(value, Path):
        return value
    if not value.strip():
        raise typer.BadParameter("an empty path; name a file or folder (. for the current folder)")
    return Path(value)


SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", help="Override a spec field: --set attention.n_heads=8 (repeatable)."),
]


def load_or_fail(spec_path: Path, overrides: list[str] | None):  # noqa: ANN201 - ModelSpec, imported lazily
    from nima.spec import SpecError, load_spec

    try:
        return load_spec(spec_path, overrides)
    except SpecError as err:
        fail([str(p) for p in err.problems])


def available_memory() -> int | None:
    """Bytes of memory the system can give a process now: Linux's MemAvailable, or a container's cgroup
    limit less its usage where that is smaller; None where neither is known."""
    found: list[int] = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit.isdigit():
            found.append(int(limit) - int(Path("/sys/fs/cgroup/memory.current").read_text().strip()))
    except (OSError, ValueError):
        pass
    return min(found) if found else None


def require_memory(what: str, needed: int) -> None:
    """Fail before allocating when ``needed`` bytes clearly do not fit (torch would try for seconds first)."""
    available = available_memory()
    if available is not None and needed > available:
        fail(f"{what} needs about {needed / 2**30:,.1f} GiB and {available / 2**30:,.1f} GiB are available")


def require_torch(command: str) -> None:
    """Fail with an install hint when PyTorch is missing (a runtime-only install has no torch)."""
    from nima.installed import torch_problem

    problem = torch_problem(f"nima {command}")
    if problem:
        fail(problem)


def require_runtime(command: str) -> None:
    """Fail with an install hint when ONNX Runtime is missing (the base install has none; an extra picks
    the CPU or the CUDA build); warn when both builds are installed, since each breaks the other."""
    from nima.installed import runtime_clash, runtime_problem

    problem = runtime_problem(f"nima {command}")
    if problem:
        fail(problem)
    clash = runtime_clash()
    if clash:
        typer.echo(f"warning: {clash}", err=True)
