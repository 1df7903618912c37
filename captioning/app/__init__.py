"""The web demo: a page where one drops an image and reads its captions (``tools/demo_app.py``).

* :class:`DemoService` (:mod:`captioning.app.service`): the request handling, without Gradio:
  images and decoding settings in, captions, n-best lists, attention weights or errors out.
* :func:`build_demo` and :func:`serve` (:mod:`captioning.app.page`): the Gradio page and its
  offline launch (Gradio is the optional ``app`` extra, imported only when a page is built);
  :mod:`captioning.app.page_assets`: the page's CSS, its upload-size guard and start-up hint.
"""

from captioning.app.page import (
    attention_views,
    build_demo,
    decode_requests,
    figure_image,
    nbest_table,
    serve,
    shapes_examples,
)
from captioning.app.service import METHODS, Answer, DemoService, method_of

__all__ = [
    "METHODS",
    "Answer",
    "DemoService",
    "attention_views",
    "build_demo",
    "decode_requests",
    "figure_image",
    "method_of",
    "nbest_table",
    "serve",
    "shapes_examples",
]
