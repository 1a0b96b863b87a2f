"""What `Generator.generate` returns: a `Generation` per prompt, holding its `Completion` s."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Completion:
    """One generated sequence: its new tokens, their text (None without a tokenizer), why it ended
    ("eos", "stop", "length" for max_new_tokens, or "context" when the model's context ran out first)
    and, for beam search, its length-normalised score."""

    token_ids: list[int]
    text: str | None
    finish_reason: str
    score: float | None = None


@dataclass(frozen=True)
class Generation:
    """Everything generated for one prompt: ``num_return_sequences`` completions, best first."""

    prompt_ids: list[int]
    completions: list[Completion]

    @property
    def text(self) -> str | None:
        return self.completions[0].text

    @property
    def token_ids(self) -> list[int]:
        return self.completions[0].token_ids
