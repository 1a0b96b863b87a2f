"""The bundle's README.md: a model card rendered with jinja2 from the spec and the parity report."""

from __future__ import annotations

from jinja2 import Environment, PackageLoader, StrictUndefined

from nima import __version__
from nima.export.verify import ParityReport
from nima.spec import ModelSpec, figures
from nima.summary import describe, si, size


def render_card(
    spec: ModelSpec,
    dtype: str,
    quantize: str | None,
    parity: ParityReport | None,
    has_tokenizer: bool,
    opset: int,
    target: str = "portable",
) -> str:
    env = Environment(
        loader=PackageLoader("nima.export", "templates"),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # Markdown, not HTML
    )
    fig = figures(spec)
    rows = [*describe(spec)]
    rows.append(("parameters", f"{fig.parameters:,} ({si(fig.parameters)})"))
    rows.append(("KV cache / token", f"{size(fig.kv_cache_bytes_per_token_fp32)} fp32"))
    return env.get_template("model_card.md.j2").render(
        spec=spec,
        version=__version__,
        dtype=dtype,
        quantize=quantize,
        rows=rows,
        parity=parity,
        has_tokenizer=has_tokenizer,
        opset=opset,
        target=target,
    )
