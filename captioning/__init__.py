"""captioning: CNN-encoder / RNN-decoder image captioning in PyTorch.

The public API, re-exported here::

    from captioning import Captioner, Trainer, Vocabulary, beam_search, build_model
"""

__version__ = "0.1.0"

# First, before anything imports torch: OpenMP reads its wait policy when torch loads it
# (hence the imports below the call).
# ruff: noqa: E402
from captioning.openmp import set_wait_policy

set_wait_policy()  # OMP_WAIT_POLICY=PASSIVE on a busy machine, unless the user set it

from captioning.checkpoint import load_checkpoint, save_checkpoint
from captioning.contracts import CaptionDecoder, EncoderOutput
from captioning.decoding import (
    DecodingSettings,
    Generation,
    beam_search,
    generate,
    greedy,
    sample,
)
from captioning.errors import CaptioningError
from captioning.inference import Captioner
from captioning.models.caption_model import CaptionModel, build_model
from captioning.models.decoder import RNNDecoder
from captioning.training import Trainer
from captioning.vocab import Vocabulary

__all__ = [
    "CaptionDecoder",
    "CaptionModel",
    "Captioner",
    "CaptioningError",
    "DecodingSettings",
    "EncoderOutput",
    "Generation",
    "RNNDecoder",
    "Trainer",
    "Vocabulary",
    "__version__",
    "beam_search",
    "build_model",
    "generate",
    "greedy",
    "load_checkpoint",
    "sample",
    "save_checkpoint",
]
