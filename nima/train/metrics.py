"""Metrics of a run: one JSON object per line in ``metrics.jsonl``, and a loss-curve PNG.

Records are ``{"split": "train", "step", "loss", "lr", "grad_norm", "tokens", "tokens_per_s",
"elapsed_s"}`` every ``log_every`` steps and ``{"split": "val", "step", "loss", "ppl", "bpb",
"tokens", "elapsed_s"}`` at each evaluation. A resumed run first drops the records written
after its checkpoint (those steps are trained again), so the file never repeats a step.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from nima.layout import write_atomic, write_text


class MetricsLog:
    """Appends records to ``metrics.jsonl`` and keeps them in memory for the plot."""

    def __init__(self, path: Path, resume_step: int | None = None) -> None:
        self.path = path
        self.records: list[dict[str, Any]] = []
        if resume_step is not None and path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # a line cut short by a crash
                if isinstance(record, dict) and record.get("step", math.inf) <= resume_step:
                    self.records.append(record)
        write_text(path, "".join(json.dumps(r) + "\n" for r in self.records))

    def write(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def plot_losses(records: list[dict[str, Any]], path: Path, title: str) -> None:
    """Training and validation loss against step, written to ``path`` (PNG) via a temporary file."""
    import matplotlib

    matplotlib.use("Agg")  # no display; must precede pyplot
    import matplotlib.pyplot as plt

    train = [(r["step"], r["loss"]) for r in records if r.get("split") == "train"]
    val = [(r["step"], r["loss"]) for r in records if r.get("split") == "val"]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    fig.subplots_adjust(left=0.11, right=0.97, bottom=0.12, top=0.92)  # fixed margins: tight_layout is slow
    try:
        if train:
            ax.plot(
                [s for s, _ in train], [v for _, v in train], label="train", color="tab:blue", linewidth=1.0, alpha=0.8
            )
        if val:
            ax.plot([s for s, _ in val], [v for _, v in val], label="validation", color="tab:orange", marker="o")
            step, loss = val[-1]
            ax.annotate(f"{loss:.3f}", (step, loss), textcoords="offset points", xytext=(4, 6), fontsize=8)
        ax.set_xlabel("step")
        ax.set_ylabel("loss (nats / token)")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend()
        write_atomic(path, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)
