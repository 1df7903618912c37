"""captioning: CNN-encoder / RNN-decoder image captioning in PyTorch."""

__version__ = "0.1.0"
