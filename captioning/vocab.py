"""Vocabulary: tokenize, build from captions with a minimum count, encode/decode, JSON I/O."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from captioning.errors import CaptioningError
from captioning.text import tokenize, tokenize_chunks

__all__ = ["BOS", "EOS", "PAD", "SPECIALS", "UNK", "Vocabulary"]

PAD, BOS, EOS, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)  # ids 0, 1, 2, 3


class Vocabulary:
    """A word <-> id mapping with the four specials at fixed ids.

    `<pad>`=0, `<start>`=1, `<end>`=2, `<unk>`=3; words follow in order of decreasing count
    (ties alphabetical), so a vocabulary built twice from the same captions is identical.
    """

    pad_id, bos_id, eos_id, unk_id = 0, 1, 2, 3

    def __init__(self, tokens: Sequence[str]) -> None:
        """Build from the full token list (specials first, as saved by :meth:`to_list`).

        Args:
            tokens: every token, index = id; must start with the four specials.
        """
        tokens = list(tokens)
        if tuple(tokens[:4]) != SPECIALS:
            raise CaptioningError(
                f"vocabulary must start with {', '.join(SPECIALS)}; got {tokens[:4]} "
                "(is this a vocabulary file written by captioning?)"
            )
        if len(set(tokens)) != len(tokens):
            dupes = sorted({t for t in tokens if tokens.count(t) > 1})[:5]
            raise CaptioningError(f"vocabulary has duplicate tokens: {dupes}")
        self._itos = tokens
        self._stoi = {t: i for i, t in enumerate(tokens)}

    @classmethod
    def build(cls, captions: Iterable[str], *, min_count: int = 1) -> Vocabulary:
        """Build a vocabulary from raw captions.

        Args:
            captions: caption strings (tokenized with :func:`captioning.text.tokenize`).
            min_count: words seen fewer times than this map to `<unk>`.

        Returns:
            The vocabulary.
        """
        counts: Counter[str] = Counter()
        for tokens, _ in tokenize_chunks(captions):  # COCO's 616K captions: about a second
            counts.update(tokens)
        return cls.from_counts(counts, min_count=min_count)

    @classmethod
    def from_counts(cls, counts: Mapping[str, int], *, min_count: int = 1) -> Vocabulary:
        """Build a vocabulary from word counts of tokenized captions (as :meth:`build` does).

        Args:
            counts: word -> times used, e.g.
                :meth:`captioning.data.captions.TokenizedCaptions.word_counts`.
            min_count: words seen fewer times than this map to `<unk>`.

        Returns:
            The vocabulary: the specials, then the words by falling count, then alphabetically.
        """
        if not any(counts.values()):
            raise CaptioningError(
                "cannot build a vocabulary from no captions: the caption list is empty"
            )
        words = sorted(
            (w for w, c in counts.items() if c >= min_count and w not in SPECIALS),
            key=lambda w: (-counts[w], w),
        )
        return cls([*SPECIALS, *words])

    def __len__(self) -> int:
        return len(self._itos)

    def __contains__(self, word: str) -> bool:
        return word in self._stoi

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self._itos == other._itos

    def __repr__(self) -> str:
        return f"Vocabulary(size={len(self)})"

    def token_to_id(self, token: str) -> int:
        """Id of `token`, or the `<unk>` id."""
        return self._stoi.get(token, self.unk_id)

    def id_to_token(self, index: int) -> str:
        """Token of `index`."""
        return self._itos[index]

    def encode(self, caption: str | Sequence[str], *, max_len: int | None = None) -> list[int]:
        """Caption -> ids framed as `<start> w1 ... wn <end>`.

        Args:
            caption: a raw string (tokenized here) or a list of tokens.
            max_len: keep at most this many words (before adding the specials).

        Returns:
            The id list, length n + 2.
        """
        tokens = tokenize(caption) if isinstance(caption, str) else list(caption)
        if max_len is not None:
            tokens = tokens[:max_len]
        return [self.bos_id, *(self.token_to_id(t) for t in tokens), self.eos_id]

    def decode(self, ids: Iterable[int], *, strip: bool = True) -> str:
        """Ids -> a caption string; stops at the first `<end>` and drops `<start>`/`<pad>`.

        Args:
            ids: token ids (ints or a 1-D tensor).
            strip: drop the specials (except `<unk>`) and stop at `<end>`.

        Returns:
            Space-joined words.
        """
        words = []
        for i in ids:
            i = int(i)
            if strip and i == self.eos_id:
                break
            if strip and i in (self.pad_id, self.bos_id):
                continue
            words.append(self._itos[i])
        return " ".join(words)

    def to_list(self) -> list[str]:
        """All tokens, index = id (what checkpoints store)."""
        return list(self._itos)

    def save(self, path: str | os.PathLike) -> None:
        """Write the vocabulary as a JSON list of tokens."""
        Path(path).write_text(json.dumps(self._itos, indent=0, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Vocabulary:
        """Read a vocabulary written by :meth:`save`."""
        try:
            tokens = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise CaptioningError(f"vocabulary file not found: {path}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CaptioningError(f"vocabulary file {path} is not valid JSON: {exc}") from None
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise CaptioningError(f"vocabulary file {path} must hold a JSON list of strings")
        return cls(tokens)
