"""`nima.runtime.ort_adapter`: every ONNX Runtime internal it uses is in the installed onnxruntime,
its public-API fallback generates the same tokens, and no other module touches the internals."""

from __future__ import annotations

import re
import types
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from runtime_support import make_spec, take_rows_on_device, torch_greedy

import nima
from nima.builders import build_model, save_build
from nima.builders.models import DecoderLM
from nima.export.bundle import export_bundle
from nima.runtime import Generator, ort_adapter
from nima.runtime.shared_cache import SharedBufferSession
from nima.spec import spec_from_dict

ROOT = Path(__file__).resolve().parents[2]
ADAPTER = Path(ort_adapter.__file__).resolve()
# How code reaches the internals: the binding module, its folder, and the wrappers' private attributes.
INTERNAL = re.compile(r"_pybind_state|\bcapi\b|\._sess\b|\._iobinding\b|\._ortvalue\b")
PROMPTS = [[5, 9, 2, 33, 17, 8, 40], [11], [3, 60, 22, 22]]
SOURCES = [[5, 9, 12, 30, 7, 7, 21], [33, 4], [8, 8, 19, 3]]  # the encoder-decoder's vocabulary is 40


@pytest.mark.parametrize("internal", list(ort_adapter.INTERNALS))
def test_the_internal_is_in_this_onnxruntime(internal: str) -> None:
    """One test per internal, so an upgrade that removes one fails naming it."""
    assert ort_adapter.INTERNALS[internal], (
        f"onnxruntime {ort.__version__}: {internal} is missing or no longer works, so Nima runs on "
        "the public-API fallback (same tokens, slower steps) until nima/runtime/ort_adapter.py is updated"
    )


def test_the_runtime_uses_the_internals() -> None:
    missing = ", ".join(ort_adapter.missing_internals())
    assert ort_adapter.USING_INTERNALS, f"onnxruntime {ort.__version__} lacks {missing}: the fallback is in use"


def test_the_probe_notices_a_missing_internal(monkeypatch: pytest.MonkeyPatch) -> None:
    """A binding module without the IO binding class: that check fails, the others still pass, and
    the internals cannot be chosen."""
    names = {name: getattr(ort_adapter.ort_c, name) for name in ("OrtDevice", "OrtValue", "InferenceSession")}
    monkeypatch.setattr(ort_adapter, "ort_c", types.SimpleNamespace(**names))
    found = ort_adapter._probe()
    assert not found["IOBinding._iobinding"]
    assert found["InferenceSession._sess.run_with_ort_values"]  # the ones before it still work
    monkeypatch.setattr(ort_adapter, "INTERNALS", found)
    with pytest.raises(RuntimeError, match="lacks IOBinding._iobinding"):
        ort_adapter.use_internals(True)


def test_only_the_adapter_touches_the_internals() -> None:
    """The package and the benchmarks name no internal outside the adapter (which does: the pattern works)."""
    files = [*Path(nima.__file__).parent.rglob("*.py"), *(ROOT / "bench").glob("*.py")]
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in files
        if path.resolve() != ADAPTER
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if INTERNAL.search(line)
    ]
    assert not found, "ONNX Runtime internals outside nima/runtime/ort_adapter.py:\n" + "\n".join(found)
    assert INTERNAL.search(ADAPTER.read_text(encoding="utf-8"))


@contextmanager
def on_public_api() -> Iterator[None]:
    """The adapter bound to ORT's public API, then back to what import chose."""
    ort_adapter.use_internals(False)
    try:
        yield
    finally:
        ort_adapter.use_internals(not ort_adapter.missing_internals())


@pytest.fixture
def public_api() -> Iterator[None]:
    with on_public_api():
        yield


@pytest.fixture(scope="module")
def ort_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DecoderLM]:
    """A LLaMA-style `--target ort` bundle (shared KV buffers, IO binding); head size 16, the kernel's minimum."""
    root = tmp_path_factory.mktemp("adapter-ort")
    spec = make_spec("llama", name="rt-adapter-ort", d_model=64, attention={"n_heads": 4, "n_kv_heads": 2})
    model = build_model(spec, seed=1)
    source = save_build(model, spec, root / "src")
    return export_bundle(source, root / "bundle", target="ort", verify=False).out, model.eval()


