"""Decoding with one preallocated KV buffer per layer that is both the past input and the present output.

Graphs exported with ``--target ort`` for plain models (full attention, no position bias) read every
length from ``attention_mask``, never from the cache's shape (see
``nima/export/targets/ort/model.py``); their bundles say so with ``share_buffer`` in ``bundle.json``
(and ``past_present_share_buffer`` in ``genai_config.json``). Such a graph's GroupQueryAttention
kernel appends the new keys and values in place when its past and present tensors are the same
memory, instead of copying the whole cache into a new present tensor at every step. onnxruntime-genai
drives these bundles this way; so does this session. How much that saves, by cache length:
docs/performance.md, "Runtime settings".

The buffers hold ``capacity`` positions (the longest prompt plus the new tokens): the kernel reads
positions ``< past + new`` of each and writes the new ones, every step binding the same buffers
through IO binding as input and output.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from nima.layout import ATTENTION_MASK, INPUT_IDS, LOGITS, LOGITS_TO_KEEP, POSITION_IDS
from nima.runtime import ort_adapter
from nima.runtime.errors import GenerateError
from nima.runtime.session import NUMPY_TYPES, DecoderSession, KVCache, RowStepper, Value, host_value

KEEP_SHAPES = 2  # bound (B, T) array sets kept between generations: a prompt's and its decode steps'
KEEP_BYTES = 64 << 20  # the largest logits array kept


class SharedBufferSession(DecoderSession):
    """`DecoderSession` for graphs that take one buffer as past and present (see the module docstring)."""

    def __init__(self, session: ort.InferenceSession, n_layers: int, n_kv_heads: int, head_dim: int) -> None:
        super().__init__(session, n_layers, n_kv_heads, head_dim)
        self._present_names = self._output_names[1:]
        self._io = session.io_binding()
        self._io_core = ort_adapter.binding_core(self._io)  # its C++ object, for the calls every step makes
        self._io.bind_output(LOGITS, "cpu")  # bound first, so it stays output 0 when rebound by name
        if self.keeps_last:
            self._io.bind_ortvalue_input(LOGITS_TO_KEEP, self._keep_one)  # stays bound: every run keeps one position
        self._bound: tuple[Value, ...] | None = None  # the buffers bound now
        self._capacity = 0  # positions each bound buffer holds
        logits = session.get_outputs()[0]
        self._logits_dtype = NUMPY_TYPES.get(logits.type, np.float32)
        self._vocab = logits.shape[-1] if isinstance(logits.shape[-1], int) else None
        # On the CPU the ids, positions and logits live in arrays bound once per (B, T) shape and
        # reused: the graph reads and writes them in place. After a step of a 10M model has
        # streamed its weights through the caches, each Python-side binding or copy costs cache
        # misses (measured: docs/performance.md, "Runtime settings").
        self._shape: tuple[int, int] | None = None
        self._ids = self._positions = self._logits = np.empty(0)
        self._kept: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # see `_bind_arrays`
        self._mask = np.empty(0)  # the bound mask, kept alive while bound

    def _buffer(self, array: np.ndarray) -> ort.OrtValue:
        """A buffer on the session's device holding a copy of ``array`` (IO binding takes Python values)."""
        if self.device == "cpu":
            return ort_adapter.wrapped(host_value(array))
        return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), self.device, 0)

    def empty_cache(self, batch: int, fixed: dict[str, Value] | None = None, capacity: int | None = None) -> KVCache:
        """Buffers of (B, H_kv, capacity, hd) each, holding no position yet.

        On the CPU they are left uninitialised (the kernel reads only positions below the cached
        length; a test fills the free positions with NaN to hold it to that), which spares a
        zero fill and a copy per buffer before the first token."""
        if capacity is None or capacity < 1:
            raise GenerateError("a shared-buffer cache needs its capacity (prompt + new tokens)")
        if fixed:
            raise GenerateError("shared-buffer caches are for decoder-only bundles")
        shape = [batch, self.n_kv_heads, capacity, self.head_dim]
        if self.device == "cpu":
            empty = ort_adapter.value_from_shape_and_type
            values = tuple(ort_adapter.wrapped(empty(shape, self.kv_dtype, ort_adapter.HOST)) for _ in self._past_names)
            return KVCache(values, 0, batch)
        zeros = np.zeros(shape, dtype=self.kv_dtype)
        return KVCache(tuple(self._buffer(zeros) for _ in self._past_names), 0, batch)

    def cache_from_arrays(
        self, arrays: list[np.ndarray], fixed: dict[str, np.ndarray] | None = None, capacity: int | None = None
    ) -> KVCache:
        """Buffers of ``capacity`` positions holding ``arrays`` in their first positions (see
        `DecoderSession.cache_from_arrays`)."""
        batch, _, length, _ = arrays[0].shape
        capacity = max(capacity or 0, length + 1)
        if self.device != "cpu":
            full = []
            for array in arrays:
                buffer = np.zeros((batch, self.n_kv_heads, capacity, self.head_dim), dtype=self.kv_dtype)
                buffer[:, :, :length] = array
                full.append(self._buffer(buffer))
            return KVCache(tuple(full), length, batch)
        cache = self.empty_cache(batch, fixed, capacity)
        for value, array in zip(cache.values, arrays, strict=True):
            value.numpy()[:, :, :length] = array  # positions past ``length`` are never read
        return KVCache(cache.values, length, batch)

    def step(
        self,
        input_ids: np.ndarray,  # (B, T) int64
        attention_mask: np.ndarray,  # (B, P + T) int64
        position_ids: np.ndarray,  # (B, T) int64
        cache: KVCache,
    ) -> tuple[np.ndarray, KVCache]:
        """Logits of the last position, (B, V) float32, and the same buffers now holding P + T positions.

        On the CPU the logits are a view of the bound output: valid until the next step."""
        batch, new = input_ids.shape
        if self._bound is not cache.values:  # rebinding the same buffers every step is wasted work
            self._bind_cache(cache)
        if cache.length + new > self._capacity:
            raise GenerateError(f"the cache holds {self._capacity} positions; this step needs {cache.length + new}")
        if self.device == "cpu" and self._vocab is not None:
            return self._cpu_step(input_ids, attention_mask, position_ids, cache, batch, new)
        io = self._io
        # Bound arrays may be used in place: they stay referenced here until the run returns.
        io.bind_cpu_input(INPUT_IDS, np.ascontiguousarray(input_ids, dtype=np.int64))
        io.bind_cpu_input(ATTENTION_MASK, np.ascontiguousarray(attention_mask, dtype=np.int64))
        io.bind_cpu_input(POSITION_IDS, np.ascontiguousarray(position_ids, dtype=np.int64))
        io.bind_output(LOGITS, "cpu")  # ORT allocates it: its shape changes between prefill and decode
        self._shape = None  # the CPU step's bound arrays are no longer bound
        self.session.run_with_iobinding(io)
        logits = self._io_core.get_outputs()[0].numpy()  # (B, T or 1, V); from the C++ vector: no output wrapped
        last = logits[:, -1, :].astype(np.float32)  # (B, V)
        return last, KVCache(cache.values, cache.length + new, cache.batch, cache.fixed)

    def _cpu_step(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        position_ids: np.ndarray,
        cache: KVCache,
        batch: int,
        new: int,
    ) -> tuple[np.ndarray, KVCache]:
        """`step` with reused bound arrays (see `__init__`). The logits returned are a view of the
        bound output in float32: valid until the next step, which overwrites them."""
        io = self._io_core  # the C++ object: the wrapper's per-call checks are for WebGPU capture
        if self._shape != (batch, new):
            self._bind_arrays(batch, new)
        self._ids[...] = input_ids
        self._positions[...] = position_ids
        self._mask = np.ascontiguousarray(attention_mask, dtype=np.int64)  # (B, P + T): a new shape every step
        io.bind_input(ATTENTION_MASK, self._mask)
        self._binding.run_with_iobinding(io, None)
        last = self._logits[:, -1, :]  # (B, V)
        if last.dtype != np.float32:
            last = last.astype(np.float32)
        return last, KVCache(cache.values, cache.length + new, cache.batch, cache.fixed)

    def step_all(
        self,
        input_ids: np.ndarray,  # (1, T) int64
        attention_mask: np.ndarray,  # (1, P + T) int64
        position_ids: np.ndarray,  # (1, T) int64
        cache: KVCache,
    ) -> tuple[np.ndarray, KVCache]:
        """`DecoderSession.step_all` on the shared buffers: the kernel writes the T new positions in place."""
        new = input_ids.shape[1]
        if self._bound is not cache.values:
            self._bind_cache(cache)
        if cache.length + new > self._capacity:
            raise GenerateError(f"the cache holds {self._capacity} positions; this step needs {cache.length + new}")
        io = self._io
        keep = ort_adapter.wrapped(host_value(np.array(new, dtype=np.int64)))
        io.bind_cpu_input(INPUT_IDS, np.ascontiguousarray(input_ids, dtype=np.int64))
        io.bind_cpu_input(ATTENTION_MASK, np.ascontiguousarray(attention_mask, dtype=np.int64))
        io.bind_cpu_input(POSITION_IDS, np.ascontiguousarray(position_ids, dtype=np.int64))
        if self.keeps_last:
            io.bind_ortvalue_input(LOGITS_TO_KEEP, keep)
        io.bind_output(LOGITS, "cpu")
        self._shape = None  # the CPU step's bound arrays are no longer bound: `_cpu_step` rebinds them,
        self._ids = self._positions = np.empty(0)  # and a `SharedRowStepper` sees that its arrays went
        try:
            self.session.run_with_iobinding(io)
        finally:
            if self.keeps_last:
                io.bind_ortvalue_input(LOGITS_TO_KEEP, self._keep_one)
        logits = np.asarray(self._io_core.get_outputs()[0].numpy()[0, -new:, :], dtype=np.float32)  # (T, V)
        return logits, KVCache(cache.values, cache.length + new, cache.batch, cache.fixed)

    def truncate(self, cache: KVCache, length: int) -> KVCache:
        """The same buffers holding ``length`` positions: the kernel reads lengths from the mask, and
        overwrites the dropped positions at the next step."""
        return KVCache(cache.values, length, cache.batch, cache.fixed)

    def _bind_cache(self, cache: KVCache) -> None:
        """Bind ``cache``'s buffers as both past inputs and present outputs."""
        for past, present, value in zip(self._past_names, self._present_names, cache.values, strict=True):
            self._io.bind_ortvalue_input(past, value)
            self._io.bind_ortvalue_output(present, value)
        self._bound = cache.values
        self._capacity = cache.values[0].shape()[2]

    def _bind_arrays(self, batch: int, new: int) -> None:
        """Bind (B, T) ids and positions and (B, T, V) logits arrays, (B, 1, V) where the graph keeps
        the last position only (the CPU path; see `__init__`).

        The arrays of the last `KEEP_SHAPES` shapes are kept for the next generation: each one
        binds a prompt's shape and then the decode steps' (1, 1), and new logits arrays of a few
        MB cost a page fault per 4 KB when the graph first writes them (0.1 ms of a 10M model's
        first token). Arrays over `KEEP_BYTES` are not kept, so a long prompt's logits do not stay."""
        key = (batch, new)
        arrays = self._kept.pop(key, None)
        if arrays is None:
            arrays = (
                np.empty((batch, new), dtype=np.int64),
                np.empty((batch, new), dtype=np.int64),
                np.empty((batch, 1 if self.keeps_last else new, self._vocab), dtype=self._logits_dtype),
            )
        if arrays[2].nbytes <= KEEP_BYTES:
            self._kept[key] = arrays  # the most recent last
            while len(self._kept) > KEEP_SHAPES:
                del self._kept[next(iter(self._kept))]
        self._ids, self._positions, self._logits = arrays
        io = self._io_core
        io.bind_input(INPUT_IDS, self._ids)  # CPU arrays are bound by reference, not copied
        io.bind_input(POSITION_IDS, self._positions)
        logits = self._logits
        self._io.bind_output(LOGITS, "cpu", 0, logits.dtype, list(logits.shape), logits.ctypes.data)
        self._shape = (batch, new)

    def row_stepper(self, cache: KVCache) -> RowStepper:
        """On the CPU, a `RowStepper` that writes straight into the bound arrays (`SharedRowStepper`)."""
        if self.device != "cpu" or self._vocab is None or cache.batch != 1:
            return RowStepper(self, cache)  # `step` itself, which keeps the buffers shared
        return SharedRowStepper(self, cache)

    def select(self, cache: KVCache, rows: np.ndarray) -> KVCache:
        """The buffers of ``rows``: new buffers holding those rows' filled positions.

        The kernel reads only positions below the cached length, so on the CPU only those are
        copied (through one numpy temporary) into an uninitialised buffer, where copying whole
        buffers copied the free positions too, twice (a numpy temporary, then the new buffer).
        Beam search selects at every step, so this is on its path (measured: docs/performance.md)."""
        rows = np.asarray(rows, dtype=np.int64)
        if self.rows_on_device is not None:  # a GPU: whole buffers, gathered on the device
            values = tuple(self.rows_on_device.take(value, rows) for value in cache.values)
            return KVCache(values, cache.length, len(rows), cache.fixed)
        filled = cache.length
        empty, host = ort_adapter.value_from_shape_and_type, ort_adapter.HOST
        selected = []
        for value in cache.values:
            old = value.numpy()  # (B, H_kv, capacity, hd): a view of the buffer
            new = empty([len(rows), *old.shape[1:]], old.dtype, host)
            new.numpy()[:, :, :filled] = old[rows, :, :filled]  # positions past the cache are never read
            selected.append(ort_adapter.wrapped(new))
        return KVCache(tuple(selected), cache.length, len(rows), cache.fixed)


