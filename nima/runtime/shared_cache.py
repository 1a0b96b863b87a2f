"""Decoding with one preallocated KV buffer per layer that is both the past input and the present output.

Graphs exported with ``--target ort`` for plain models (full attention, no position bias) read
every length from ``attention_mask``, never from the cache's shape (see
``nima/export/fused_model.py``); their bundles say so with ``past_present_share_buffer`` in
``genai_config.json``. Such a graph's GroupQueryAttention kernel appends the new keys and values
in place when its past and present tensors are the same memory, instead of copying the whole
cache into a new present tensor at every step. onnxruntime-genai drives these bundles this way;
so does this session. On a 10M LLaMA-style model, separate past and present tensors made a
step 4% slower at 160 cached tokens and 23% slower at 932 (README, "Generate").

The buffers hold ``capacity`` positions (the longest prompt plus the new tokens): the kernel
reads positions ``< past + new`` of each and writes the new ones, every step binding the same
buffers through IO binding as input and output.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from nima.runtime.errors import GenerateError
from nima.runtime.names import ATTENTION_MASK, INPUT_IDS, LOGITS, POSITION_IDS
from nima.runtime.session import DecoderSession, KVCache, Value, host_value


class SharedBufferSession(DecoderSession):
    """`DecoderSession` for graphs that take one buffer as past and present (see the module docstring)."""

    def __init__(self, session: ort.InferenceSession, n_layers: int, n_kv_heads: int, head_dim: int) -> None:
        super().__init__(session, n_layers, n_kv_heads, head_dim)
        self._present_names = self._output_names[1:]
        self._io = session.io_binding()
        self._io.bind_output(LOGITS, "cpu")  # bound first, so it stays output 0 when rebound by name
        self._bound: tuple[Value, ...] | None = None  # the buffers bound now

    def _buffer(self, array: np.ndarray) -> ort.OrtValue:
        """A buffer on the session's device holding a copy of ``array`` (IO binding takes Python values)."""
        if self.device == "cpu":
            return ort.OrtValue(host_value(array))
        return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), self.device, 0)

    def empty_cache(self, batch: int, fixed: dict[str, Value] | None = None, capacity: int | None = None) -> KVCache:
        """Zeroed buffers, (B, H_kv, capacity, hd) each, holding no position yet."""
        if capacity is None or capacity < 1:
            raise GenerateError("a shared-buffer cache needs its capacity (prompt + new tokens)")
        if fixed:
            raise GenerateError("shared-buffer caches are for decoder-only bundles")
        zeros = np.zeros((batch, self.n_kv_heads, capacity, self.head_dim), dtype=self.kv_dtype)
        return KVCache(tuple(self._buffer(zeros) for _ in self._past_names), 0, batch)

    def step(
        self,
        input_ids: np.ndarray,  # (B, T) int64
        attention_mask: np.ndarray,  # (B, P + T) int64
        position_ids: np.ndarray,  # (B, T) int64
        cache: KVCache,
    ) -> tuple[np.ndarray, KVCache]:
        """Logits of the last position, (B, V) float32, and the same buffers now holding P + T positions."""
        new = input_ids.shape[1]
        capacity = cache.values[0].shape()[2]
        if cache.length + new > capacity:
            raise GenerateError(f"the cache holds {capacity} positions; this step needs {cache.length + new}")
        io = self._io
        # Bound arrays may be used in place: they stay referenced here until the run returns.
        ids = np.ascontiguousarray(input_ids, dtype=np.int64)
        mask = np.ascontiguousarray(attention_mask, dtype=np.int64)
        positions = np.ascontiguousarray(position_ids, dtype=np.int64)
        io.bind_cpu_input(INPUT_IDS, ids)
        io.bind_cpu_input(ATTENTION_MASK, mask)
        io.bind_cpu_input(POSITION_IDS, positions)
        if self._bound is not cache.values:  # rebinding the same buffers every step is wasted work
            for past, present, value in zip(self._past_names, self._present_names, cache.values, strict=True):
                io.bind_ortvalue_input(past, value)
                io.bind_ortvalue_output(present, value)
            self._bound = cache.values
        io.bind_output(LOGITS, "cpu")  # ORT allocates it: its shape changes between prefill and decode
        self.session.run_with_iobinding(io)
        logits = io._iobinding.get_outputs()[0].numpy()  # (B, T, V); from the C++ vector: no output wrapped
        last = logits[:, -1, :].astype(np.float32)  # (B, V)
        return last, KVCache(cache.values, cache.length + new, cache.batch, cache.fixed)

    def select(self, cache: KVCache, rows: np.ndarray) -> KVCache:
        """The buffers of ``rows`` (new buffers; the filled positions and the free ones alike)."""
        rows = np.asarray(rows, dtype=np.int64)
        values = tuple(self._buffer(value.numpy()[rows]) for value in cache.values)
        return KVCache(values, cache.length, len(rows), cache.fixed)
