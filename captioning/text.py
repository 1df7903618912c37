"""The project's caption tokenizer (no downloaded NLTK data needed).

:func:`tokenize` is used to build the vocabulary, to encode captions, and as the
fallback tokenizer of :mod:`captioning.metrics` when Java (needed by the official
PTB tokenizer) is missing.

Rules, in order:

1. lower-case the caption;
2. split it with :func:`nltk.tokenize.wordpunct_tokenize` (the regular expression
   ``\\w+|[^\\w\\s]+``: runs of word characters, or runs of punctuation);
3. drop every token that has no letter or digit in it (pure punctuation).

Apostrophes and hyphens therefore split words, and the punctuation itself is
dropped: ``"man's"`` -> ``["man", "s"]``, ``"don't"`` -> ``["don", "t"]``,
``"t-shirt"`` -> ``["t", "shirt"]``, ``"3.5"`` -> ``["3", "5"]``. This keeps the
vocabulary small (no separate ``"giraffe's"`` entry next to ``"giraffe"``).
Curly apostrophes behave like straight ones. Non-ASCII letters are kept
(``"café"`` stays one token).
"""

from __future__ import annotations

from nltk.tokenize import wordpunct_tokenize

__all__ = ["tokenize"]


def tokenize(caption: str) -> list[str]:
    """Splits a caption into lower-case word tokens, without punctuation.

    Args:
        caption: a raw caption, e.g. ``"A Man, riding a horse."``.

    Returns:
        The tokens, e.g. ``["a", "man", "riding", "a", "horse"]``. An empty or
        punctuation-only caption gives ``[]``.

    Example:
        >>> tokenize("A man's horse.")
        ['a', 'man', 's', 'horse']
    """
    return [tok for tok in wordpunct_tokenize(caption.lower()) if any(ch.isalnum() for ch in tok)]
