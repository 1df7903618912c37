"""Caption metrics: the official COCO toolkit (pycocoevalcap 1.2) plus NLTK BLEU.

:func:`coco_scores` runs pycocoevalcap's scorers as its ``COCOEvalCap`` does (PTB
tokenizer, then ``Bleu(4)``, ``Meteor``, ``Rouge``, ``Cider``, optionally ``Spice``)
on the images present in the predictions, so the numbers equal the official ones.
Without Java it uses :func:`captioning.text.tokenize`, skips METEOR and SPICE and
says so in :attr:`ScoreReport.notices`. The Java tools' console output is captured
(file descriptors 1 and 2 are redirected while they run: not thread-safe) and
logged at DEBUG level. The Java tools run in a session of their own
(:func:`_own_session`), so a Ctrl-C or a signal to the process group, meant for the
caller (a training run stops and saves), does not kill them half-way.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from captioning.errors import CaptioningError
from captioning.text import tokenize

__all__ = [
    "METRIC_KEYS",
    "TEST_METRICS",
    "VALIDATION_SCORERS",
    "ScoreReport",
    "coco_scores",
    "evaluate_captions",
    "format_ids",
    "nltk_bleu",
]

logger = logging.getLogger(__name__)

METRIC_KEYS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr")
#: the scorers validation runs after each epoch (METEOR needs Java and time)
VALIDATION_SCORERS = ("Bleu", "CIDEr")
#: the scorers of a final test and of ``tools/evaluate.py``
TEST_METRICS = ("Bleu", "METEOR", "ROUGE_L", "CIDEr")
_SCORERS = ("Bleu", "METEOR", "ROUGE_L", "CIDEr", "SPICE")
# Line breaks besides "\n" (which pycocoevalcap replaces) on which the PTB tokenizer
# would start a new output line, shifting every later caption to the wrong image.
_LINE_BREAKS = re.compile("[\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029]")

References = Mapping[int, Sequence[str]]
Predictions = Mapping[int, str]


@dataclass
class ScoreReport:
    """The result of :func:`coco_scores` / :func:`evaluate_captions`.

    Attributes:
        scores: corpus scores, plain floats, under the official keys (``Bleu_1`` ..
            ``Bleu_4``, ``METEOR``, ``ROUGE_L``, ``CIDEr``, ``SPICE``), plus
            ``nltk_Bleu_1`` .. ``nltk_Bleu_4`` from :func:`evaluate_captions`.
        per_image: ``{image_id: {key: score}}`` when asked for, else ``{}``.
        notices: one-line explanations of anything skipped or failed.
        num_images: how many images were scored.
        tokenizer: ``"ptb"`` (official) or ``"project"`` (Java missing).
    """

    scores: dict[str, float]
    per_image: dict[int, dict[str, float]] = field(default_factory=dict)
    notices: list[str] = field(default_factory=list)
    num_images: int = 0
    tokenizer: str = "ptb"


def format_ids(ids: Iterable[object], limit: int = 10) -> str:
    ids = list(ids)
    more = f" and {len(ids) - limit} more" if len(ids) > limit else ""
    return ", ".join(str(i) for i in ids[:limit]) + more


def _checked_ids(references: References, predictions: Predictions) -> list[int]:
    if not predictions:
        raise CaptioningError("no predictions to score; generate captions first")
    missing = [i for i in predictions if not references.get(i)]
    if missing:
        raise CaptioningError(
            f"image ids without reference captions: {format_ids(missing)}; "
            "score against the split the captions were generated for"
        )
    return list(predictions)


@contextlib.contextmanager
def _captured_output(what: str) -> Iterator[None]:
    """Sends fds 1 and 2 (where Java subprocesses write) to a temp file, logs it at DEBUG."""
    with tempfile.TemporaryFile() as tmp:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        saved: list[tuple[int, int]] = []
        try:
            for fd in (1, 2):
                with contextlib.suppress(OSError):  # a closed fd: nothing to redirect
                    saved.append((fd, os.dup(fd)))
                    os.dup2(tmp.fileno(), fd)
            yield
        finally:
            for fd, copy in saved:
                os.dup2(copy, fd)
                os.close(copy)
            tmp.seek(0)
            text = tmp.read().decode(errors="replace").strip()
            if text:
                logger.debug("%s output: %s", what, text)


class _OwnSessionSubprocess:
    """Stands for the ``subprocess`` module in a pycocoevalcap module: the processes it starts
    get a session of their own (``start_new_session``)."""

    def __getattr__(self, name: str) -> object:
        return getattr(subprocess, name)

    @staticmethod
    def Popen(*args: object, **kwargs: object) -> subprocess.Popen:
        return subprocess.Popen(*args, start_new_session=True, **kwargs)

    @staticmethod
    def check_call(*args: object, **kwargs: object) -> int:
        return subprocess.check_call(*args, start_new_session=True, **kwargs)


@contextlib.contextmanager
def _own_session(module: object) -> Iterator[None]:
    """While in the context, the Java processes of pycocoevalcap's `module` start in a session
    of their own: the terminal's SIGINT (or a signal to the process group) reaches the caller,
    which decides, and not the tokenizer, whose cut-short output would look like a Java fault."""
    real = module.subprocess
    module.subprocess = _OwnSessionSubprocess()
    try:
        yield
    finally:
        module.subprocess = real


def _spice_jar_paths() -> list[Path]:
    """The Stanford CoreNLP jars that pycocoevalcap's ``Spice()`` downloads if missing."""
    from pycocoevalcap.spice import get_stanford_models as gsm

    lib = Path(gsm.SPICEDIR) / gsm.SPICELIB
    return [lib / f"{gsm.JAR}.jar", lib / f"{gsm.JAR}-models.jar"]


