"""One ONNX Runtime session over an exported decoder, with the KV cache kept as ORT values.

The cache that one step returns is passed, as it is, as the next step's input: ORT values, never
copied into numpy. With the CUDA provider each step binds its inputs and outputs through IO
binding, so the cache stays on the device and only the logits are bound to host memory (sampling
happens in numpy). On the CPU a step calls the session's C++ binding (the object onnxruntime's
own Python API wraps; `nima.runtime.ort_adapter`, which falls back to the public API where an
onnxruntime lacks it) with its values directly: the Python wrapper's ``run_with_ort_values``
re-validates every input and re-wraps every output at each step, about 0.2 ms of a 2.5 ms step
of a 10M model, which is the whole of a decode step's time budget beyond the weights' memory
traffic.

Graphs with the optional ``logits_to_keep`` input (`nima.export.logits_to_keep`) are fed 1:
a prompt's prefill runs the output head on its last position only, the one generation reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import numpy as np
import onnxruntime as ort

from nima.layout import (
    ATTENTION_MASK,
    INPUT_IDS,
    LOGITS,
    LOGITS_TO_KEEP,
    PAST_KEY,
    PAST_VALUE,
    POSITION_IDS,
    PRESENT_KEY,
)
from nima.runtime import ort_adapter
from nima.runtime.device_rows import DeviceRows
from nima.runtime.errors import GenerateError
from nima.runtime.huge_pages import huge_pages_for
from nima.runtime.ort_adapter import Value, host_value
from nima.runtime.providers import provider_list, require_started

NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}


def device_value(array: np.ndarray, device: str) -> Value:
    """``array`` as a value for a session on ``device`` ("cpu": `host_value`; "cuda": copied to the GPU)."""
    if device == "cpu":
        return host_value(array)
    return ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(array), device, 0)


def make_session(
    path: Path, provider: str = "cpu", threads: int | None = None, spin: bool = True, huge_pages: bool = False
) -> ort.InferenceSession:
    """An inference session on ``provider`` ("cpu" or "cuda"); a clear error when it is unavailable.

    ``spin`` is ORT's default: worker threads busy-wait for the next parallel region, which is
    what a dedicated machine wants (one decode step of a 10M model: 2.5 ms spinning, 3.3 ms not,
    on an idle 2-core machine). On a machine shared with other busy processes, ``spin=False``
    frees the cores between regions: there it made batch-1 decode ~1.6x faster.

    ``huge_pages`` moves the weights the session loads on the CPU onto 2 MB pages
    (`nima.runtime.huge_pages`): faster decoding (docs/performance.md, "Huge pages"); a thread does
    it after the session is made, so loading is not slower (`nima.runtime.huge_pages.settle` waits for
    it); `Generator` turns it on by default (`nima.runtime.huge_pages.wanted`).
    """
    providers = provider_list(provider)
    options = ort.SessionOptions()
    options.log_severity_level = 4  # fatal only: an error is raised to the caller, which says it in one line
    if threads:
        options.intra_op_num_threads = threads
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        with huge_pages_for(huge_pages and provider == "cpu", background=True):
            session = ort.InferenceSession(str(path), options, providers=providers)
    except Exception as err:  # ORT raises its own untyped errors for unreadable graphs
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise GenerateError(f"{path}: ONNX Runtime cannot load it: {first_line}") from None
    require_started(session, provider)
    return session


class KVCache(NamedTuple):
    """Per layer (key, value) ORT values, each (B, H_kv, P, hd), and the cached length P.

    ``fixed`` holds per-row inputs that stay the same at every step — an encoder-decoder's
    cross-attention keys/values and source mask — so reordering rows moves them along.
    A named tuple, not a frozen dataclass: every decode step makes one, and a frozen dataclass
    takes several times longer to construct.
    """

    values: tuple[Value, ...]  # key0, value0, key1, value1, ...
    length: int
    batch: int
    fixed: tuple[tuple[str, Value], ...] = ()


class DecoderSession:
    """Runs prefill and decode steps of an exported decoder; see the module docstring."""

    def __init__(self, session: ort.InferenceSession, n_layers: int, n_kv_heads: int, head_dim: int) -> None:
        self.session = session
        self.n_layers = n_layers
        self.n_kv_heads = n_kv_heads
        self.head_dim = head_dim
        self.device = "cuda" if session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
        inputs = {arg.name: arg for arg in session.get_inputs()}
        missing = [name for name in (INPUT_IDS, ATTENTION_MASK, POSITION_IDS, PAST_KEY % 0) if name not in inputs]
        if missing:
            raise GenerateError(f"the graph lacks the input {missing[0]!r} of the Nima/GenAI decoder contract")
        self.kv_dtype = NUMPY_TYPES.get(inputs[PAST_KEY % 0].type, np.float32)
        self._past_names = [name % i for i in range(n_layers) for name in (PAST_KEY, PAST_VALUE)]
        graph_layers = sum(1 for name in inputs if name.startswith("past_key_values.") and name.endswith(".key"))
        if graph_layers != n_layers or any(name not in inputs for name in self._past_names):
            said = f"nima.json says {n_layers} layers"
            raise GenerateError(f"{said}, the graph caches {graph_layers}: not this graph's spec")
        _, heads, _, size = inputs[PAST_KEY % 0].shape  # (batch, kv heads, past, head dim): fixed or named
        for what, graph, spec in (("kv heads", heads, n_kv_heads), ("head dim", size, head_dim)):
            if isinstance(graph, int) and graph != spec:
                said = f"nima.json says {what} {spec}"
                raise GenerateError(f"{said}, the graph's cache has {graph}: not this graph's spec")
        self._output_names = [out.name for out in session.get_outputs()]
        if self._output_names[0] != LOGITS or PRESENT_KEY % 0 not in self._output_names:
            raise GenerateError("the graph's outputs do not follow the decoder contract (logits, present.*)")
        self._binding = ort_adapter.session_core(session)  # see the module docstring
        defaults = {arg.name for arg in session.get_overridable_initializers()}
        self.keeps_last = LOGITS_TO_KEEP in defaults  # the head runs on the last position only
        # () int64 1, fed or bound (by value: IO binding refuses numpy arrays for inputs that have a default)
        self._keep_one = ort_adapter.wrapped(host_value(np.ones((), dtype=np.int64)))
        self._keep_feed = {LOGITS_TO_KEEP: ort_adapter.unwrapped(self._keep_one)} if self.keeps_last else {}
        self.rows_on_device = DeviceRows(self.device) if self.device != "cpu" else None

    def empty_cache(self, batch: int, fixed: dict[str, Value] | None = None, capacity: int | None = None) -> KVCache:
        """A cache holding nothing, (B, H_kv, 0, hd) per tensor: the first step is a prefill.
        ``fixed``: inputs fed unchanged at every step (see `KVCache`), made by `device_value`.
        ``capacity``: the most positions the generation will cache (used by `SharedBufferSession`)."""
        empty = np.zeros((batch, self.n_kv_heads, 0, self.head_dim), dtype=self.kv_dtype)
        values = tuple(device_value(empty, self.device) for _ in self._past_names)
        return KVCache(values, 0, batch, tuple((fixed or {}).items()))

    def cache_arrays(self, cache: KVCache) -> list[np.ndarray]:
        """The filled positions of each cache tensor, (B, H_kv, P, hd) each, as host arrays (views on the CPU)."""
        return [value.numpy()[:, :, : cache.length] for value in cache.values]

    def cache_from_arrays(
        self, arrays: list[np.ndarray], fixed: dict[str, np.ndarray] | None = None, capacity: int | None = None
    ) -> KVCache:
        """A cache holding ``arrays`` (key0, value0, key1, ...; (B, H_kv, P, hd) each) and the per-row
        ``fixed`` inputs, on the session's device: how a server rebuilds its running batch."""
        batch, _, length, _ = arrays[0].shape
        values = tuple(device_value(np.ascontiguousarray(a, dtype=self.kv_dtype), self.device) for a in arrays)
        kept = tuple((name, device_value(value, self.device)) for name, value in (fixed or {}).items())
        return KVCache(values, length, batch, kept)

    def step(
        self,
        input_ids: np.ndarray,  # (B, T) int64
        attention_mask: np.ndarray,  # (B, P + T) int64
        position_ids: np.ndarray,  # (B, T) int64
        cache: KVCache,
    ) -> tuple[np.ndarray, KVCache]:
        """Logits of the last position, (B, V) float32, and the cache extended by T."""
        if self.device == "cpu":
            # The three arrays are borrowed by their values, and stay alive until the run returns.
            ids = np.ascontiguousarray(input_ids, dtype=np.int64)
            mask = np.ascontiguousarray(attention_mask, dtype=np.int64)
            positions = np.ascontiguousarray(position_ids, dtype=np.int64)
            value, host = ort_adapter.value_from_numpy, ort_adapter.HOST
            feed = {
                INPUT_IDS: value(ids, host),
                ATTENTION_MASK: value(mask, host),
                POSITION_IDS: value(positions, host),
                **dict(zip(self._past_names, cache.values, strict=True)),
                **dict(cache.fixed),
                **self._keep_feed,
            }
            result = self._binding.run_with_ort_values(feed, self._output_names, None)
            outputs = [result[i] for i in range(len(self._output_names))]  # 10x cheaper than list(result)
        else:
            outputs = self._run_bound(input_ids, attention_mask, position_ids, cache)
        logits = outputs[0].numpy()[:, -1, :]  # (B, V): a view that keeps its ORT value alive
        if logits.dtype != np.float32:
            logits = logits.astype(np.float32)
        extended = KVCache(tuple(outputs[1:]), cache.length + input_ids.shape[1], cache.batch, cache.fixed)
        return logits, extended

    def step_all(
        self,
        input_ids: np.ndarray,  # (1, T) int64
        attention_mask: np.ndarray,  # (1, P + T) int64
        position_ids: np.ndarray,  # (1, T) int64
        cache: KVCache,
    ) -> tuple[np.ndarray, KVCache]:
        """Logits of every new position, (T, V) float32, and the cache extended by T: one run that
        checks T drafted tokens (`nima.runtime.lookup`). One row; the graph keeps the last T positions."""
        new = input_ids.shape[1]
        keep = host_value(np.array(new, dtype=np.int64))  # () int64: fed as logits_to_keep
        feed = {
            INPUT_IDS: host_value(np.ascontiguousarray(input_ids, dtype=np.int64)),
            ATTENTION_MASK: host_value(np.ascontiguousarray(attention_mask, dtype=np.int64)),
            POSITION_IDS: host_value(np.ascontiguousarray(position_ids, dtype=np.int64)),
            **dict(zip(self._past_names, cache.values, strict=True)),
            **dict(cache.fixed),
            **({LOGITS_TO_KEEP: keep} if self.keeps_last else {}),
        }
        if self.device == "cpu":
            result = self._binding.run_with_ort_values(feed, self._output_names, None)
            outputs = [result[i] for i in range(len(self._output_names))]
        else:
            wrapped = {name: ort_adapter.wrapped(value) for name, value in feed.items()}
            outputs = list(self.session.run_with_ort_values(self._output_names, wrapped))
        logits = np.asarray(outputs[0].numpy()[0, -new:, :], dtype=np.float32)  # (T, V)
        return logits, KVCache(tuple(outputs[1:]), cache.length + new, cache.batch, cache.fixed)

    def truncate(self, cache: KVCache, length: int) -> KVCache:
        """The cache holding its first ``length`` positions (drafted tokens that were rejected dropped)."""
        if length == cache.length:
            return cache
        values = tuple(device_value(np.ascontiguousarray(v.numpy()[:, :, :length]), self.device) for v in cache.values)
        return KVCache(values, length, cache.batch, cache.fixed)

    def _run_bound(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, position_ids: np.ndarray, cache: KVCache
    ) -> list[Value]:
        """One run through IO binding: the cache in and out on the device, the logits on the host."""
        binding = self.session.io_binding()
        binding.bind_cpu_input(INPUT_IDS, np.ascontiguousarray(input_ids, dtype=np.int64))
        binding.bind_cpu_input(ATTENTION_MASK, np.ascontiguousarray(attention_mask, dtype=np.int64))
        binding.bind_cpu_input(POSITION_IDS, np.ascontiguousarray(position_ids, dtype=np.int64))
        for name, value in (*zip(self._past_names, cache.values, strict=True), *cache.fixed):
            binding.bind_ortvalue_input(name, value)
        if self.keeps_last:
            binding.bind_ortvalue_input(LOGITS_TO_KEEP, self._keep_one)
        binding.bind_output(LOGITS, "cpu")
        for name in self._output_names[1:]:
            binding.bind_output(name, self.device)
        self.session.run_with_iobinding(binding)
        return list(binding.get_outputs())

    def row_stepper(self, cache: KVCache) -> RowStepper:
        """Decode steps of the single row that ``cache`` holds (see `RowStepper`; on the CPU, `HostRowStepper`)."""
        if self.device == "cpu" and cache.batch == 1:
            return HostRowStepper(self, cache)
        return RowStepper(self, cache)

    def select(self, cache: KVCache, rows: np.ndarray) -> KVCache:
        """The cache of ``rows`` (beam reordering, repeating a prompt, dropping finished rows)."""
        rows = np.asarray(rows, dtype=np.int64)
        values = tuple(self._take(value, rows) for value in cache.values)
        fixed = tuple((name, self._take(value, rows)) for name, value in cache.fixed)
        return KVCache(values, cache.length, len(rows), fixed)

    def _take(self, value: Value, rows: np.ndarray) -> Value:
        if self.rows_on_device is not None:  # a GPU: Gather on the device (`nima.runtime.device_rows`)
            return self.rows_on_device.take(value, rows)
        return host_value(value.numpy()[rows])


