"""Shared bits of the commands: one-line error reporting in the commands' own words (flags, not
the library's setting names), the parser every command uses, the options of the commands that
load a trained model, and the decoding options (caption, evaluate: one definition for both)."""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn

from captioning.data.images import MAX_PIXELS
from captioning.errors import NAME_ONLY, CaptioningError, library_name

__all__ = [
    "FLAGS",
    "SAMPLING_FLAGS",
    "SEARCH_FLAGS",
    "CommandParser",
    "add_captioner_arguments",
    "add_decoding_arguments",
    "decoding_overrides",
    "error_line",
    "flag_name",
    "one_line_errors",
    "positive_int",
]

#: library setting -> the flag that sets it (the same in every command that has it)
FLAGS = {
    "beam_size": "--beam-size",
    "max_len": "--max-len",
    "length_penalty": "--length-penalty",
    "no_repeat_ngram_size": "--no-repeat-ngram-size",
    "n_best": "--n-best",
    "sample": "--sample",
    "temperature": "--temperature",
    "top_k": "--top-k",
    "num_samples": "--num-samples",
    "max_pixels": "--max-pixels",
}


def flag_name(key: str, value: Any) -> str:
    """A :data:`~captioning.errors.Namer` for the commands: a setting as its flag
    (``--beam-size 3``; a switch: ``--sample`` / ``without --sample``); a setting that is no flag
    (a config's ``decoding.beam_size``) as the library writes it."""
    flag = FLAGS.get(key)
    if flag is None:
        return library_name(key, value)
    if value is NAME_ONLY:
        return flag
    if isinstance(value, bool):
        return flag if value else f"without {flag}"
    return f"{flag} {value}"


def error_line(exc: CaptioningError) -> str:
    """``error: ...``: the message with its settings written as the commands' flags."""
    return f"error: {exc.named(flag_name)}"


class CommandParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose usage errors are one ``error: ...`` line (exit status 2), as
    every other error of the commands, not the whole usage block; ``--help`` shows the usage."""

    def error(self, message: str) -> NoReturn:
        """Print ``error: MESSAGE (see --help)`` on stderr and exit 2."""
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def one_line_errors(main: Callable[..., int | None]) -> Callable[..., int]:
    """Run `main`; a CaptioningError becomes ``error: ...`` on stderr (its settings named as
    the flags: :func:`error_line`) and exit status 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        try:
            try:
                return int(main(*args, **kwargs) or 0)
            finally:
                sys.stdout.flush()  # (a closed output pipe shows here, not at exit)
        except CaptioningError as exc:
            print(error_line(exc), file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        except BrokenPipeError:
            # the reader of the output left (`... | head`): stop quietly, as Unix tools do, and
            # send what Python still flushes at exit nowhere (else: a second BrokenPipeError)
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 141  # 128 + SIGPIPE, what the shell reports for such a tool

    return wrapper


def add_captioner_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of every tool that loads a trained model: --checkpoint, --device and
    --max-pixels (what :meth:`captioning.Captioner.from_checkpoint` takes)."""
    parser.add_argument(
        "--checkpoint",
        "-c",
        required=True,
        help="checkpoint file (…/checkpoints/best.pt) or a run directory",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=MAX_PIXELS,
        help=f"refuse images larger than this many pixels (default {MAX_PIXELS}; 0: no limit)",
    )


#: the decoding flags that are settings (argparse destination = DecodingSettings field), by group
SEARCH_FLAGS = ("beam_size", "max_len", "length_penalty", "no_repeat_ngram_size")
SAMPLING_FLAGS = ("temperature", "top_k", "num_samples")


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_decoding_arguments(
    parser: argparse.ArgumentParser, title: str, *, n_best: bool = True, sampling: bool = True
) -> None:
    """The decoding options, as overrides of a checkpoint's decoding settings (every one
    defaults to None: not given): --beam-size, --max-len, --length-penalty,
    --no-repeat-ngram-size; with `n_best` --n-best; with `sampling` --sample, --temperature,
    --top-k, --num-samples and --seed. :func:`decoding_overrides` reads them back.

    Args:
        parser: the tool's parser.
        title: the heading of the options in ``--help`` (where the defaults come from).
        n_best: offer --n-best (a tool that prints several captions per image).
        sampling: offer the sampling options.
    """
    group = parser.add_argument_group(title)
    group.add_argument("--beam-size", type=positive_int, help="hypotheses per image (1: greedy)")
    group.add_argument(
        "--max-len", type=positive_int, help="most words per caption, <end> included"
    )
    group.add_argument(
        "--length-penalty",
        type=float,
        help="beam score = summed log-probs / length ** LENGTH_PENALTY",
    )
    if n_best:
        group.add_argument("--n-best", type=positive_int, help="beam hypotheses printed per image")
    group.add_argument(
        "--no-repeat-ngram-size",
        type=int,
        help="never repeat an n-gram of this size within a caption (0: off)",
    )
    if sampling:
        group.add_argument("--sample", action="store_true", help="draw words instead of searching")
        group.add_argument("--temperature", type=float, help="sampling temperature (0: greedy)")
        group.add_argument(
            "--top-k", type=positive_int, help="sample among the K most likely words"
        )
        group.add_argument("--num-samples", type=positive_int, help="captions drawn per image")
        group.add_argument("--seed", type=int, help="random seed for --sample")


def decoding_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The decoding settings the user gave on the command line, and only those (fields of
    :class:`captioning.decoding.DecodingSettings`; --seed is not one).

    With --sample, beam_size and n_best default to 1 (a beam config in the checkpoint must not
    block sampling).

    Raises:
        CaptioningError: --temperature, --top-k or --num-samples without --sample.
    """
    names = (*SEARCH_FLAGS, "n_best", *SAMPLING_FLAGS)
    given = {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}
    if getattr(args, "sample", False):
        return {"beam_size": 1, "n_best": 1, **given, "sample": True}
    if any(k in given for k in SAMPLING_FLAGS):
        raise CaptioningError("--temperature, --top-k and --num-samples need --sample")
    return given
