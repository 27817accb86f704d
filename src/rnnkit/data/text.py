"""The vocabulary, saved with its tokenizer so a trained model reads new text exactly as in training."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rnnkit.config import DEFAULT_TOKEN_PATTERN
from rnnkit.data.tokenizers import RegexTokenizer, TextTokenizer, tokenizer_from_dict
from rnnkit.errors import DataError
from rnnkit.io import atomic_write_json

__all__ = ["DEFAULT_TOKEN_PATTERN", "PAD", "PAD_ID", "UNK", "UNK_ID", "Tokenizer", "Vocabulary"]

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1
_FORMAT = "rnnkit-vocabulary/1"


Tokenizer = RegexTokenizer
"""The default tokenizer, under the name it had before there were others."""


class Vocabulary:
    """Token <-> id map with ``<pad>`` = 0 and ``<unk>`` = 1, carrying the tokenizer that made it."""

    pad_id = PAD_ID
    unk_id = UNK_ID

    def __init__(self, itos: Sequence[str], tokenizer: TextTokenizer | None = None) -> None:
        if list(itos[:2]) != [PAD, UNK]:
            raise DataError(f"a vocabulary must start with {PAD!r}, {UNK!r}; got {list(itos[:2])}")
        self.itos: list[str] = list(itos)
        self.stoi: dict[str, int] = {token: index for index, token in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise DataError("a vocabulary must not contain the same token twice")
        self.tokenizer: TextTokenizer = tokenizer or RegexTokenizer()

    @classmethod
    def build(
        cls,
        token_lists: Iterable[Sequence[str]],
        *,
        min_freq: int = 2,
        max_size: int | None = 50000,
        tokenizer: TextTokenizer | None = None,
    ) -> Vocabulary:
        """Keep tokens seen at least ``min_freq`` times, most frequent first (ties alphabetical).

        ``max_size`` counts the two specials, so the embedding table has exactly that many rows.
        """
        counts: Counter[str] = Counter()
        for tokens in token_lists:
            counts.update(tokens)
        return cls.from_counts(counts, min_freq=min_freq, max_size=max_size, tokenizer=tokenizer)

    @classmethod
    def from_counts(
        cls,
        counts: Mapping[str, int],
        *,
        min_freq: int = 2,
        max_size: int | None = 50000,
        tokenizer: TextTokenizer | None = None,
    ) -> Vocabulary:
        """:meth:`build` from token counts already made (a corpus counted without token lists)."""
        kept = sorted(
            (t for t, c in counts.items() if c >= min_freq and t not in (PAD, UNK)),
            key=lambda t: (-counts[t], t),
        )
        if max_size is not None:
            kept = kept[: max(0, max_size - 2)]
        return cls([PAD, UNK, *kept], tokenizer)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and (self.itos, self.tokenizer) == (other.itos, other.tokenizer)

    __hash__ = None  # type: ignore[assignment]  # mutable container semantics

    def encode_tokens(self, tokens: Sequence[str]) -> np.ndarray:
        """Token ids (int32); unknown tokens become ``<unk>``, and so does the literal text ``<pad>``
        (``or``: id 0), so that padding only ever means padding."""
        get = self.stoi.get
        return np.fromiter((get(t, UNK_ID) or UNK_ID for t in tokens), dtype=np.int32, count=len(tokens))

    def encode(self, text: str) -> np.ndarray:
        return self.encode_tokens(self.tokenizer(text))

    def to_dict(self) -> dict[str, Any]:
        return {"format": _FORMAT, "tokenizer": self.tokenizer.to_dict(), "itos": self.itos}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Vocabulary:
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise DataError(f"not an rnnkit vocabulary (expected format {_FORMAT!r})")
        itos = data.get("itos")
        if not isinstance(itos, list) or not all(isinstance(token, str) for token in itos):
            raise DataError("a saved vocabulary needs 'itos', a list of token strings")
        return cls(itos, tokenizer_from_dict(data.get("tokenizer")))

    def save(self, path: str | Path) -> None:
        atomic_write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as error:
            raise DataError(f"cannot read vocabulary {path}: {error}") from None
        return cls.from_dict(data)
