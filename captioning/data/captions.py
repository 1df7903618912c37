"""The training captions as word ids: tokenized once, stored in one flat array.

COCO's 616,767 training captions as one ``int32`` array and two offset arrays take about 40 MB
and a second to build (:func:`captioning.text.tokenize_chunks`, one dictionary lookup per word in
C); as one small tensor each they took 600K Python objects and the time of 600K tokenizer and
tensor calls. The datasets (:class:`~captioning.data.datasets.CaptionDataset`, the feature
cache's :class:`~captioning.data.features.FeatureCaptionDataset`) hand out an image's captions
as tensors cut from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain, repeat

import numpy as np
import torch
from torch import Tensor

from captioning.data.records import ImageRecord
from captioning.text import tokenize_chunks
from captioning.vocab import Vocabulary

__all__ = ["EncodedCaptions"]


class EncodedCaptions:
    """Every caption of some records as ids ``<start> w1 .. wn <end>``, in one flat array.

    Caption ``k`` is ``ids[starts[k]:starts[k + 1]]``; the captions of record ``i`` are
    ``first[i]`` to ``first[i + 1] - 1``.

    Args:
        records: the images and their captions.
        vocab: maps words to ids (unknown words to ``<unk>``).
        max_len: keep at most this many words of each caption (None: all).
    """

    def __init__(
        self, records: Sequence[ImageRecord], vocab: Vocabulary, *, max_len: int | None = None
    ) -> None:
        per_image = np.fromiter((len(r.captions) for r in records), np.int64, len(records))
        self.first = np.zeros(len(records) + 1, np.int64)  # (I + 1,)
        np.cumsum(per_image, out=self.first[1:])
        stoi = {token: i for i, token in enumerate(vocab.to_list())}
        words, lengths = [np.zeros(0, np.int32)], [np.zeros(0, np.int64)]
        for tokens, counts in tokenize_chunks(chain.from_iterable(r.captions for r in records)):
            words.append(np.fromiter(map(stoi.get, tokens, repeat(vocab.unk_id)), np.int32))
            lengths.append(counts)
        words_all, counts = np.concatenate(words), np.concatenate(lengths)  # (W,), (C,)
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
