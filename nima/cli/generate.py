"""`nima generate BUNDLE`: generation from the command line, streaming to the terminal.

Registered on the `nima` app by `nima.cli.app`. Every option defaults to the bundle spec's
``generation`` section; a flag overrides it. Only the runtime (no torch) is imported.
"""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

Opt = typer.Option


def generate(
    bundle: Annotated[
        Path, typer.Argument(metavar="BUNDLE", help="A bundle folder written by nima export.", show_default=False)
    ],
    prompt: Annotated[list[str] | None, Opt("--prompt", "-p", help="Prompt text (repeatable: a batch).")] = None,
    prompt_ids: Annotated[
        list[str] | None, Opt("--prompt-ids", help="Prompt as token ids, e.g. 1,2,3 (repeatable).")
    ] = None,
    prompts_file: Annotated[
        Path | None, Opt("--prompts-file", help="One prompt per line: a batch (- reads standard input).")
    ] = None,
    source: Annotated[
        list[str] | None, Opt("--source", help="Encoder-decoder bundles: source text (repeatable); same as --prompt.")
    ] = None,
    as_json: Annotated[bool, Opt("--json", help="Print one JSON document instead of text.")] = False,
    max_new_tokens: Annotated[int | None, Opt(help="Tokens to generate.")] = None,
    min_new_tokens: Annotated[int | None, Opt(help="Suppress EOS until this many tokens.")] = None,
    do_sample: Annotated[bool | None, Opt("--sample/--greedy", help="Sample, or decode greedily.")] = None,
    temperature: Annotated[float | None, Opt(help="Softmax temperature (0: greedy).")] = None,
    top_k: Annotated[int | None, Opt(help="Keep the k most likely tokens (0: off).")] = None,
    top_p: Annotated[float | None, Opt(help="Nucleus mass in (0, 1] (1: off).")] = None,
    min_p: Annotated[float | None, Opt(help="Drop tokens below min_p x the top probability.")] = None,
    num_beams: Annotated[int | None, Opt(help="Beam width (1: no beam search).")] = None,
    length_penalty: Annotated[float | None, Opt(help="Beam score = logprob / length**penalty.")] = None,
    early_stopping: Annotated[
        str | None, Opt("--early-stopping", help="Beam stop rule, as transformers': true | false | never.")
    ] = None,
    num_return_sequences: Annotated[int | None, Opt(help="Sequences per prompt.")] = None,
    repetition_penalty: Annotated[float | None, Opt(help="CTRL repetition penalty (1: off).")] = None,
    no_repeat_ngram_size: Annotated[int | None, Opt(help="Never repeat an n-gram of this size.")] = None,
    presence_penalty: Annotated[float | None, Opt(help="OpenAI's presence penalty, -2..2 (0: off).")] = None,
    frequency_penalty: Annotated[float | None, Opt(help="OpenAI's frequency penalty, -2..2 (0: off).")] = None,
    eos_id: Annotated[list[int] | None, Opt("--eos-id", help="Token id that ends a sequence (repeatable).")] = None,
    stop: Annotated[list[str] | None, Opt("--stop", help="Text that ends a sequence (repeatable).")] = None,
    seed: Annotated[int | None, Opt(help="Sampling seed: the same seed gives the same output.")] = None,
    json_schema: Annotated[
        str | None,
        Opt(
            "--json-schema",
            help="Structured output: a JSON schema the output follows (a .json file, or the JSON itself; "
            '\'{"type": "object"}\' for any object). Needs llguidance.',
        ),
    ] = None,
    prompt_lookup: Annotated[
        int | None,
        Opt(
            "--prompt-lookup",
            help="Prompt-lookup decoding: draft up to N tokens from the text itself, checked in one step (greedy).",
        ),
    ] = None,
    draft: Annotated[
        Path | None,
        Opt(
            "--draft",
            help="Speculative decoding: a small decoder bundle of the same tokenizer proposes tokens, checked by "
            "this one in one step (greedy or sampled, one sequence at a time).",
        ),
    ] = None,
    draft_tokens: Annotated[
        int | None, Opt("--draft-tokens", help="With --draft: tokens the draft proposes per step, at most (1-64).")
    ] = None,
    slide_context: Annotated[
        bool | None,
        Opt(
            "--slide-context/--stop-at-context",
            help="At max_seq_len, go on from the last max_seq_len tokens (nanoGPT's sampler), or stop there.",
        ),
    ] = None,
    provider: Annotated[str, Opt(help="ONNX Runtime provider: cpu | cuda.")] = "cpu",
    threads: Annotated[int | None, Opt(help="CPU threads for ONNX Runtime (default: all cores).")] = None,
    spin: Annotated[
        bool, Opt("--spin/--no-spin", help="ORT worker threads busy-wait (fast on an idle machine; off when shared).")
    ] = True,
    huge_pages: Annotated[
        bool | None,
        Opt(
            "--huge-pages/--no-huge-pages",
            help="Put the weights on 2 MB pages (Linux): faster decoding, slower loading. Default: up to 128 MB.",
        ),
    ] = None,
) -> None:
    """Generate text from BUNDLE with ONNX Runtime (no torch needed)."""
    from nima.cli.common import fail, require_runtime

    require_runtime("generate")
    import onnxruntime as ort

    from nima.runtime import GenerateError, Generator

    # ORT's process-wide log prints its own multi-line errors (a CUDA provider that cannot start,
    # say) before the session raises or falls back; Nima reports each failure itself, in one line.
    ort.set_default_logger_severity(4)
    options: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "min_new_tokens": min_new_tokens,
        "do_sample": do_sample,
        "temperature": temperature,
        "top_k": top_k,
        "top_p": top_p,
        "min_p": min_p,
        "num_beams": num_beams,
        "length_penalty": length_penalty,
        "early_stopping": _early_stopping(early_stopping),
        "num_return_sequences": num_return_sequences,
        "repetition_penalty": repetition_penalty,
        "no_repeat_ngram_size": no_repeat_ngram_size,
        "presence_penalty": presence_penalty,
        "frequency_penalty": frequency_penalty,
        "eos_token_ids": eos_id or None,
        "stop_strings": stop or None,
        "seed": seed,
        "slide_context": slide_context,
        "prompt_lookup_num_tokens": prompt_lookup,
        "num_assistant_tokens": draft_tokens,
        "json_schema": None if json_schema is None else _schema(json_schema),
    }
    if draft_tokens is not None and draft is None:
        fail("--draft-tokens: only with --draft (the bundle that proposes the tokens)")
    try:
        if draft is not None and not draft.is_dir():
            raise GenerateError(f"--draft {draft}: {'is a file, not' if draft.exists() else 'no such'} bundle folder")
        generator = Generator(bundle, provider=provider, threads=threads, spin=spin, huge_pages=huge_pages, draft=draft)
        if source and not generator.is_seq2seq:
            raise GenerateError("--source is for encoder-decoder bundles; this one is decoder-only: use --prompt")
        prompts = _collect_prompts([*(source or []), *(prompt or [])], prompt_ids, prompts_file)
        opts = generator.options(**options)
        start = time.perf_counter()
        streamable = opts.num_beams == 1 and opts.num_return_sequences == 1 and generator.tokenizer is not None
        if len(prompts) == 1 and not as_json and streamable:
            _stream(generator, prompts[0], options, start)
            return
        results = generator.generate(prompts, **options)
    except GenerateError as err:
        fail(_as_flag(str(err)))
    elapsed = time.perf_counter() - start
    if as_json:
        typer.echo(json.dumps([_as_dict(p, r) for p, r in zip(prompts, results, strict=True)], indent=2))
        return
    for i, result in enumerate(results):
        for j, completion in enumerate(result.completions):
            if len(results) > 1 or len(result.completions) > 1:
                typer.secho(f"--- prompt {i}, sequence {j} ({completion.finish_reason})", fg="cyan", err=True)
            shown = completion.text if completion.text is not None else ",".join(map(str, completion.token_ids))
            typer.echo(shown)
    tokens = sum(len(c.token_ids) for r in results for c in r.completions)
    typer.secho(f"{tokens} tokens in {elapsed:.2f} s", dim=True, err=True)
    cut = [i for i, r in enumerate(results) if any(c.finish_reason == "context" for c in r.completions)]
    if cut:
        _context_warning(generator, options, "" if len(results) == 1 else f"prompt {', '.join(map(str, cut))}: ")


