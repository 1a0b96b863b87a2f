"""Row selection (beam reordering, dropping finished rows) of ORT values on the session's device.

Beam search reorders the KV cache by beam index at every step. On the CPU that is a numpy take
over each value's buffer (`DecoderSession.select`). On a GPU the runtime has no array library of
its own (numpy is host memory), so a take there would copy the whole cache to the host and back
at every step: for a 124M model with 4 beams and 200 cached tokens, about 20 MB each way. Instead
a one-node ONNX graph, ``Gather(data, rows, axis=0)``, runs on the same execution provider through
IO binding, so the selected rows are copied on the device.

The graphs are package data (``graphs/gather_rows_<type>_<rank>d.onnx``, 150 bytes each): the
runtime does not depend on the ``onnx`` package, which is what would build them.
``tests/runtime/test_device_rows.py`` writes them (``python tests/runtime/test_device_rows.py``)
and checks that the files are what it writes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from nima.runtime.errors import GenerateError
from nima.runtime.ort_adapter import Value, unwrapped, wrapped
from nima.runtime.providers import provider_list

GRAPHS = Path(__file__).parent / "graphs"
# ORT's name for each element type a cache or fixed input has -> the graph's file name part
ELEMENT_TYPES = {"tensor(float)": "float", "tensor(float16)": "float16", "tensor(int64)": "int64"}
RANKS = (2, 4)  # masks (B, S); caches and cross-attention keys/values (B, H, T, hd)
DATA, ROWS, SELECTED = "data", "rows", "selected"


def graph_path(element_type: str, rank: int) -> Path:
    """The gather graph for values of ``element_type`` (an ORT type string such as ``tensor(float)``)
    and ``rank`` (ONNX graph inputs have a fixed element type and rank)."""
    if element_type not in ELEMENT_TYPES or rank not in RANKS:
        raise GenerateError(f"no row-selection graph for {rank}-D {element_type} values")
    return GRAPHS / f"gather_rows_{ELEMENT_TYPES[element_type]}_{rank}d.onnx"


class DeviceRows:
    """Takes rows (axis 0) of ORT values on ``provider``'s device; one small session per type and rank."""

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self._sessions: dict[tuple[str, int], ort.InferenceSession] = {}

    def _session(self, element_type: str, rank: int) -> ort.InferenceSession:
        key = (element_type, rank)
        if key not in self._sessions:
            options = ort.SessionOptions()
            options.log_severity_level = 3
            options.intra_op_num_threads = 1  # a copy: the device does the work
            providers = provider_list(self.provider)
            self._sessions[key] = ort.InferenceSession(str(graph_path(*key)), options, providers)
        return self._sessions[key]

    def take(self, value: Value, rows: np.ndarray) -> Value:
        """A new value holding ``value[rows]`` (rows: int64 indices into axis 0), on the same device and
        of the same kind as ``value`` (the Python wrapper, or the C++ binding's value that the CPU
        path feeds)."""
        is_wrapped = isinstance(value, ort.OrtValue)
        data = wrapped(value)
        session = self._session(data.data_type(), len(data.shape()))
        binding = session.io_binding()
        binding.bind_ortvalue_input(DATA, data)
        binding.bind_cpu_input(ROWS, np.ascontiguousarray(rows, dtype=np.int64))
        binding.bind_output(SELECTED, self.provider)  # ORT names devices as the runtime names providers
        session.run_with_iobinding(binding)
        selected = binding.get_outputs()[0]
        return selected if is_wrapped else unwrapped(selected)
