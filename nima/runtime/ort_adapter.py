"""The one module that touches ONNX Runtime's internals, with a fallback through its public API for each.

A decode step of a 10M model takes about 2.5 ms on the CPU, and Nima's runtime is measured against
onnxruntime-genai, whose loop around the same run is C++. So a step calls the objects that ORT's
own Python API wraps:

- the session's C++ binding (``InferenceSession._sess``): its ``run_with_ort_values`` takes C++
  values and returns them, where the wrapper re-validates every input and re-wraps every output
  at each step, about 0.2 ms of a 2.5 ms step;
- IO binding's C++ object (``IOBinding._iobinding``): ``bind_input`` and ``get_outputs`` without
  the wrapper's checks for WebGPU graph capture and without wrapping every output;
- host values made by ``onnxruntime.capi._pybind_state.OrtValue`` on one CPU ``OrtDevice``, made
  once (the wrapper makes a device per value), and a wrapper's C++ value (``OrtValue._ortvalue``).

None of these is public, and onnxruntime is pinned only from below. So at import this module tries
each on a 150-byte gather graph of the runtime's (`INTERNALS`, `missing_internals`) and uses them
only if all work (`USING_INTERNALS`); otherwise the same functions go through the public API,
which gives the same tokens, a little slower. One choice for all, because the values one internal
makes are fed to another. ``tests/runtime/test_ort_adapter.py`` fails naming the internal an
upgrade removed.

`value_from_numpy` and `value_from_shape_and_type`, called with `HOST`, are ORT's own functions on
either path (the C++ ones with a CPU device, or the public classmethods with the device name
"cpu"), so a step calls them with no Python layer between; and a session's constructor binds what
`session_core` and `binding_core` return once, never per step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import numpy as np
import onnxruntime as ort

try:
    from onnxruntime.capi import _pybind_state as ort_c
except ImportError:  # a future onnxruntime that moved it: the public API below
    ort_c = None

if TYPE_CHECKING:
    from onnxruntime.capi._pybind_state import OrtValue as CoreValue

# A host or cache value: a C++ value on the internals' path, a Python `ort.OrtValue` otherwise (and on CUDA).
Value: TypeAlias = "ort.OrtValue | CoreValue"

PROBE_GRAPH = Path(__file__).parent / "graphs" / "gather_rows_int64_2d.onnx"  # selected = Gather(data, rows)


class SessionCore(Protocol):
    """What a step calls on a session: the C++ binding's two run methods, or `PublicSession`'s."""

    def run_with_ort_values(self, feed: dict[str, Value], names: list[str], options: Any) -> Sequence[Value]: ...

    def run_with_iobinding(self, binding: Any, options: Any) -> None: ...


class BindingCore(Protocol):
    """What a step calls on an IO binding: the C++ object's methods, or `PublicBinding`'s."""

    def bind_input(self, name: str, array: np.ndarray) -> None: ...

    def get_outputs(self) -> Sequence[Value]: ...


class PublicSession:
    """`SessionCore` through the public `InferenceSession` (the fallback): the C++ binding's argument
    order, with the wrapper's checks of every input and wrapping of every output."""

    def __init__(self, session: ort.InferenceSession) -> None:
        self.session = session

    def run_with_ort_values(self, feed: dict[str, Value], names: list[str], options: Any) -> Sequence[Value]:
        return self.session.run_with_ort_values(names, feed, options)

    def run_with_iobinding(self, binding: PublicBinding, options: Any) -> None:
        self.session.run_with_iobinding(binding.io, options)


class PublicBinding:
    """`BindingCore` through the public `IOBinding` (the fallback)."""

    def __init__(self, io: ort.IOBinding) -> None:
        self.io = io

    def bind_input(self, name: str, array: np.ndarray) -> None:
        self.io.bind_cpu_input(name, array)  # CPU arrays are bound by reference on both paths

    def get_outputs(self) -> Sequence[Value]:
        return self.io.get_outputs()