class SharedRowStepper(RowStepper):
    """`RowStepper` over a `SharedBufferSession` on the CPU: each step writes the token and
    position into the arrays the session has bound, binds the mask and runs; nothing else.

    `SharedBufferSession.step` does the same with the checks and bookkeeping a batch needs;
    for one row they were about half of a small model's step time outside the run (docs/performance.md).
    """

    def __init__(self, session: SharedBufferSession, cache: KVCache) -> None:
        super().__init__(session, cache)
        self._shared = session
        self._values, self._length, self._fixed = cache.values, cache.length, cache.fixed
        self._run = session._binding.run_with_iobinding
        self._io = session._io_core
        self._bind()

    def _bind(self) -> None:
        """Bind this row's buffers and (1, 1) arrays; again whenever another caller rebound the session."""
        session = self._shared
        if session._bound is not self._values:
            session._bind_cache(self.cache)
        if session._shape != (1, 1):
            session._bind_arrays(1, 1)
        self._ids, self._positions = session._ids, session._positions  # (1, 1) each
        self._logits = session._logits[0, -1]  # (V,)
        self._capacity = session._capacity

    @property
    def cache(self) -> KVCache:
        return KVCache(self._values, self._length, 1, self._fixed)

    def __call__(self, token: int, position: int, attention_mask: np.ndarray) -> np.ndarray:
        session = self._shared
        if session._bound is not self._values or session._ids is not self._ids:
            self._bind()  # another generation on this session ran in between
        if self._length >= self._capacity:
            raise GenerateError(f"the cache holds {self._capacity} positions; this step needs {self._length + 1}")
        self._ids[0, 0] = token
        self._positions[0, 0] = position
        session._mask = np.ascontiguousarray(attention_mask, dtype=np.int64)  # (1, P + 1), kept alive while bound
        self._io.bind_input(ATTENTION_MASK, session._mask)
        self._run(self._io, None)
        self._length += 1
        logits = self._logits  # (V,)
        return logits if logits.dtype == np.float32 else logits.astype(np.float32)