def _ptb_tokenize(captions: dict[int, list[str]]) -> dict[int, list[str]]:
    from pycocoevalcap.tokenizer import ptbtokenizer

    entries = {i: [{"caption": _LINE_BREAKS.sub(" ", c)} for c in cs] for i, cs in captions.items()}
    try:
        with _captured_output("PTBTokenizer"), _own_session(ptbtokenizer):
            out = ptbtokenizer.PTBTokenizer().tokenize(entries)
    except OSError as exc:
        raise CaptioningError(
            f"PTB tokenizer failed ({exc}); check java and that pycocoevalcap's folder is writable"
        ) from exc
    bad = [i for i, cs in captions.items() if len(out.get(i, ())) != len(cs)]
    if bad:
        raise CaptioningError(
            f"PTB tokenizer output does not match its input (images {format_ids(bad)}); "
            "check that `java -version` works (DEBUG logging shows the tokenizer's output)"
        )
    return out


def _run_meteor(gts: dict[int, list[str]], res: dict[int, list[str]]) -> tuple[float, list[float]]:
    from pycocoevalcap.meteor import meteor as module

    with _own_session(module):
        meteor = module.Meteor()  # a persistent `java -jar meteor-1.5.jar -stdio` subprocess
    try:
        return meteor.compute_score(gts, res)
    finally:  # what Meteor.__del__ does, now, and safe if compute_score died holding its lock
        if meteor.lock.locked():
            meteor.lock.release()
        proc = meteor.meteor_p
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            with contextlib.suppress(OSError):
                stream.close()
        proc.kill()
        proc.wait()


def _run_spice(gts: dict[int, list[str]], res: dict[int, list[str]]) -> tuple[float, list[float]]:
    from pycocoevalcap.spice import spice

    with _captured_output("SPICE"), _own_session(spice):
        score, scores = spice.Spice().compute_score(gts, res)
    # Spice returns per-image scores in sorted-id order (COCOEvalCap mislabels them).
    by_id = {i: s["All"]["f"] for i, s in zip(sorted(gts), scores, strict=True)}
    return score, [by_id[i] for i in gts]


