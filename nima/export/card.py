"""The bundle's README.md: a model card rendered with jinja2 from the spec, the parity report and the
manifest, with the family's template (its files and how to run them differ; the figures do not)."""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from nima import __version__
from nima.manifest import Manifest
from nima.spec import ModelSpec, figures
from nima.summary import describe, si, size

MARKDOWN_SPECIALS = re.compile(r"([\\`*_\[\]<>#|])")  # what could start markup, HTML, a link or a cell


def markdown_text(text: object) -> str:
    """``text`` as literal Markdown: its special characters escaped, its line breaks spaces (a spec's name
    is the user's text; raw, it could add HTML, links or table cells to the card)."""
    return MARKDOWN_SPECIALS.sub(r"\\\1", " ".join(str(text).split()))


def render_card(
    template: str,
    spec: ModelSpec,
    manifest: Manifest,
    parity: Any,
    has_tokenizer: bool,
    opset: int,
    files: Collection[str] = (),
    notes: Sequence[str] = (),
) -> str:
    """The card from ``template`` (in nima/export/templates); ``parity`` is the check's report, None unverified;
    ``files`` the bundle's other files, ``notes`` why some were left out."""
    env = Environment(
        loader=PackageLoader("nima.export", "templates"),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # Markdown, not HTML
    )
    env.filters["md"] = markdown_text
    fig = figures(spec)
    rows = [*describe(spec)]
    rows.append(("parameters", f"{fig.parameters:,} ({si(fig.parameters)})"))
    rows.append(("KV cache / token", f"{size(fig.kv_cache_bytes_per_token_fp32)} fp32"))
    return env.get_template(template).render(
        spec=spec,
        version=__version__,
        dtype=manifest.dtype,
        quantize=manifest.quantize,
        target=manifest.target,
        ids=manifest.token_ids.as_dict(),
        rows=rows,
        parity=parity,
        has_tokenizer=has_tokenizer,
        opset=opset,
        files=set(files),
        notes=list(notes),
    )
