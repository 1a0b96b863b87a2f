"""Execution providers: which ONNX Runtime provider a name means, and a clear error when it cannot start.

ONNX Runtime does not fail when the CUDA provider cannot start (no GPU, no driver, CUDA or cuDNN
libraries missing): it logs an error and runs the session on the CPU. A user who asked for
``cuda`` would then get a CPU run that looks like a GPU run. So a session made for ``cuda`` is
checked after creation, and one that fell back is refused with the reason, found by loading the
provider's library ourselves (the dynamic loader names the first missing library).

Before the session is made, `onnxruntime.preload_dlls` loads CUDA and cuDNN from the ``nvidia-*``
pip packages where they are installed (``pip install 'onnxruntime-gpu[cuda,cudnn]'``), which is how
onnxruntime documents running its CUDA provider without a system-wide CUDA installation.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import io
import sys
import warnings

import onnxruntime as ort

from nima.runtime.errors import GenerateError
from nima.runtime.ort_adapter import provider_library

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
CUDA_LIBRARY = "onnxruntime_providers_cuda.dll" if sys.platform == "win32" else "libonnxruntime_providers_cuda.so"


def provider_list(provider: str) -> list[str]:
    """ORT's provider list for ``provider`` ("cpu" or "cuda"); an unknown or absent provider is a `GenerateError`."""
    if provider not in PROVIDERS:
        raise GenerateError(f"provider {provider!r}: choose one of {', '.join(PROVIDERS)}")
    wanted = PROVIDERS[provider]
    available = ort.get_available_providers()
    if wanted not in available:
        raise GenerateError(
            f"provider {provider!r}: {wanted} is not in this onnxruntime build (available: {', '.join(available)})"
        )
    if provider == "cuda":
        preload_cuda()
    return [wanted] if wanted == "CPUExecutionProvider" else [wanted, "CPUExecutionProvider"]


@functools.cache
def preload_cuda() -> None:
    """Load CUDA and cuDNN from pip's nvidia packages where present, once per process.

    Quietly: `preload_dlls` prints what it cannot find and may warn, and a provider that then
    cannot start is reported by `require_started` in one line.
    """
    preload = getattr(ort, "preload_dlls", None)  # onnxruntime >= 1.21
    if preload is None:
        return
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings(), contextlib.suppress(Exception):
        warnings.simplefilter("ignore")
        preload(directory="")  # nvidia site packages, then the default search path (never torch's folder)


def require_started(session: ort.InferenceSession, provider: str) -> None:
    """Refuse a session that ORT silently moved to the CPU when ``provider`` could not start."""
    wanted = PROVIDERS[provider]
    if session.get_providers()[0] == wanted:
        return
    raise GenerateError(
        f"provider {provider!r}: ONNX Runtime could not start {wanted} ({cuda_failure()}); "
        "it needs an NVIDIA GPU with CUDA and cuDNN (pip install 'onnxruntime-gpu[cuda,cudnn]' brings both), "
        "or use --provider cpu"
    )


def cuda_failure() -> str:
    """Why the CUDA provider did not start, as far as can be seen from here: a missing library or no GPU."""
    library = provider_library(CUDA_LIBRARY)
    if not library.is_file():
        return f"{CUDA_LIBRARY} is not installed"
    try:
        # Linux's loader names the first missing library; Windows names only the provider DLL
        ctypes.CDLL(str(library), **({"winmode": 0} if sys.platform == "win32" else {}))
    except OSError as err:
        reason = str(err).strip().splitlines()[0]
        return f"it or a CUDA/cuDNN DLL it needs did not load: {reason}" if sys.platform == "win32" else reason
    return "its library loads, so the GPU, its driver or cuDNN is the likely cause"
