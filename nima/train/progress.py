"""The console side of training on rank 0: a rich progress bar with loss, lr, tokens/s and ETA.

Other ranks get a `Quiet` reporter with the same methods, so the loop never asks who it is.
On a terminal the bar redraws in place; in a log file rich prints only the lines the loop
prints (evaluations, checkpoints) and the final bar.
"""

from __future__ import annotations

from types import TracebackType

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class Reporter:
    """A progress bar over optimizer steps plus one-line messages printed above it."""

    def __init__(self, total: int, start: int, console: Console | None = None) -> None:
        self.progress = Progress(
            TextColumn("[bold]train[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  lr {task.fields[lr]}  {task.fields[speed]} tok/s"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=console or Console(),
        )
        self.task = self.progress.add_task("train", total=total, completed=start, loss="-", lr="-", speed="-")

    def __enter__(self) -> Reporter:
        self.progress.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.progress.stop()

    def advance(self, step: int) -> None:
        self.progress.update(self.task, completed=step)

    def update(self, step: int, loss: float, lr: float, tokens_per_s: float) -> None:
        self.progress.update(
            self.task, completed=step, loss=f"{loss:.4f}", lr=f"{lr:.2e}", speed=f"{tokens_per_s:,.0f}"
        )

    def print(self, message: str) -> None:
        self.progress.console.print(message, highlight=False, markup=False)  # plain text: names and paths in it


class Quiet(Reporter):
    """What non-zero ranks report: nothing."""

    def __init__(self) -> None:  # no bar to build
        pass

    def __enter__(self) -> Quiet:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        pass

    def advance(self, step: int) -> None:
        pass

    def update(self, step: int, loss: float, lr: float, tokens_per_s: float) -> None:
        pass

    def print(self, message: str) -> None:
        pass
