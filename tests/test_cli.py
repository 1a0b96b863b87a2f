"""The `nima` command line: build, schema, version/help, and how bad input is reported."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import Result
from typer.testing import CliRunner

import nima
from nima import cli
from nima.cli import app
from nima.cli import build as build_command
from nima.spec import ModelSpec, load_spec, parameter_count

ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "name": "cli-tiny",
    "vocab_size": 64,
    "max_seq_len": 32,
    "d_model": 32,
    "n_layers": 2,
    "attention": {"n_heads": 4},
    "ffn": {"kind": "gelu", "hidden": 64},
    "position": {"kind": "learned"},
}

MODEL_FILES = {"nima.json", "model.safetensors"}


def invoke(*args: str) -> Result:
    # catch_exceptions=False: an unhandled exception fails the test instead of becoming exit code 1.
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m nima ARGS` in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "nima", *[str(a) for a in args]],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        timeout=120,
    )


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY, sort_keys=False), encoding="utf-8")
    return path


def snapshot(folder: Path) -> dict[str, tuple[int, bytes]]:
    """Every file under ``folder`` with its mtime and contents."""
    return {
        str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else b"")
        for p in sorted(folder.rglob("*"))
    }


def tensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


# --- build ------------------------------------------------------------------------------------


def test_build_without_out_prints_a_summary_and_writes_nothing(
    tmp_path: Path, tiny: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    before = snapshot(tmp_path)
    result = invoke("build", tiny)
    assert result.exit_code == 0, result.output
    assert "cli-tiny" in result.stdout
    assert "parameters" in result.stdout
    assert f"{parameter_count(load_spec(tiny)):,}" in result.stdout
    assert snapshot(tmp_path) == before


def test_build_example_spec_without_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = invoke("build", ROOT / "specs" / "gpt2-small.yaml")
    assert result.exit_code == 0, result.output
    assert "gpt2-small" in result.stdout
    assert list(tmp_path.iterdir()) == []


def test_build_writes_exactly_the_model_files(tmp_path: Path, tiny: Path) -> None:
    import torch

    from nima.builders import build_model, load_weights

    out = tmp_path / "model"
    result = invoke("build", tiny, "-o", out)
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == MODEL_FILES
    # No temporary folders or files left beside the output.
    assert {p.name for p in tmp_path.iterdir()} == {"tiny.yaml", "model"}

    spec = load_spec(tiny)
    saved = load_spec(out / "nima.json")
    assert saved == spec
    assert json.loads((out / "nima.json").read_text(encoding="utf-8")) == spec.model_dump(mode="json")

    model = load_weights(build_model(spec, seed=12345), out / "model.safetensors")
    state = model.state_dict()
    for name, tensor in tensors(out).items():
        assert torch.equal(state[name], tensor), name


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_build_output_has_the_usual_permissions(tmp_path: Path, tiny: Path) -> None:
    # The folder and files get the modes mkdir/open give under the umask, not owner-only ones.
    old = os.umask(0o022)
    try:
        out = tmp_path / "m"
        assert invoke("build", tiny, "-o", out).exit_code == 0
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o755
    for name in MODEL_FILES:
        assert (out / name).stat().st_mode & 0o777 == 0o644, name


def test_build_into_a_new_nested_folder(tmp_path: Path, tiny: Path) -> None:
    out = tmp_path / "a" / "b" / "model"
    result = invoke("build", tiny, "-o", out)
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == MODEL_FILES
    assert [p.name for p in (tmp_path / "a" / "b").iterdir()] == ["model"]


def test_build_into_an_existing_empty_folder(tmp_path: Path, tiny: Path) -> None:
    out = tmp_path / "empty"
    out.mkdir()
    result = invoke("build", tiny, "-o", out)
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == MODEL_FILES


def test_seed_makes_weights_reproducible(tmp_path: Path, tiny: Path) -> None:
    import torch

    runs = {
        "a": ["--seed", "1"],
        "b": ["--seed", "1"],
        "c": ["--seed", "2"],
        "default": [],
        "training_seed": ["--seed", str(ModelSpec.model_fields["training"].default_factory().seed)],
    }
    for name, extra in runs.items():
        result = invoke("build", tiny, "-o", tmp_path / name, *extra)
        assert result.exit_code == 0, result.output
    a, b, c = tensors(tmp_path / "a"), tensors(tmp_path / "b"), tensors(tmp_path / "c")
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(a[k].numpy().tobytes() == b[k].numpy().tobytes() for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)
    # Without --seed the weights come from training.seed.
    default, training_seed = tensors(tmp_path / "default"), tensors(tmp_path / "training_seed")
    assert all(torch.equal(default[k], training_seed[k]) for k in default)


def test_json_output(tiny: Path) -> None:
    result = invoke("build", tiny, "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    spec = load_spec(tiny)
    assert payload["spec"] == spec.model_dump(mode="json")
    assert payload["figures"]["parameters"] == parameter_count(spec)
    assert payload["output"] is None


def test_json_output_with_out(tmp_path: Path, tiny: Path) -> None:
    out = tmp_path / "m"
    result = invoke("build", tiny, "--json", "-o", out)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["output"] == str(out)
    assert {p.name for p in out.iterdir()} == MODEL_FILES


def test_set_takes_effect(tmp_path: Path, tiny: Path) -> None:
    result = invoke("build", tiny, "--json", "--set", "attention.n_heads=8", "-s", "n_layers=3")
    assert result.exit_code == 0, result.output
    spec = json.loads(result.stdout)["spec"]
    assert spec["attention"]["n_heads"] == 8
    assert spec["attention"]["n_kv_heads"] == 8
    assert spec["n_layers"] == 3

    out = tmp_path / "m"
    assert invoke("build", tiny, "--set", "attention.n_heads=8", "-o", out).exit_code == 0
    assert load_spec(out / "nima.json").attention.n_heads == 8


def test_existing_model_is_not_overwritten_without_force(tmp_path: Path, tiny: Path) -> None:
    out = tmp_path / "m"
    assert invoke("build", tiny, "-o", out, "--seed", "1").exit_code == 0
    before = snapshot(tmp_path)

    result = invoke("build", tiny, "-o", out, "--seed", "2")
    assert result.exit_code == 2
    assert str(out) in result.stderr
    assert "--force" in result.stderr
    assert snapshot(tmp_path) == before

    result = invoke("build", tiny, "-o", out, "--seed", "2", "--force")
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == MODEL_FILES
    assert {p.name for p in tmp_path.iterdir()} == {"tiny.yaml", "m"}
    assert (out / "model.safetensors").read_bytes() != before["m/model.safetensors"][1]


def test_folder_holding_only_a_spec_is_not_overwritten(tmp_path: Path, tiny: Path) -> None:
    out = tmp_path / "m"
    out.mkdir()
    (out / "nima.json").write_text("{}", encoding="utf-8")
    result = invoke("build", tiny, "-o", out)
    assert result.exit_code == 2
    assert "nima.json" in result.stderr
    assert (out / "nima.json").read_text(encoding="utf-8") == "{}"
    assert not (out / "model.safetensors").exists()


def test_out_is_a_regular_file(tmp_path: Path, tiny: Path) -> None:
    target = tmp_path / "taken"
    target.write_text("keep me", encoding="utf-8")
    result = invoke("build", tiny, "-o", target)
    assert result.exit_code == 2
    assert str(target) in result.stderr
    assert target.read_text(encoding="utf-8") == "keep me"
    assert {p.name for p in tmp_path.iterdir()} == {"tiny.yaml", "taken"}


def test_unwritable_output_parent(tmp_path: Path, tiny: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("running with privileges that ignore folder permissions (root)")
        out = locked / "m"
        result = invoke("build", tiny, "-o", out)
        assert result.exit_code == 2
        assert "error:" in result.stderr
        assert str(out) in result.stderr
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


def test_unknown_flag_exits_2(tiny: Path) -> None:
    result = invoke("build", tiny, "--no-such-flag")
    assert result.exit_code == 2
    assert "--no-such-flag" in result.output


def test_unknown_command_exits_2() -> None:
    assert invoke("frobnicate").exit_code == 2


# --- bad input: one line per problem, exit 2, nothing written ---------------------------------


def bad_input_cases(tmp_path: Path, tiny: Path) -> dict[str, tuple[list[str], list[str]]]:
    """name -> (extra build args, expected stderr line prefixes)."""
    files = {
        "syntax.yaml": "name: [unclosed\n",
        "unknown.yaml": yaml.safe_dump({**TINY, "n_layer": 3}),
        "type.yaml": yaml.safe_dump({**TINY, "d_model": "big", "n_layers": "two"}),
        "rule.yaml": yaml.safe_dump({**TINY, "attention": {"n_heads": 5}, "training": {"seq_len": 64}}),
    }
    for name, text in files.items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    p = {name: str(tmp_path / name) for name in files}
    missing = str(tmp_path / "missing.yaml")
    return {
        "missing file": ([missing], [f"error: {missing}: file not found"]),
        "YAML syntax error": ([p["syntax.yaml"]], [f"error: {p['syntax.yaml']}:2:1: YAML syntax error"]),
        "unknown field": ([p["unknown.yaml"]], [f"error: {p['unknown.yaml']}: n_layer: unknown field"]),
        "wrong type": (
            [p["type.yaml"]],
            [f"error: {p['type.yaml']}: d_model: ", f"error: {p['type.yaml']}: n_layers: "],
        ),
        "broken rule": (
            [p["rule.yaml"]],
            [f"error: {p['rule.yaml']}: attention.n_heads: ", f"error: {p['rule.yaml']}: training.seq_len: "],
        ),
        "bad --set": ([str(tiny), "--set", "attention.n_heads"], ["error: --set: attention.n_heads: expected"]),
        "--set into a value": ([str(tiny), "--set", "d_model.x=1"], ["error: --set: d_model.x: d_model is a value"]),
        "--set to a bad value": ([str(tiny), "--set", "n_layers=-1"], [f"error: {tiny}: n_layers: "]),
    }


CASE_NAMES = [
    "missing file",
    "YAML syntax error",
    "unknown field",
    "wrong type",
    "broken rule",
    "bad --set",
    "--set into a value",
    "--set to a bad value",
]


def check_bad_input(code: int, stdout: str, stderr: str, expected: list[str], tmp_path: Path, out: Path) -> None:
    assert code == 2, (stdout, stderr)
    lines = stderr.strip().splitlines()
    assert len(lines) == len(expected), lines
    assert all(line.startswith("error: ") for line in lines), lines
    for prefix in expected:
        assert any(line.startswith(prefix) for line in lines), (prefix, lines)
    assert "Traceback" not in stdout + stderr
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary files left behind"


@pytest.mark.parametrize("case", CASE_NAMES)
def test_bad_input_in_process(tmp_path: Path, tiny: Path, case: str) -> None:
    args, expected = bad_input_cases(tmp_path, tiny)[case]
    out = tmp_path / "out"
    result = invoke("build", *args, "-o", str(out))
    check_bad_input(result.exit_code, result.stdout, result.stderr, expected, tmp_path, out)


@pytest.mark.parametrize("case", ["missing file", "wrong type", "bad --set"])
def test_bad_input_in_a_real_process(tmp_path: Path, tiny: Path, case: str) -> None:
    args, expected = bad_input_cases(tmp_path, tiny)[case]
    out = tmp_path / "out"
    proc = run_cli("build", *args, "-o", str(out))
    check_bad_input(proc.returncode, proc.stdout, proc.stderr, expected, tmp_path, out)


def test_cases_cover_every_bad_input(tmp_path: Path, tiny: Path) -> None:
    assert sorted(bad_input_cases(tmp_path, tiny)) == sorted(CASE_NAMES)


# --- schema -----------------------------------------------------------------------------------


def test_schema_lists_every_field() -> None:
    result = invoke("schema")
    assert result.exit_code == 0, result.output
    schema = json.loads(result.stdout)
    assert set(ModelSpec.model_fields) | {"extends"} <= set(schema["properties"])
    assert schema["then"]["required"]  # required fields apply when there is no extends
    assert "vocab_size" in schema["then"]["required"]


def test_committed_schema_is_current() -> None:
    result = invoke("schema")
    committed = (ROOT / "nima.schema.json").read_text(encoding="utf-8")
    assert json.loads(committed) == json.loads(result.stdout), "run: nima schema -o nima.schema.json"


def test_schema_to_file(tmp_path: Path) -> None:
    out = tmp_path / "schema.json"
    result = invoke("schema", "-o", out)
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    assert json.loads(out.read_text(encoding="utf-8")) == json.loads(invoke("schema").stdout)


def test_schema_to_unwritable_path(tmp_path: Path) -> None:
    out = tmp_path / "no" / "such" / "folder" / "schema.json"
    result = invoke("schema", "-o", out)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {out}: cannot write")


# --- help and version -------------------------------------------------------------------------


def test_help_lists_commands() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    assert "build" in result.stdout
    assert "schema" in result.stdout


def test_version_in_process() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"nima {nima.__version__}"


def test_version_console_script() -> None:
    script = Path(sys.executable).parent / "nima"
    if not script.exists():
        found = shutil.which("nima")
        if found is None:
            pytest.skip("the nima console script is not installed")
        script = Path(found)
    proc = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"nima {nima.__version__}"


def test_python_m_nima_help() -> None:
    proc = run_cli("--help")
    assert proc.returncode == 0, proc.stderr
    assert "build" in proc.stdout
    assert "schema" in proc.stdout
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["train", "--no-such-flag"], "error: No such option: --no-such-flag"),
        (["generate"], "error: Missing argument 'BUNDLE'"),
        (["generate", "x", "--top-p", "abc"], "error: Invalid value for '--top-p'"),
        (["frobnicate"], "error: No such command 'frobnicate'"),
    ],
)
def test_usage_errors_are_one_line_in_a_real_process(args: list[str], expected: str) -> None:
    """Click frames a usage error in a box of five or six lines; the console entry point prints it as
    one `error:` line like every other bad input, naming the command's help."""
    proc = run_cli(*args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(expected), lines
    assert lines[0].endswith(" --help')"), lines  # `python -m nima` names itself so, the script `nima`
    assert proc.stdout == ""


@pytest.mark.parametrize("command", [[], ["build"], ["export"], ["generate"]])
def test_dash_h_is_help(command: list[str]) -> None:
    result = invoke(*command, "-h")
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.stdout and "--help" in result.stdout


@pytest.mark.parametrize("command", ["build", "train", "export", "generate", "import", "info", "schema"])
def test_help_shows_every_option_name_whole_at_80_columns(command: str) -> None:
    """Plain help (no boxes): in an 80-column terminal or a log, every option's name is there whole,
    not cut to "--num-return-seque…" as the boxed layout did."""
    import typer.main

    proc = subprocess.run(
        [sys.executable, "-m", "nima", command, "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        env={**os.environ, "COLUMNS": "80"},
    )
    assert proc.returncode == 0, proc.stderr
    names = [opt for param in typer.main.get_command(app).commands[command].params for opt in param.opts]
    assert any(name.startswith("--") for name in names)
    for name in names:
        if name.startswith("-"):
            assert re.search(rf"(^|[\s,/]){re.escape(name)}([\s,=]|$)", proc.stdout, re.M), name
    assert "…" not in proc.stdout
    assert max(len(line) for line in proc.stdout.splitlines()) <= 80


def test_shell_completion_is_offered() -> None:
    result = invoke("--help")
    assert "--install-completion" in result.stdout and "--show-completion" in result.stdout


def test_set_with_a_space_for_the_equals_sign_shows_the_one_word_form(tiny: Path) -> None:
    proc = run_cli("build", str(tiny), "--set", "n_layers", "4")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: Got unexpected extra argument(s) (4) (--set takes KEY=VALUE as one word: --set n_layers=4)"
    ]


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--dtype", "fp64"], "error: --dtype fp64: supported are fp32 and fp16"),
        (["--target", "tensorrt"], "error: --target tensorrt: supported are portable, ort"),
        (["--quantize", "int3"], "error: --quantize int3: supported are int8, int4"),
        (["--quantize", "int8", "--dtype", "fp16"], "error: --quantize int8 starts from the fp32 graph; drop --dtype"),
    ],
)
def test_export_flags_are_checked_before_torch_is_imported(
    tmp_path: Path, tiny: Path, flags: list[str], expected: str
) -> None:
    """With torch unimportable the bad flag is still the error: nothing heavy loads before the check."""
    code = (
        "import sys\nsys.modules['torch'] = None\nfrom nima.cli import main\n"
        f"sys.argv = ['nima', 'export', {str(tiny)!r}, '-o', {str(tmp_path / 'b')!r}, *{flags!r}]\nmain()"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[0].startswith(expected), proc.stderr
    assert not (tmp_path / "b").exists()


def test_no_arguments_prints_the_help_in_a_real_process() -> None:
    proc = run_cli()
    assert proc.returncode == 2, proc.stderr
    assert "Usage:" in proc.stdout and "build" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_a_model_too_large_for_memory_is_one_line_exit_2(tmp_path: Path) -> None:
    """4 TB of weights: refused from the spec's figures before anything is allocated (it was torch's
    allocation error, turned into one line by the console entry point, after seconds of trying)."""
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "nima", "build", str(ROOT / "specs/shakespeare-char.yaml"), "-o", str(out)]
        + ["--set", "vocab_size=16000000", "--set", "d_model=65536", "--set", "attention.n_heads=64"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: ") and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "GiB are available" in done.stderr
    assert not out.exists()


def test_ctrl_c_in_a_command_exits_130_saying_so(
    tiny: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def interrupted(*_: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(build_command, "load_or_fail", interrupted)
    monkeypatch.setattr(sys, "argv", ["nima", "build", str(tiny)])
    with pytest.raises(SystemExit) as done:
        cli.main()
    assert done.value.code == 130
    assert capsys.readouterr().err.strip() == "interrupted"


@pytest.mark.parametrize(
    "args",
    [
        ["build", "{spec}", "-o", ""],
        ["train", "{spec}", "--data", "corpus.txt", "-o", ""],
        ["train", "{spec}", "--data", "", "-o", "run"],
        ["export", "--onnx", "{spec}", "-o", " "],
        ["schema", "-o", ""],
    ],
)
def test_an_empty_path_flag_is_refused(
    tmp_path: Path, tiny: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    """An empty `-o` (an unset variable in `-o "$OUT"`) would be the current folder: refused, nothing written."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "corpus.txt").write_text("some text\n", encoding="utf-8")
    monkeypatch.chdir(work)
    result = invoke(*[str(tiny) if a == "{spec}" else a for a in args])
    assert result.exit_code == 2, result.output
    assert "an empty path" in result.output
    assert sorted(p.name for p in work.iterdir()) == ["corpus.txt"]


def test_an_empty_out_is_one_line_in_a_real_process(tiny: Path) -> None:
    proc = run_cli("build", tiny, "-o", "")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: Invalid value for '--out' / '-o': an empty path; name a file or folder (. for the current folder)"
        " (see 'python -m nima build --help')"
    ]


def test_import_dtype_is_checked_before_torch_is_imported(tmp_path: Path) -> None:
    from nima.cli.import_ import WEIGHT_DTYPES
    from nima.interop.hf.importer import DTYPES

    assert tuple(DTYPES) == WEIGHT_DTYPES  # the light copy names what the importer takes
    code = (
        "import sys\nsys.modules['torch'] = None\nfrom nima.cli import main\n"
        f"sys.argv = ['nima', 'import', {str(tmp_path)!r}, '-o', {str(tmp_path / 'out')!r}, '--dtype', 'fp64']\nmain()"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: --dtype fp64: supported are fp32, bf16, fp16"