def coco_scores(
    references: References,
    predictions: Predictions,
    *,
    metrics: Sequence[str] = ("Bleu", "METEOR", "ROUGE_L", "CIDEr"),
    spice: bool = False,
    per_image: bool = False,
) -> ScoreReport:
    """Scores predictions with the official COCO caption scorers.

    Only the images in ``predictions`` are scored, each against its own
    references (CIDEr's document frequencies come from those images only).

    Args:
        references: ``{image_id: [reference captions]}``; may hold more images.
        predictions: ``{image_id: caption}``; every id needs references.
        metrics: scorers to run, among ``"Bleu"`` (BLEU-1..4), ``"METEOR"``,
            ``"ROUGE_L"``, ``"CIDEr"`` and ``"SPICE"`` (same as ``spice=True``).
        spice: also run SPICE (needs Java and the Stanford CoreNLP jars).
        per_image: also return per-image scores.

    Returns:
        A :class:`ScoreReport`.

    Raises:
        CaptioningError: an unknown metric, no predictions, ids without
            references, or a PTB tokenizer that cannot run.
    """
    unknown = [m for m in metrics if m not in _SCORERS]
    if unknown:
        raise CaptioningError(f"unknown metrics {unknown}; choose from {list(_SCORERS)}")
    ids = _checked_ids(references, predictions)
    wanted = [m for m in _SCORERS if m in metrics or (m == "SPICE" and spice)]
    notices: list[str] = []
    if shutil.which("java") is not None:
        tokenizer = "ptb"
        gts = _ptb_tokenize({i: list(references[i]) for i in ids})
        res = _ptb_tokenize({i: [predictions[i]] for i in ids})
    else:
        tokenizer = "project"
        notices.append("java not found: used the project tokenizer instead of the PTB tokenizer")
        gts = {i: [" ".join(tokenize(c)) for c in references[i]] for i in ids}
        res = {i: [" ".join(tokenize(predictions[i]))] for i in ids}
        notices += [f"{m} skipped: java not found" for m in ("METEOR", "SPICE") if m in wanted]
        wanted = [m for m in wanted if m not in ("METEOR", "SPICE")]
    absent = [p for p in _spice_jar_paths() if not p.is_file()] if "SPICE" in wanted else []
    if absent:  # Spice() would download the CoreNLP zip from nlp.stanford.edu
        wanted.remove("SPICE")
        notices.append(
            f"SPICE skipped: Stanford CoreNLP jars missing from {absent[0].parent} (run "
            "`python -m pycocoevalcap.spice.get_stanford_models` once with internet access)"
        )

    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    scores: dict[str, float] = {}
    images: dict[int, dict[str, float]] = {i: {} for i in ids}

    def record(key: str, score: float, per: Sequence[float]) -> None:
        scores[key] = float(score)
        for i, value in zip(ids, per, strict=True):
            images[i][key] = float(value)

    for name in wanted:
        if name == "Bleu":  # verbose=0 only silences its prints
            bleu, bleu_per = Bleu(4).compute_score(gts, res, verbose=0)
            for n in range(4):
                record(f"Bleu_{n + 1}", bleu[n], bleu_per[n])
        elif name in ("ROUGE_L", "CIDEr"):
            record(name, *(Rouge() if name == "ROUGE_L" else Cider()).compute_score(gts, res))
        else:
            try:
                record(name, *(_run_meteor if name == "METEOR" else _run_spice)(gts, res))
            except (OSError, ValueError, KeyError, subprocess.SubprocessError) as exc:
                notices.append(f"{name} failed: {type(exc).__name__}: {exc}".splitlines()[0])
    for notice in notices:
        logger.warning(notice)
    return ScoreReport(scores, images if per_image else {}, notices, len(ids), tokenizer)


def nltk_bleu(references: References, predictions: Predictions) -> dict[str, float]:
    """Corpus BLEU-1..4 from NLTK's ``corpus_bleu`` on :func:`captioning.text.tokenize` tokens.

    Each prediction is compared with all the references of its image and n-gram
    counts are pooled over the images. No smoothing: if no n-gram of some order
    matches anywhere, that BLEU and the higher ones are ~0 (NLTK gives about 1e-78).

    Args and Raises: as :func:`coco_scores`.

    Returns:
        ``{"nltk_Bleu_1": ..., "nltk_Bleu_2": ..., "nltk_Bleu_3": ..., "nltk_Bleu_4": ...}``.
    """
    from nltk.translate.bleu_score import corpus_bleu

    ids = _checked_ids(references, predictions)
    refs = [[tokenize(c) for c in references[i]] for i in ids]
    hyps = [tokenize(predictions[i]) for i in ids]
    weights = [tuple([1.0 / n] * n) for n in range(1, 5)]
    with warnings.catch_warnings(record=True) as caught:  # its zero-overlap warnings
        warnings.simplefilter("always")
        values = corpus_bleu(refs, hyps, weights=weights)
    for w in caught:
        logger.debug("nltk: %s", str(w.message).strip())
    return {f"nltk_Bleu_{n}": float(v) for n, v in enumerate(values, start=1)}


def evaluate_captions(
    references: References,
    predictions: Predictions,
    *,
    metrics: Sequence[str] = ("Bleu", "METEOR", "ROUGE_L", "CIDEr"),
    spice: bool = False,
    per_image: bool = False,
) -> ScoreReport:
    """All the metrics: :func:`coco_scores`, with :func:`nltk_bleu` added to ``scores``.

    Args, Returns and Raises: as :func:`coco_scores` (``per_image`` has no NLTK scores).
    """
    report = coco_scores(references, predictions, metrics=metrics, spice=spice, per_image=per_image)
    report.scores.update(nltk_bleu(references, predictions))
    return report