class RowStepper:
    """Decode steps of one row, one token each: (token, position, mask) -> the next token's logits.

    The single-row loop of `nima.runtime.search` calls it once per token, so the common case
    (one prompt, streamed) does no batch bookkeeping. This form runs `DecoderSession.step`; on
    the CPU `HostRowStepper` (separate past and present) and `SharedRowStepper` (shared buffers)
    do less per step.
    """

    def __init__(self, session: DecoderSession, cache: KVCache) -> None:
        self.session = session
        self._cache = cache

    @property
    def cache(self) -> KVCache:
        """The cache as it stands after the last step."""
        return self._cache

    def __call__(self, token: int, position: int, attention_mask: np.ndarray) -> np.ndarray:
        """Logits (V,) float32 after ``token`` at ``position``; ``attention_mask``: (1, P + 1) int64.

        The logits may be a view of the session's output buffer: valid until the next step."""
        ids = np.array([[token]], dtype=np.int64)  # (1, 1)
        positions = np.array([[position]], dtype=np.int64)  # (1, 1)
        logits, self._cache = self.session.step(ids, attention_mask, positions, self._cache)  # (1, V)
        return logits[0]


class HostRowStepper(RowStepper):
    """`RowStepper` on the CPU with separate past and present tensors (portable bundles).

    The token and position go into (1, 1) arrays wrapped as ORT values once (a CPU value made
    from a numpy array reads that array's memory), and one feed dict is updated in place: each
    step makes one new value, the mask's, where `DecoderSession.step` makes three values, three
    arrays and the dict.
    """

    def __init__(self, session: DecoderSession, cache: KVCache) -> None:
        super().__init__(session, cache)
        self._ids = np.zeros((1, 1), dtype=np.int64)
        self._positions = np.zeros((1, 1), dtype=np.int64)
        self._value, self._host = ort_adapter.value_from_numpy, ort_adapter.HOST  # bound once, as `_run`
        self._feed: dict[str, Value] = {
            INPUT_IDS: self._value(self._ids, self._host),
            POSITION_IDS: self._value(self._positions, self._host),
            **dict(cache.fixed),
        }
        self._past_names = session._past_names
        self._output_names = session._output_names
        self._run = session._binding.run_with_ort_values
        self._values, self._length, self._fixed = cache.values, cache.length, cache.fixed

    @property
    def cache(self) -> KVCache:
        return KVCache(self._values, self._length, 1, self._fixed)

    def __call__(self, token: int, position: int, attention_mask: np.ndarray) -> np.ndarray:
        self._ids[0, 0] = token
        self._positions[0, 0] = position
        feed = self._feed
        mask = np.ascontiguousarray(attention_mask, dtype=np.int64)  # (1, P + 1): alive until the run returns
        feed[ATTENTION_MASK] = self._value(mask, self._host)
        for name, value in zip(self._past_names, self._values, strict=True):
            feed[name] = value
        result = self._run(feed, self._output_names, None)
        outputs = [result[i] for i in range(len(self._output_names))]
        self._values = tuple(outputs[1:])
        self._length += 1
        logits = outputs[0].numpy()[0, -1]  # (V,): a view that keeps its ORT value alive
        return logits if logits.dtype == np.float32 else logits.astype(np.float32)
