"""The web demo's page (Gradio): drop an image, read its captions, see where the model looked.

:func:`build_demo` lays a :class:`~captioning.app.service.DemoService` out as a Gradio page and
:func:`serve` runs it offline. Gradio is the optional ``app`` extra (``pip install -e ".[app]"``)
and is imported only here, inside the functions that need it.

Offline: no analytics or version check (``analytics_enabled=False``), no server-side rendering
(no Node process), no MCP server, no share link unless asked, and a theme whose fonts are the
system's (Gradio's own default fonts are served locally by this version; naming system fonts keeps
it so whatever the default becomes). The page's requests all go to the server itself; the browser
test checks that.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from captioning.app.page_assets import PAGE_CSS, SHARE_HINT, HintFilter, upload_guard
from captioning.app.service import METHODS, Answer, DemoService, method_of
from captioning.errors import CaptioningError
from captioning.visualize.attention import attention_figure

__all__ = [
    "attention_views",
    "build_demo",
    "figure_image",
    "nbest_table",
    "serve",
    "shapes_examples",
]

logger = logging.getLogger(__name__)
_DRAWING = threading.Lock()  # matplotlib is drawn one figure at a time
MAX_BATCH = 8  # requests decoded together when several are waiting
_MARKDOWN = re.compile(r"([\\`*_\[\]<>|~#])")  # shown as themselves in a message


def figure_image(fig: Any) -> Image.Image:
    """Render a matplotlib figure (Agg canvas, no display) to an RGB image."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    with _DRAWING:
        canvas = FigureCanvasAgg(fig)
        try:
            canvas.draw()
            return Image.fromarray(np.asarray(canvas.buffer_rgba())).convert("RGB")
        finally:  # free the pixels now, not when the garbage collector finds the figure's cycles
            fig.clear()
            canvas.renderer = None


def shapes_examples(folder: str | os.PathLike, *, count: int = 4, seed: int = 0) -> list[Path]:
    """Write `count` scenes of the synthetic shapes data set as PNG files (the page's examples).

    Returns:
        The files, ``shapes_0.png``, ``shapes_1.png``, ... in `folder`.
    """
    from captioning.data.shapes import render_scene, sample_scene

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = [out / f"shapes_{k}.png" for k in range(count)]
    for path in paths:
        render_scene(sample_scene(rng), rng).save(path)
    return paths


def nbest_table(answer: Answer) -> str:
    """The n-best list as a Markdown table (rank, score, caption), empty without captions."""
    rows = [
        f"| {k} | {score:.4f} | {text or '(empty)'} |"
        for k, (score, text) in enumerate(answer.nbest, 1)
    ]
    return "\n".join(["| # | score | caption |", "|---:|---:|:---|", *rows]) if rows else ""


def word_map(answer: Answer | None, word: int | None) -> Image.Image | None:
    """The image beside one word's attention map (on that word's own colour scale), or None."""
    if answer is None or answer.attention is None or word is None:
        return None
    if not 0 <= word < len(answer.words):
        return None
    alphas = answer.attention[word : word + 1]  # (1, L)
    return figure_image(attention_figure(answer.view, [answer.words[word]], alphas, panel_size=320))


def attention_views(
    answer: Answer | None,
) -> tuple[Image.Image | None, list[tuple[str, int]], Image.Image | None]:
    """What the page shows of an answer's attention: the figure of all words (the one
    ``tools/caption.py --attention-map`` saves), the word choices (label, index), and the first
    word's map. Nothing (None, [], None) for answers without attention."""
    if answer is None or answer.attention is None:
        return None, [], None
    figure = figure_image(attention_figure(answer.view, answer.words, answer.attention))
    choices = [(f"{k + 1}. {w}", k) for k, w in enumerate(answer.words)]
    return figure, choices, word_map(answer, 0)