# generation options whose flag is not the option's name in kebab case
FLAGS = {
    "do_sample": "--sample/--greedy",
    "eos_token_ids": "--eos-id",
    "stop_strings": "--stop",
    "slide_context": "--slide-context",
    "prompt_lookup_num_tokens": "--prompt-lookup",
    "num_assistant_tokens": "--draft-tokens",
}


def _as_flag(message: str) -> str:
    """A runtime error about options ("option top_p: ...", "... exceeds num_beams 2") with each named by the
    flag that sets it ("--top-p: ...", "... exceeds --num-beams 2")."""
    from nima.spec.generation import option_annotations

    if not message.startswith("option "):  # other errors may hold paths, whose words are not options
        return message
    message = message[len("option ") :]
    names = "|".join(sorted(option_annotations(), key=len, reverse=True))
    return re.sub(rf"\b({names})\b", lambda found: FLAGS.get(found[1], "--" + found[1].replace("_", "-")), message)


def _schema(given: str) -> dict[str, Any]:
    """``--json-schema``'s value: a file holding a JSON schema, or the schema's JSON itself."""
    from nima.cli.common import fail
    from nima.runtime.grammar import MAX_SCHEMA_CHARS

    path = Path(given)
    looks_inline = given.lstrip().startswith(("{", "["))
    if not looks_inline:
        if not path.is_file():
            fail(f"--json-schema {given}: no such file (give a .json file, or the schema's JSON itself)")
        if path.stat().st_size > 16 * MAX_SCHEMA_CHARS:  # a schema is taken up to 64 KiB as compact JSON
            fail(f"--json-schema {path}: {path.stat().st_size:,} bytes; a schema is at most {MAX_SCHEMA_CHARS:,}")
        try:
            given = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            fail(f"--json-schema {path}: cannot read it ({err.__class__.__name__})")
    try:
        schema = json.loads(given)
    except RecursionError:
        fail("--json-schema: nested too deeply to read")
    except ValueError as err:
        fail(f"--json-schema: not valid JSON ({err})")
    if not isinstance(schema, dict):
        fail(f"--json-schema: a schema is a JSON object, not {type(schema).__name__}")
    return schema