@pytest.fixture(scope="module")
def seq2seq_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small encoder-decoder bundle: cross-attention values fed as fixed inputs at every step."""
    root = tmp_path_factory.mktemp("adapter-seq2seq")
    spec = spec_from_dict(
        {
            "architecture": "encoder-decoder",
            "name": "s2s-adapter",
            "vocab_size": 40,
            "max_seq_len": 48,
            "d_model": 32,
            "n_layers": 2,
            "n_encoder_layers": 2,
            "attention": {"n_heads": 4},
            "init": {"kind": "normal", "std": 0.3},
            "ffn": {"kind": "relu", "hidden": 64},
            "position": {"kind": "sinusoidal"},
            "norm": {"kind": "layernorm", "placement": "post"},
        }
    )
    source = save_build(build_model(spec, seed=0), spec, root / "src")
    return export_bundle(source, root / "bundle", verify=False).out


def every_path(gen: Generator, prompts: list[list[int]]) -> list[list[int]]:
    """Tokens from each way a generation runs a session: one streamed row (the row steppers), a padded
    batch (`step`), beam search (rows selected on the host), then beam search with rows selected as
    on a GPU (`DeviceRows`)."""
    tokens = [list(gen.stream_tokens(prompts[0], max_new_tokens=24, do_sample=False))]
    tokens += [g.token_ids for g in gen.generate(prompts, max_new_tokens=16, do_sample=False)]
    beams = gen.generate(prompts[::2], num_beams=3, num_return_sequences=2, max_new_tokens=10)
    tokens += [c.token_ids for g in beams for c in g.completions]
    take_rows_on_device(gen)
    beams = gen.generate(prompts[::2], num_beams=3, num_return_sequences=2, max_new_tokens=10)
    return tokens + [c.token_ids for g in beams for c in g.completions]


def on_both_paths(path: Path, prompts: list[list[int]]) -> tuple[list[list[int]], list[list[int]]]:
    """`every_path` of a generator made on the internals and of one made on the public API."""
    assert ort_adapter.USING_INTERNALS
    fast = every_path(Generator(path), prompts)
    with on_public_api():
        gen = Generator(path)
        assert isinstance(gen.session._binding, ort_adapter.PublicSession)  # the fallback is what runs
        cache = gen.session.empty_cache(1, capacity=4)
        assert all(isinstance(value, ort.OrtValue) for value in cache.values)  # public values, not C++ ones
        fallback = every_path(gen, prompts)
    return fast, fallback


@pytest.mark.parametrize("bundle", ["portable", "ort"])
def test_the_fallback_generates_the_same_tokens(
    bundle: str, bundles: dict[str, tuple[Path, DecoderLM]], ort_bundle: tuple[Path, DecoderLM]
) -> None:
    """Separate past and present tensors (run with ORT values) and shared buffers (IO binding)."""
    path, model = bundles["llama"] if bundle == "portable" else ort_bundle
    assert isinstance(Generator(path).session, SharedBufferSession) == (bundle == "ort")
    fast, fallback = on_both_paths(path, PROMPTS)
    assert fallback == fast
    assert fast[0] == torch_greedy(model, PROMPTS[0], 24)


def test_the_fallback_generates_the_same_tokens_with_fixed_inputs(seq2seq_bundle: Path) -> None:
    """An encoder-decoder: the encoder's outputs are host values fed unchanged at every step."""
    fast, fallback = on_both_paths(seq2seq_bundle, SOURCES)
    assert fallback == fast


def test_the_fallback_runs_the_general_shared_buffer_step(ort_bundle: tuple[Path, DecoderLM], public_api: None) -> None:
    """The shared-buffer step that binds fresh arrays every run (the CUDA path, here on the CPU)."""
    path, model = ort_bundle
    gen = Generator(path)
    gen.session._vocab = None  # what the general path keys on: no static vocabulary size
    assert gen.generate([PROMPTS[2]], max_new_tokens=16, do_sample=False)[0].token_ids == torch_greedy(
        model, PROMPTS[2], 16
    )


def test_a_host_value_owns_its_copy_on_both_paths(public_api: None) -> None:
    array = np.arange(6, dtype=np.float32).reshape(2, 3)
    value = ort_adapter.host_value(array)
    array[...] = -1
    assert isinstance(value, ort.OrtValue)
    np.testing.assert_array_equal(value.numpy(), np.arange(6, dtype=np.float32).reshape(2, 3))