def decode_requests(service: DemoService, files: list, settings: list[list]) -> tuple[list, ...]:
    """What the page's batched decoding event runs, one entry per waiting request.

    Args:
        service: the model behind the page.
        files: the uploads as Gradio hands them unopened (``{"path": ..., "orig_name": ...}``),
            or paths, or None (no image).
        settings: one list per control (decoding method, beam size, n-best, temperature,
            seed), each with one value per request.

    Returns:
        (status messages, captions, n-best tables, answers): lists, one item per request. A
        message names the upload by its own name, not the server's copy; settings that cannot
        be read and unexpected failures are messages too (the latter logged with traceback).
    """
    paths = [f.get("path") if isinstance(f, dict) else f for f in files]
    names = [f.get("orig_name") if isinstance(f, dict) else None for f in files]
    try:
        answers = _answer_controls(service, paths, settings)
    except (TypeError, ValueError, CaptioningError) as exc:  # settings sent by hand to the API
        answers = [Answer(error=f"bad request: {exc}") for _ in files]
    except Exception as exc:  # the page says so in one line; the log has the traceback
        logger.exception("decoding failed")
        answers = [
            Answer(error=f"internal error ({type(exc).__name__}); see the server's log")
            for _ in files
        ]
    messages = []
    for answer, path, name in zip(answers, paths, names, strict=True):
        text = answer.error or ""
        if path and text:
            text = text.replace(str(path), name or Path(path).name)  # not the server's path
        messages.append("**Error:** " + _MARKDOWN.sub(r"\\\1", text) if text else "")
    return messages, [a.caption for a in answers], [nbest_table(a) for a in answers], answers


def _answer_controls(service: DemoService, paths: list, settings: list[list]) -> list[Answer]:
    """The answers to requests given as the controls' values; a request whose controls make no
    search (an unknown method, sizes out of range) gets its own one-line error."""
    answers = [Answer() for _ in paths]
    asked: dict[int, tuple[Any, int]] = {}  # request -> (its decoding settings, its seed)
    for k, (m, b, n, t, s) in enumerate(zip(*settings, strict=True)):
        search, seed = (str(m), int(b), int(n), float(t)), int(s or 0)  # may raise ValueError
        try:
            asked[k] = service.settings_for(*search), seed
        except CaptioningError as exc:
            answers[k].error = str(exc)
    keys = list(asked)
    found = service.answer(
        [paths[k] for k in keys], [asked[k][0] for k in keys], [asked[k][1] for k in keys]
    )
    for k, answer in zip(keys, found, strict=True):
        answers[k] = answer
    return answers


