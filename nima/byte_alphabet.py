"""GPT-2's byte alphabet: the 256 printable characters byte-level tokenizers write bytes as.

Shared by training (`nima.train.tokenizer` builds byte-level BPE vocabularies on it) and the runtime
(`nima.runtime.token_bytes` reads a token's bytes back); standard library only, so either may import
it without the other's dependencies.
"""

from __future__ import annotations


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map, the alphabet of byte-level tokenizers."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars, strict=True)}
