"""Small exported bundles for the server tests: each family whose cache a running batch treats differently."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tokenizer_support import shakespeare_tokenizer  # noqa: F401 - imported from here by tests
from tokenizers import Tokenizer

from nima.builders import build_model, save_build
from nima.export.bundle import export_bundle
from nima.spec import spec_from_dict

DECODER: dict[str, Any] = {
    "vocab_size": 64,
    "max_seq_len": 96,
    "d_model": 64,  # head_dim 16: the `ort` target uses GroupQueryAttention
    "n_layers": 2,
    "attention": {"n_heads": 4},
    "init": {"kind": "normal", "std": 0.3},  # wide logits: greedy choices are far from ties
}
# name -> (spec changes, export target): learned positions (moving a row is copying), RoPE rotated by
# cache index in the fused `ort` graph (moving a row rotates its keys), Llama 3.1 frequencies, ALiBi
# (a position bias in the mask) and a sliding window.
KINDS: dict[str, tuple[dict[str, Any], str]] = {
    "gpt2": ({"ffn": {"kind": "gelu", "hidden": 64}, "position": {"kind": "learned"}}, "portable"),
    "llama-ort": (
        {
            "attention": {"n_heads": 4, "n_kv_heads": 2},
            "ffn": {"kind": "swiglu", "hidden": 48},
            "position": {"kind": "rope"},
            "norm": {"kind": "rmsnorm"},
            "bias": False,
            "tie_embeddings": False,
        },
        "ort",
    ),
    "llama3-ort": (
        {
            "attention": {"n_heads": 4, "n_kv_heads": 2},
            "ffn": {"kind": "swiglu", "hidden": 48},
            "position": {
                "kind": "rope",
                "theta": 500.0,
                "frequency_scaling": {
                    "kind": "llama3",
                    "factor": 8.0,
                    "low_freq_factor": 1.0,
                    "high_freq_factor": 4.0,
                    "original_max_seq_len": 16,
                },
            },
            "norm": {"kind": "rmsnorm"},
            "bias": False,
        },
        "ort",
    ),
    "alibi": ({"ffn": {"kind": "relu", "hidden": 64}, "position": {"kind": "alibi"}, "bias": False}, "portable"),
    "mistral-ort": (
        {
            "attention": {"n_heads": 4, "n_kv_heads": 2, "pattern": {"kind": "local", "window": 12}},
            "ffn": {"kind": "swiglu", "hidden": 48},
            "position": {"kind": "rope"},
            "norm": {"kind": "rmsnorm"},
            "bias": False,
        },
        "ort",
    ),
}
SEQ2SEQ: dict[str, Any] = {
    "architecture": "encoder-decoder",
    "vocab_size": 40,
    "max_seq_len": 48,
    "d_model": 32,
    "n_layers": 2,
    "attention": {"n_heads": 4},
    "init": {"kind": "normal", "std": 0.3},
    "ffn": {"kind": "geglu", "hidden": 48},
    "position": {"kind": "relative"},
    "norm": {"kind": "rmsnorm", "placement": "pre"},
    "bias": False,
}


def decoder_bundle(kind: str, root: Path, seed: int = 0, tokenizer: Tokenizer | None = None, **more: Any) -> Path:
    changes, target = KINDS[kind]
    vocab = {"vocab_size": tokenizer.get_vocab_size()} if tokenizer is not None else {}
    spec = spec_from_dict({**DECODER, "name": f"serve-{kind}", **changes, **vocab, **more})
    source = save_build(build_model(spec, seed=seed), spec, root / f"{kind}-src")
    if tokenizer is not None:
        tokenizer.save(str(source / "tokenizer.json"))
    return export_bundle(source, root / f"{kind}-bundle", target=target, verify=False).out


def seq2seq_bundle(root: Path, seed: int = 0) -> Path:
    spec = spec_from_dict({**SEQ2SEQ, "name": "serve-t5"})
    source = save_build(build_model(spec, seed=seed), spec, root / "t5-src")
    return export_bundle(source, root / "t5-bundle", verify=False).out


class RunningServer:
    """A real uvicorn server on a free loopback port, in a thread: ``url``, ``service``, `stop`."""

    def __init__(
        self, bundle: Path, api_key: str | None = None, wait_ready: bool = True, service: Any = None, **options: Any
    ) -> None:
        import socket
        import threading
        import time

        import uvicorn

        from nima.serve.app import create_app
        from nima.serve.service import Service

        max_body = options.pop("max_body", 1 << 20)
        self.service = (service or Service)(bundle, options.pop("model_name", "tiny"), **options)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        config = uvicorn.Config(
            create_app(self.service, api_key, max_body),
            host="127.0.0.1",
            port=port,
            log_level="error",
            access_log=False,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while not self.server.started or (wait_ready and not self.service.ready):
            if time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


def metric(server: RunningServer, name: str, default: float | None = None) -> float:
    """One sample of the server's /metrics (its full name with labels, e.g. 'nima_step_batch_size_count');
    ``default`` where the server has no such sample yet (a label no request has had), else it must exist."""
    import re

    import httpx

    text = httpx.get(server.url + "/metrics").text
    found = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    if found is None and default is not None:
        return default
    assert found, name
    return float(found.group(1))