def build_demo(
    service: DemoService, *, examples: Sequence[str | os.PathLike] = (), title: str = ""
) -> Any:
    """The Gradio page: an image, the decoding controls, the captions and attention maps.

    Captioning runs when an image is uploaded or an example picked, and on the button (after
    changing the controls). The decoding event is batched (up to :data:`MAX_BATCH` waiting
    requests; Gradio runs one batch at a time, so the model is used by one thread); the attention
    figures are drawn after it, per request. The upload reaches :meth:`DemoService.answer`
    unopened (``preprocess=False``: Gradio checks it is an upload, our loader reads it), so a bad
    file is reported by the same one-line messages as ``tools/caption.py``, in the status box.

    Args:
        service: the model behind the page.
        examples: image files the page offers as examples.
        title: Markdown under the heading (e.g. the checkpoint's path).

    Returns:
        A ``gradio.Blocks``; :func:`serve` launches it.
    """
    import gradio as gr

    default, attention = service.default_decoding(), service.has_attention
    with gr.Blocks(
        title="Image captioning", analytics_enabled=False, delete_cache=(3600, 3600)
    ) as demo:
        gr.Markdown(f"# Image captioning\n{title}")
        with gr.Row():
            with gr.Column(scale=1):
                image = gr.Image(
                    type="filepath",
                    label="Image",
                    sources=["upload", "clipboard"],
                    height=300,
                    elem_id="image",
                )
                method = gr.Radio(
                    list(METHODS), value=method_of(default), label="Decoding", elem_id="method"
                )
                beam = gr.Slider(2, 10, value=max(2, default.beam_size), step=1, label="Beam size")
                n_best = gr.Slider(
                    1,
                    10,
                    value=default.num_samples if default.sample else default.n_best,
                    step=1,
                    label="Captions listed (n-best, or samples drawn)",
                )
                temperature = gr.Slider(
                    0.05, 2.0, value=default.temperature, step=0.05, label="Temperature (sampling)"
                )
                seed = gr.Number(value=0, precision=0, label="Seed (sampling)")
                run = gr.Button("Caption", variant="primary", elem_id="run")
                if examples:
                    gr.Examples(
                        [[str(p)] for p in examples],
                        inputs=[image],
                        label="Shapes examples",
                        elem_id="examples",
                    )
            with gr.Column(scale=2):
                status = gr.Markdown(elem_id="status")
                caption = gr.Textbox(label="Caption", interactive=False, elem_id="caption")
                table = gr.Markdown(elem_id="nbest")
                with gr.Column(visible=attention):
                    gr.Markdown("**Where the model looked**, word by word (one colour scale)")
                    figure = gr.Image(
                        type="pil", format="png", show_label=False, elem_id="attention"
                    )
                    word = gr.Radio([], label="Word", elem_id="word")
                    single = gr.Image(
                        type="pil", format="png", show_label=False, elem_id="word-map"
                    )
        state = gr.State()

        def decode(files: list, *settings: list) -> tuple[list, ...]:
            return decode_requests(service, files, list(settings))

        def draw(answer: Answer | None) -> tuple:
            figure, choices, first = attention_views(answer)
            return figure, gr.update(choices=choices, value=0 if choices else None), first

        inputs = [image, method, beam, n_best, temperature, seed]
        outputs = [status, caption, table, state]
        event = gr.on(
            [image.change, run.click],
            decode,
            inputs,
            outputs,
            batch=True,
            max_batch_size=MAX_BATCH,
            preprocess=False,
        )
        if attention:
            event.then(draw, state, [figure, word, single])
            word.select(word_map, [state, word], single)
    return demo


def offline_theme() -> Any:
    """Gradio's default theme with the system's fonts: nothing fetched from a font service."""
    import gradio as gr

    sans, mono = ["ui-sans-serif", "system-ui", "sans-serif"], ["ui-monospace", "monospace"]
    return gr.themes.Default(font=sans, font_mono=mono)


def serve(
    demo: Any,
    *,
    host: str = "127.0.0.1",
    port: int = 7860,
    share: bool = False,
    allowed_paths: Sequence[str | os.PathLike] = (),
    max_file_size: str | int | None = "20mb",
) -> None:
    """Launch the page and block until interrupted: offline (see the module's docstring), no
    share link unless `share`, bound to `host` (localhost by default). Gradio's start-up lines
    are printed, its hint "set `share=True` in `launch()`" as :data:`SHARE_HINT` (the
    command's flag).

    Args:
        demo: from :func:`build_demo`.
        host: the address to bind (``0.0.0.0``: every interface).
        port: the port.
        share: ask Gradio for a public ``*.gradio.live`` link (contacts Gradio's servers).
        allowed_paths: folders the page may serve files from (the examples).
        max_file_size: larger uploads are refused (``"20mb"``, or bytes): in the browser, with
            a status line that keeps the previous image, caption and maps; by Gradio's server
            for uploads sent otherwise (a pasted image too: the page cannot see its size).

    Raises:
        CaptioningError: the port is taken.
    """
    head = upload_guard(max_file_size) if max_file_size is not None else None
    demo.queue(default_concurrency_limit=1)
    try:
        with contextlib.redirect_stdout(HintFilter(sys.stdout, SHARE_HINT)):
            demo.launch(
                server_name=host,
                server_port=port,
                share=share,
                theme=offline_theme(),
                css=PAGE_CSS,
                head=head,
                ssr_mode=False,
                mcp_server=False,
                pwa=False,
                enable_monitoring=False,
                show_error=False,
                allowed_paths=[str(p) for p in allowed_paths],
                max_file_size=max_file_size,  # the server's own check, for the API
                prevent_thread_lock=True,
            )
    except OSError as exc:
        raise CaptioningError(
            f"cannot serve on {host}:{port}: {' '.join(str(exc).split())}"
        ) from exc
    demo.block_thread()  # until interrupted
