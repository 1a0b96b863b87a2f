"""The one error type of the runtime: bad options, a bad bundle, an unusable provider."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class GenerateError(ValueError):
    """A user error found before any work: the message names the option, file or field."""


@contextlib.contextmanager
def runtime_errors(bundle: object) -> Iterator[None]:
    """ONNX Runtime's errors in a run, as one `GenerateError` line: a bundle whose files do not belong
    together (a manifest flag the graph cannot honour, a spec larger than the graph's tables) fails in
    ORT's kernels, whose messages are long and whose exceptions are no Nima error."""
    try:
        yield
    except GenerateError:
        raise
    except Exception as err:
        text = str(err).strip()
        ort = type(err).__module__.startswith("onnxruntime")  # its own classes, or a RuntimeError of its run:
        ort = ort or (isinstance(err, RuntimeError) and ("ONNXRuntimeError" in text or "Error in execution" in text))
        if not ort:
            raise
        first = text.splitlines()[0] if text else type(err).__name__
        raise GenerateError(
            f"{bundle}: ONNX Runtime failed on this bundle, whose files may not belong together: {first}"
        ) from None
