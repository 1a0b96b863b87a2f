"""The torch-free runtime: ONNX Runtime sessions, logits processors, search strategies, `Generator`.

Imports onnxruntime, numpy and tokenizers only, so a deployment installs it without torch.
"""

from nima.installed import runtime_problem

if (_problem := runtime_problem("nima.runtime")) is not None:
    raise ModuleNotFoundError(_problem, name="onnxruntime")

from nima.runtime.errors import GenerateError
from nima.runtime.generator import Completion, Generation, Generator

__all__ = ["Completion", "GenerateError", "Generation", "Generator"]
