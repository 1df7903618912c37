"""Decoding: turn a model's step-by-step word distributions into captions, on whole batches.

Nothing here knows a model's internals: a decoder offers ``init_state``, ``step`` and
``reorder_state`` (:class:`captioning.contracts.CaptionDecoder`), and these functions drive it.
Rows that are finished leave the working batch, so a batch costs what its words cost.

* :func:`generate` (:mod:`~captioning.decoding.generate`): the front door; picks a strategy
  from a :class:`DecodingSettings` and keyword overrides (Hugging Face ``generate`` names).
* :func:`greedy` and :func:`sample` (:mod:`~captioning.decoding.sampling`): greedy search and
  ancestral sampling (temperature, top-k), one rollout loop.
* :func:`beam_search` (:mod:`~captioning.decoding.beam_search`): B x beam_size hypotheses in one
  tensor, n-best lists, length penalty.
* :class:`Generation` (:mod:`~captioning.decoding.result`): what every strategy returns;
  ``sequences`` always (B, K, T), ``best`` (B, T).
* :class:`DecodingSettings` (:mod:`~captioning.decoding.settings`): the ``decoding`` config
  group, and every check on it.
* :mod:`~captioning.decoding.rows`: what the strategies share (the rows of the working batch and
  their features, the start of a decoding, n-gram blocking).
"""

from captioning.decoding.beam_search import beam_search
from captioning.decoding.generate import generate
from captioning.decoding.result import Generation
from captioning.decoding.sampling import greedy, sample
from captioning.decoding.settings import DecodingSettings

__all__ = ["DecodingSettings", "Generation", "beam_search", "generate", "greedy", "sample"]
