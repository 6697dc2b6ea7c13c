"""The caption tokenizer: a word-level vocabulary trained on the training captions with the
``tokenizers`` library and stored as its JSON (in the run's ``app_state.json``).

Word level, not sub-word, on purpose: a query word the training corpus never held maps to
``[UNK]``, so a query made only of unknown words is detected and reported instead of being
silently spelled out of sub-word pieces. Text is NFKC-normalised and lower-cased, then split
on whitespace and punctuation. Token ids: ``[PAD]`` 0, ``[UNK]`` 1, ``[CLS]`` 2, ``[SEP]`` 3.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import numpy as np

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")
PAD, UNK, CLS, SEP = 0, 1, 2, 3


class CaptionTokenizer:
    """Fixed-length token ids for captions: ``[CLS] w1 ... wn [SEP]`` padded with ``[PAD]``."""

    def __init__(self, tokenizer: Any, max_len: int):
        if max_len < 3:
            raise ValueError(f"max_len must be >= 3 ([CLS], one word, [SEP]); got {max_len}")
        self.tok, self.max_len = tokenizer, max_len
        for i, s in enumerate(SPECIALS):
            if tokenizer.token_to_id(s) != i:
                raise ValueError(f"tokenizer JSON: special token {s} must have id {i}, got {tokenizer.token_to_id(s)}")

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 2000, min_frequency: int = 1,
              max_len: int = 24) -> CaptionTokenizer:
        """Learn a word vocabulary (at most ``vocab_size`` entries, specials included)."""
        from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

        tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
        tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                            special_tokens=list(SPECIALS), show_progress=False)
        tok.train_from_iterator(list(texts), trainer=trainer)
        return cls(tok, max_len)

    @classmethod
    def from_json(cls, data: dict[str, Any] | str, max_len: int) -> CaptionTokenizer:
        from tokenizers import Tokenizer

        text = data if isinstance(data, str) else json.dumps(data)
        try:
            tok = Tokenizer.from_str(text)
        except Exception as err:  # the Rust side raises its own Exception type
            raise ValueError(f"not a valid tokenizers JSON ({err})") from None
        return cls(tok, max_len)

    def to_json(self) -> dict[str, Any]:
        return json.loads(self.tok.to_str())

    @property
    def vocab_size(self) -> int:
        return int(self.tok.get_vocab_size(with_added_tokens=True))

    def words(self, text: str) -> list[str]:
        """The normalised words of ``text`` (what the vocabulary is looked up with)."""
        return [w for w, _ in self.tok.pre_tokenizer.pre_tokenize_str(self.tok.normalizer.normalize_str(text))]

    def encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """ids [N, max_len] int64 and the number of unknown words per text [N] int64.

        Texts longer than ``max_len - 2`` words are cut (the tail is dropped); an empty text
        becomes ``[CLS] [SEP]``.
        """
        out = np.full((len(texts), self.max_len), PAD, dtype=np.int64)
        unknown = np.zeros(len(texts), dtype=np.int64)
        encs = self.tok.encode_batch([t if t.strip() else "" for t in texts], add_special_tokens=False)
        for i, enc in enumerate(encs):
            ids = enc.ids[: self.max_len - 2]
            unknown[i] = sum(1 for t in ids if t == UNK)
            out[i, : len(ids) + 2] = [CLS, *ids, SEP]
        return out, unknown


__all__ = ["CLS", "PAD", "SEP", "SPECIALS", "UNK", "CaptionTokenizer"]
