"""Human-readable summaries of a spec and its derived figures (rich tables, no torch)."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from nima.spec import ModelSpec
from nima.spec.derived import Figures


def si(value: float, unit: str = "") -> str:
    """1234567 -> '1.23M' (decimal prefixes, as parameter counts and FLOPs are quoted)."""
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.3g}{prefix}{unit}"
    return f"{value:g}{unit}"


def size(n_bytes: float) -> str:
    """Bytes with binary prefixes: 16384 -> '16 KiB'."""
    for factor, prefix in ((2**40, "TiB"), (2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB")):
        if n_bytes >= factor:
            return f"{n_bytes / factor:.3g} {prefix}"
    return f"{n_bytes:g} B"


def describe(spec: ModelSpec) -> list[tuple[str, str]]:
    """The architecture as (label, value) rows."""
    att, pos = spec.attention, spec.position
    pattern_text = " / ".join(
        p.kind + "".join(f" {k}={v}" for k, v in p.model_dump(exclude={"kind"}).items()) for p in att.patterns
    )
    pos_text = pos.kind + "".join(f" {k}={v}" for k, v in pos.model_dump(exclude={"kind"}).items())
    stacks = spec.stacks
    layers = " + ".join(f"{s.layers} {s.name[:3]}" for s in stacks) if len(stacks) > 1 else str(stacks[0].layers)
    kv = "MHA" if spec.n_kv_heads == att.n_heads else ("MQA" if spec.n_kv_heads == 1 else "GQA")
    return [
        ("name", spec.name),
        ("architecture", spec.architecture),
        ("layers", layers),
        ("d_model", str(spec.d_model)),
        ("heads", f"{att.n_heads} q / {spec.n_kv_heads} kv ({kv}), head dim {spec.head_dim}"),
        ("attention", f"{pattern_text}, {att.backend}{', qk-norm' if att.qk_norm else ''}"),
        ("ffn", f"{spec.ffn.kind}, hidden {spec.ffn.hidden}"),
        ("position", pos_text),
        ("norm", f"{spec.norm.kind}, {spec.norm.placement}-norm, eps {spec.norm.eps:g}"),
        ("vocab / context", f"{spec.vocab_size} / {spec.max_seq_len}"),
        ("embeddings", "tied" if spec.tie_embeddings else "untied"),
    ]


def figure_rows(spec: ModelSpec, fig: Figures) -> list[tuple[str, str]]:
    """The derived figures as (label, value) rows."""
    mem = fig.training_memory_bytes
    batch, seq = spec.training.batch_size, spec.train_seq_len
    return [
        ("parameters", f"{fig.parameters:,} ({si(fig.parameters)})"),
        ("FLOPs / token", f"{si(fig.forward_flops_per_token)} forward, {si(fig.training_flops_per_token)} training"),
        (
            "KV cache / token",
            f"{size(fig.kv_cache_bytes_per_token_fp16)} fp16, {size(fig.kv_cache_bytes_per_token_fp32)} fp32",
        ),
        (
            f"training memory (batch {batch} x {seq})",
            f"{size(mem['total'])}: weights {size(mem['weights'])}, grads {size(mem['gradients'])}, "
            f"AdamW {size(mem['optimizer'])}, activations {size(mem['activations'])}",
        ),
        ("compute-optimal tokens", f"{si(fig.chinchilla_tokens)} (Chinchilla, 20 per parameter)"),
    ]


def summary_table(spec: ModelSpec, fig: Figures) -> Table:
    # user text (the name) is escaped: rich reads "[...]" in cells and titles as markup
    table = Table(title=f"nima · {escape(spec.name)}", show_header=False, title_justify="left")
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column()
    for label, value in describe(spec):
        table.add_row(label, escape(value))
    table.add_section()
    for label, value in figure_rows(spec, fig):
        table.add_row(label, escape(value))
    return table
