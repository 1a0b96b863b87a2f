"""`nima serve` as users run it: a real process, its log line per request, and its refusals before listening."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
from typer.testing import CliRunner

from nima.cli import app

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_serve_runs_logs_each_request_and_stops_on_ctrl_c(text_bundle: Path) -> None:
    port = free_port()
    env = {**os.environ, "NIMA_API_KEY": "k"}
    cmd = [sys.executable, "-m", "nima", "serve", str(text_bundle), "--port", str(port), "--model-name", "shakes"]
    cmd += ["--allow-origin", "http://localhost:3000"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        api = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="k", max_retries=0)
        got = api.completions.create(model="shakes", prompt="To be", max_tokens=5, temperature=0)
        assert got.usage is not None and got.usage.completion_tokens == 5
        # a browser page of the allowed origin: its preflight is answered without the key, then its call
        page = {"Origin": "http://localhost:3000"}
        asks = {"Access-Control-Request-Method": "POST"}
        asks["Access-Control-Request-Headers"] = "authorization,content-type,x-stainless-os,x-stainless-lang"
        preflight = httpx.options(f"http://127.0.0.1:{port}/v1/completions", headers={**page, **asks})
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == "http://localhost:3000"
        keyed = {**page, "Authorization": "Bearer k"}
        listed = httpx.get(f"http://127.0.0.1:{port}/v1/models", headers=keyed)
        assert listed.headers["access-control-allow-origin"] == "http://localhost:3000"
        other = httpx.get(f"http://127.0.0.1:{port}/v1/models", headers={**keyed, "Origin": "http://evil.example"})
        assert "access-control-allow-origin" not in other.headers
        assert httpx.get(f"http://127.0.0.1:{port}/v1/models", headers=page).status_code == 401  # the key still holds
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert f"serving shakes (decoder) at http://127.0.0.1:{port}/v1" in err
    # one line per request: its id, tokens in and out, time to first token, total time
    assert re.search(r"request cmpl-\w+ status=200 in=\d+ out=5 ttft=[\d.]+ms total=[\d.]+ms", err), err
    assert "Traceback" not in err


def test_serve_refuses_a_missing_bundle_in_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["serve", str(tmp_path / "nothing")])
    assert result.exit_code == 2
    assert "no such bundle folder" in result.output and "Traceback" not in result.output


def test_serve_refuses_a_bundle_whose_spec_breaks_the_schema(tmp_path: Path, text_bundle: Path) -> None:
    """Decoding reads a few figures of nima.json; the server reads the whole spec, so it is validated before
    the port is taken: an unknown field is named in one line."""
    bundle = tmp_path / "bundle"
    shutil.copytree(text_bundle, bundle)
    spec = json.loads((bundle / "nima.json").read_text())
    (bundle / "nima.json").write_text(json.dumps({**spec, "biass": True}))
    result = CliRunner().invoke(app, ["serve", str(bundle), "--port", str(free_port())])
    assert result.exit_code == 2, result.output
    assert "nima.json: biass: unknown field" in result.output and "Traceback" not in result.output


def test_serve_refuses_a_port_in_use(text_bundle: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(app, ["serve", str(text_bundle), "--port", str(port)])
    assert result.exit_code == 2
    assert f"--port {port}: already in use" in result.output


def test_serve_refuses_bad_flags(text_bundle: Path) -> None:
    for flags, words in (
        (["--max-batch", "0"], "--max-batch"),
        (["--port", "70000"], "--port"),
        (["--provider", "tpu"], "--provider tpu"),
        (["--api-key", " "], "--api-key is empty"),
        (["--allow-origin", "localhost:3000"], "--allow-origin localhost:3000"),
    ):
        result = CliRunner().invoke(app, ["serve", str(text_bundle), *flags])
        assert result.exit_code == 2, (flags, result.output)
        assert words in result.output