def _early_stopping(value: str | None) -> bool | str | None:
    """``--early-stopping true|false|never`` as the option takes it; anything else is left for the
    options' check to refuse by name."""
    if value is None:
        return None
    return {"true": True, "false": False}.get(value.strip().lower(), value)


def _collect_prompts(texts: list[str] | None, ids: list[str] | None, path: Path | None) -> list[str | list[int]]:
    from nima.runtime import GenerateError

    prompts: list[str | list[int]] = list(texts or [])
    for item in ids or []:
        try:
            prompts.append([int(part) for part in item.replace(" ", "").split(",") if part])
        except ValueError:
            raise GenerateError(f"--prompt-ids {item!r}: expected comma-separated integers like 1,2,3") from None
    if path is not None:
        try:
            lines = _read_prompts(path)
        except (OSError, UnicodeDecodeError) as err:
            raise GenerateError(f"{path}: cannot read prompts ({getattr(err, 'strerror', None) or err})") from None
        prompts += [line for line in lines if line.strip()]
    if not prompts:
        raise GenerateError("no prompt: pass --prompt, --prompt-ids or --prompts-file")
    return prompts


MAX_PROMPTS_BYTES = 256 << 20  # a prompts file past this is no batch for one process


def _read_prompts(path: Path) -> list[str]:
    """The lines of ``path``, or of standard input for ``-``; a regular file or stdin only (a FIFO or a
    device would block or never end)."""
    if str(path) == "-":
        return sys.stdin.read().splitlines()
    if not path.is_file():
        from nima.runtime import GenerateError

        what = "no such file" if not path.exists() else "not a regular file"
        raise GenerateError(f"{path}: cannot read prompts ({what})")
    if path.stat().st_size > MAX_PROMPTS_BYTES:
        from nima.runtime import GenerateError

        raise GenerateError(f"{path}: {path.stat().st_size:,} bytes of prompts; at most {MAX_PROMPTS_BYTES:,}")
    return path.read_text(encoding="utf-8").splitlines()


def _stream(generator: Any, prompt: str | list[int], options: dict[str, Any], start: float) -> None:
    """Print the prompt (decoder-only), then the continuation as it arrives."""
    if isinstance(prompt, str) and not generator.is_seq2seq:
        generator.check_prompt(prompt)  # a prompt refused (tokenizer, length) fails before anything is printed
        typer.secho(prompt, nl=False, bold=True)
    first: float | None = None
    pieces = generator.stream(prompt, **options)
    while True:
        try:
            piece = next(pieces)
        except StopIteration as done:
            reason = done.value
            break
        first = first or time.perf_counter()
        typer.echo(piece, nl=False)
    typer.echo("")
    elapsed = time.perf_counter() - start
    ttft = f", first text after {first - start:.2f} s" if first else ""
    typer.secho(f"done in {elapsed:.2f} s{ttft}", dim=True, err=True)
    if reason == "context":
        _context_warning(generator, options)


def _context_warning(generator: Any, options: dict[str, Any], which: str = "") -> None:
    """Say that generation stopped at the model's context, not at --max-new-tokens (finish reason "context")."""
    context = generator.spec.max_seq_len
    asked = generator.options(**options).max_new_tokens
    # an encoder-decoder's output has the decoder's positions to itself, its start token among them
    holds = "its start token and output" if generator.is_seq2seq else "prompt and output"
    typer.secho(
        f"warning: {which}stopped at the model's context of {context} tokens ({holds}) before --max-new-tokens {asked}",
        fg="yellow",
        err=True,
    )


def _as_dict(prompt: str | list[int], result: Any) -> dict[str, Any]:
    return {
        "prompt": prompt if isinstance(prompt, str) else None,
        "prompt_ids": result.prompt_ids,
        "completions": [
            {"text": c.text, "token_ids": c.token_ids, "finish_reason": c.finish_reason, "score": c.score}
            for c in result.completions
        ],
    }