def _probe() -> dict[str, bool]:
    """Each internal the runtime uses -> whether it is there and works, tried in order on `PROBE_GRAPH`
    (one that fails leaves the ones that need it failed too; a probe session that does not load
    counts as ``InferenceSession._sess`` failing)."""
    data = np.arange(6, dtype=np.int64).reshape(2, 3)  # (2, 3)
    rows = np.array([1, 0, 1], dtype=np.int64)  # (3,)
    expected = data[rows]
    made: dict[str, Any] = {}

    def device() -> bool:
        made["host"] = ort_c.OrtDevice(ort_c.OrtDevice.cpu(), ort_c.OrtDevice.default_memory(), 0)
        return True

    def from_numpy() -> bool:
        made["data"] = ort_c.OrtValue.ortvalue_from_numpy(data, made["host"])
        made["rows"] = ort_c.OrtValue.ortvalue_from_numpy(rows, made["host"])
        return np.shares_memory(made["data"].numpy(), data)  # borrowed, not copied

    def from_shape_and_type() -> bool:
        value = ort_c.OrtValue.ortvalue_from_shape_and_type([2, 3], np.int64, made["host"])
        value.update_inplace(data)
        return np.array_equal(value.numpy(), data)

    def wrapped_value() -> bool:
        return ort.OrtValue(made["data"])._ortvalue is made["data"]

    def session() -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        options.log_severity_level = 3
        made["session"] = ort.InferenceSession(str(PROBE_GRAPH), options, providers=["CPUExecutionProvider"])
        return isinstance(made["session"]._sess, ort_c.InferenceSession)

    def run_values() -> bool:
        result = made["session"]._sess.run_with_ort_values(
            {"data": made["data"], "rows": made["rows"]}, ["selected"], None
        )
        return np.array_equal(result[0].numpy(), expected)

    def binding() -> bool:
        made["io"] = made["session"].io_binding()
        made["io"].bind_output("selected", "cpu")
        return isinstance(made["io"]._iobinding, ort_c.SessionIOBinding)

    def bind_input() -> bool:
        made["io"]._iobinding.bind_input("data", data)
        made["io"]._iobinding.bind_input("rows", rows)
        return True

    def run_bound() -> bool:
        made["session"]._sess.run_with_iobinding(made["io"]._iobinding, None)
        return True

    def outputs() -> bool:
        return np.array_equal(made["io"]._iobinding.get_outputs()[0].numpy(), expected)

    checks: dict[str, Callable[[], bool]] = {
        "onnxruntime.capi._pybind_state": lambda: ort_c is not None,
        "_pybind_state.OrtDevice": device,
        "_pybind_state.OrtValue.ortvalue_from_numpy": from_numpy,
        "_pybind_state.OrtValue.ortvalue_from_shape_and_type": from_shape_and_type,
        "OrtValue._ortvalue": wrapped_value,
        "InferenceSession._sess": session,
        "InferenceSession._sess.run_with_ort_values": run_values,
        "IOBinding._iobinding": binding,
        "IOBinding._iobinding.bind_input": bind_input,
        "InferenceSession._sess.run_with_iobinding": run_bound,
        "IOBinding._iobinding.get_outputs": outputs,
    }
    found = {}
    for name, check in checks.items():
        try:
            found[name] = bool(check())
        except Exception:  # missing, renamed or changed: any failure means the fallback
            found[name] = False
    return found


INTERNALS: dict[str, bool] = _probe()


def missing_internals() -> list[str]:
    """The internals this onnxruntime lacks or that failed their check, first the one that failed first."""
    return [name for name, works in INTERNALS.items() if not works]


# Bound by `use_internals`, below.
USING_INTERNALS: bool = False
HOST: Any = "cpu"  # the host device, in the form `value_from_numpy` and `value_from_shape_and_type` take
value_from_numpy: Callable[[np.ndarray, Any], Value] = ort.OrtValue.ortvalue_from_numpy
value_from_shape_and_type: Callable[[list[int], Any, Any], Value] = ort.OrtValue.ortvalue_from_shape_and_type


def use_internals(wanted: bool) -> None:
    """Bind this module to ORT's internals (``wanted``) or to its public API.

    Import binds the internals where all of `INTERNALS` work; a test binds the public API to run
    the fallback. Sessions and values made before keep the path they were made on: switch before
    making a `Generator`, never while one runs."""
    global USING_INTERNALS, HOST, value_from_numpy, value_from_shape_and_type
    if wanted and missing_internals():
        raise RuntimeError(f"onnxruntime {ort.__version__} lacks {', '.join(missing_internals())}")
    USING_INTERNALS = wanted
    if wanted:
        HOST = ort_c.OrtDevice(ort_c.OrtDevice.cpu(), ort_c.OrtDevice.default_memory(), 0)
        value_from_numpy = ort_c.OrtValue.ortvalue_from_numpy
        value_from_shape_and_type = ort_c.OrtValue.ortvalue_from_shape_and_type
    else:
        HOST = "cpu"  # the public classmethods' device_type
        value_from_numpy = ort.OrtValue.ortvalue_from_numpy
        value_from_shape_and_type = ort.OrtValue.ortvalue_from_shape_and_type


use_internals(not missing_internals())


def host_value(array: np.ndarray) -> Value:
    """A CPU value holding its own copy of ``array`` (so no numpy array has to outlive it)."""
    value = value_from_shape_and_type(list(array.shape), array.dtype, HOST)
    value.update_inplace(np.ascontiguousarray(array))
    return value


def wrapped(value: Value) -> ort.OrtValue:
    """``value`` as a Python `ort.OrtValue`, which IO binding takes (a C++ value is wrapped, not copied)."""
    return value if isinstance(value, ort.OrtValue) else ort.OrtValue(value)


def unwrapped(value: ort.OrtValue) -> Value:
    """``value`` in the form `SessionCore.run_with_ort_values` takes: its C++ value on the internals' path."""
    return value._ortvalue if USING_INTERNALS else value


def session_core(session: ort.InferenceSession) -> SessionCore:
    """The object a step runs ``session`` through: its C++ binding, or `PublicSession`."""
    return session._sess if USING_INTERNALS else PublicSession(session)


def binding_core(io: ort.IOBinding) -> BindingCore:
    """The object a step binds host arrays and reads outputs through: ``io``'s C++ object, or `PublicBinding`."""
    return io._iobinding if USING_INTERNALS else PublicBinding(io)


def provider_library(name: str) -> Path:
    """Where the onnxruntime wheels keep the provider library ``name``, the ``capi`` folder beside the
    binding (a layout, not an API: read from ``onnxruntime.__file__`` at each call)."""
    return Path(ort.__file__).parent / "capi" / name
