"""The errors of `nima export`, in one module that every stage imports and nothing else does.

Each is one line naming the file, flag or check at fault; the CLI prints it and exits (2 for
bad input, 1 for a failed check), and in every case nothing is written to the target.
"""

from __future__ import annotations

from typing import Protocol


class UnsupportedExport(ValueError):
    """An option combination or model family this exporter does not handle."""


class SourceError(ValueError):
    """The export source is missing, incomplete or inconsistent."""


class BundleError(ValueError):
    """The bundle folder cannot be written."""


class ExportError(RuntimeError):
    """The exporter could not produce a graph for this model."""


class Report(Protocol):
    """What a parity check returns (`nima.export.parity.ParityReport` and its encoder-decoder form)."""

    @property
    def passed(self) -> bool: ...

    def describe(self) -> str: ...


class ParityFailure(RuntimeError):
    """The exported graph's logits differ from PyTorch's by more than the tolerance."""

    def __init__(self, report: Report, quantize: str | None = None, random_weights: bool = False) -> None:
        self.report = report
        hint = ""
        if quantize is not None:
            why = (
                "random weights (a spec file) have no clear favourite token, so any rounding flips them"
                if random_weights
                else "the rounding moved this model's logits past the check"
            )
            hint = f" ({why}; export a trained model, or pass --no-verify to write the {quantize} bundle unchecked)"
        super().__init__(
            f"ONNX Runtime differs from PyTorch beyond tolerance: {report.describe()}; no bundle written{hint}"
        )
