"""A web page to caption images: ``python tools/demo_app.py --checkpoint RUN_OR_CKPT``.

Drop an image (or pick one of the shapes examples) and read its caption, the n-best list with
scores for the decoding chosen with the controls (greedy, beam size, sampling temperature) and,
for attention decoders, where the model looked for each word. Open http://127.0.0.1:7860.

Needs the ``app`` extra (``pip install -e ".[app]"``: Gradio). The model is loaded once, at
start. The page runs offline: no analytics, no fonts or scripts from elsewhere, no share link
unless ``--share``; it binds to localhost unless ``--host`` says otherwise. A file that is not
an image, or larger than ``--max-pixels``, is reported on the page and the page keeps serving.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile

from captioning.app import DemoService, build_demo, serve, shapes_examples
from captioning.cli.common import CommandParser, add_captioner_arguments, one_line_errors
from captioning.errors import CaptioningError
from captioning.inference import Captioner

# before gradio is imported anywhere: no usage statistics, no version check, no Hub telemetry
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = CommandParser(description=__doc__.splitlines()[0])
    add_captioner_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default localhost)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument(
        "--max-file-size", default="20mb", help="refuse larger uploads (default 20mb)"
    )
    parser.add_argument(
        "--share", action="store_true", help="also ask Gradio for a public link (goes online)"
    )
    return parser.parse_args(argv)


@one_line_errors
def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.max_pixels < 0:
        raise CaptioningError(f"--max-pixels must be >= 0 (0: no limit), got {args.max_pixels}")
    if importlib.util.find_spec("gradio") is None:
        raise CaptioningError('the web demo needs Gradio: pip install -e ".[app]"')
    captioner = Captioner.from_checkpoint(
        args.checkpoint, device=args.device, max_pixels=args.max_pixels or None
    )
    if getattr(captioner.model.encoder, "reads_features", False):
        raise CaptioningError(
            f"{args.checkpoint} reads pre-extracted region features (encoder=precomputed) and "
            "cannot encode an uploaded image; caption its feature files with tools/caption.py "
            "--features, or evaluate it with tools/evaluate.py"
        )
    with tempfile.TemporaryDirectory(prefix="captioning-demo-") as folder:
        examples = shapes_examples(folder)
        demo = build_demo(DemoService(captioner), examples=examples, title=f"`{args.checkpoint}`")
        serve(
            demo,
            host=args.host,
            port=args.port,
            share=args.share,
            allowed_paths=[folder],
            max_file_size=args.max_file_size,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
