"""The training captions as word ids: tokenized once, stored in one flat array.

COCO's 616,767 training captions as one ``int32`` array and two offset arrays take about 40 MB
and a second to build (:func:`captioning.text.tokenize_chunks`, one dictionary lookup per word in
C); as one small tensor each they took 600K Python objects and the time of 600K tokenizer and
tensor calls. The datasets (:class:`~captioning.data.datasets.CaptionDataset`, the feature
cache's :class:`~captioning.data.features.FeatureCaptionDataset`) hand out an image's captions
as tensors cut from it.

A run tokenizes its training captions once (:class:`TokenizedCaptions`): the vocabulary is
counted from those tokens (:meth:`TokenizedCaptions.word_counts`), the same tokens are encoded
(``EncodedCaptions(..., tokens=...)``), and self-critical training's reward takes them as its
references (:meth:`TokenizedCaptions.by_record`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from itertools import chain, repeat

import numpy as np
import torch
from torch import Tensor

from captioning.data.records import ImageRecord
from captioning.text import tokenize_chunks
from captioning.vocab import Vocabulary

__all__ = ["EncodedCaptions", "TokenizedCaptions"]


class TokenizedCaptions:
    """Every caption of some records, tokenized once (:func:`captioning.text.tokenize_chunks`).

    The tokens are kept as indices into the distinct words (``int32``, first seen first), so
    COCO's 6M training tokens take 25 MB rather than a list of 6M strings.

    Args:
        records: the images and their captions.

    Attributes:
        words: the distinct words, in order of first use.
        ids: ``(W,)`` every token as an index into ``words``, caption after caption.
        counts: ``(C,)`` tokens per caption, ``int64``.
        per_image: ``(I,)`` captions per record, ``int64``.
    """

    def __init__(self, records: Sequence[ImageRecord]) -> None:
        self.per_image = np.fromiter((len(r.captions) for r in records), np.int64, len(records))
        index: dict[str, int] = {}
        ids, counts = [np.zeros(0, np.int32)], [np.zeros(0, np.int64)]
        for tokens, chunk_counts in tokenize_chunks(
            chain.from_iterable(r.captions for r in records)
        ):
            new = index.setdefault
            ids.append(np.fromiter((new(t, len(index)) for t in tokens), np.int32, len(tokens)))
            counts.append(chunk_counts)
        self.words: list[str] = list(index)
        self.ids, self.counts = np.concatenate(ids), np.concatenate(counts)  # (W,), (C,)

    def word_counts(self) -> Counter[str]:
        """How many times each word is used (what :meth:`Vocabulary.from_counts` takes)."""
        used = np.bincount(self.ids, minlength=len(self.words))  # (distinct words,)
        return Counter(dict(zip(self.words, used.tolist(), strict=True)))

    def by_record(self) -> list[list[tuple[str, ...]]]:
        """Each record's captions as tuples of words (:func:`captioning.text.tokenize` of each
        caption), in record order."""
        words = self.words
        tokens = [words[i] for i in self.ids.tolist()]  # (W,) as strings
        ends, last = np.cumsum(self.counts), np.cumsum(self.per_image)  # (C,), (I,)
        starts, first = (ends - self.counts).tolist(), (last - self.per_image).tolist()
        captions = [tuple(tokens[a:b]) for a, b in zip(starts, ends.tolist(), strict=True)]
        return [captions[a:b] for a, b in zip(first, last.tolist(), strict=True)]

    def matches(self, records: Sequence[ImageRecord]) -> bool:
        """Whether these are the tokens of `records` (same images, same numbers of captions)."""
        return len(records) == len(self.per_image) and all(
            len(r.captions) == n for r, n in zip(records, self.per_image.tolist(), strict=True)
        )


class EncodedCaptions:
    """Every caption of some records as ids ``<start> w1 .. wn <end>``, in one flat array.

    Caption ``k`` is ``ids[starts[k]:starts[k + 1]]``; the captions of record ``i`` are
    ``first[i]`` to ``first[i + 1] - 1``.

    Args:
        records: the images and their captions.
        vocab: maps words to ids (unknown words to ``<unk>``).
        max_len: keep at most this many words of each caption (None: all).
        tokens: the records' captions already tokenized (the ones the vocabulary was counted
            from); None: tokenize them here.
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        vocab: Vocabulary,
        *,
        max_len: int | None = None,
        tokens: TokenizedCaptions | None = None,
    ) -> None:
        if tokens is None:
            tokens = TokenizedCaptions(records)
        elif not tokens.matches(records):
            raise ValueError("tokens were made from other records than the ones encoded")
        self.first = np.zeros(len(records) + 1, np.int64)  # (I + 1,)
        np.cumsum(tokens.per_image, out=self.first[1:])
        stoi = {token: i for i, token in enumerate(vocab.to_list())}
        to_id = np.fromiter(map(stoi.get, tokens.words, repeat(vocab.unk_id)), np.int32)
        words_all, counts = to_id[tokens.ids], tokens.counts  # (W,), (C,)
        if max_len is not None:  # keep the first max_len words of each caption
            position = np.arange(len(words_all)) - np.repeat(np.cumsum(counts) - counts, counts)
            words_all, counts = words_all[position < max_len], np.minimum(counts, max_len)
        self.ids, self.starts = _frame(words_all, counts, vocab.bos_id, vocab.eos_id)

    def __len__(self) -> int:
        """Captions in all."""
        return len(self.starts) - 1

    def image(self, index: int) -> list[Tensor]:
        """The captions of record `index`, each a (length,) ``int64`` tensor."""
        lo, hi = self.starts[self.first[index]], self.starts[self.first[index + 1]]
        ids = torch.from_numpy(self.ids[lo:hi].astype(np.int64))  # (words of all its captions,)
        bounds = self.starts[self.first[index] : self.first[index + 1] + 1] - lo
        return list(ids.split(np.diff(bounds).tolist()))


def _frame(
    words: np.ndarray, lengths: np.ndarray, bos: int, eos: int
) -> tuple[np.ndarray, np.ndarray]:
    """Flat word ids and caption lengths -> flat ``<start> words <end>`` ids and their starts."""
    n = len(lengths)
    starts = np.zeros(n + 1, np.int64)  # (C + 1,)
    np.cumsum(lengths + 2, out=starts[1:])
    ids = np.empty(int(starts[-1]), np.int32)  # (sum of lengths + 2C,)
    ids[starts[:-1]] = bos
    ids[starts[1:] - 1] = eos
    # word j of caption k goes to starts[k] + 1 + j: its flat index plus 2k + 1
    ids[np.arange(len(words)) + 2 * np.repeat(np.arange(n), lengths) + 1] = words
    return ids, starts
