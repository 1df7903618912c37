"""Train a captioning model: ``captioning-train [group=option ...] [key=value ...]``.

With no arguments it trains the embedded default (shapes data, CPU-sized model) and evaluates the
best checkpoint on the test split. Everything lands in hydra's run directory: ``.hydra/``
(resolved config), ``train.log``, ``vocab.json``, ``metrics.csv``, ``checkpoints/{last,best}.pt``
and ``test_scores.json``. The run itself is :class:`captioning.training.Trainer`; this file only
reads the command line (hydra composes ``conf/``), checks the config and reports.
``python tools/train.py`` and ``python -m captioning.cli.train`` run the same command.

    captioning-train decoder=gru trainer.epochs=3
    captioning-train experiment=sat_vgg16 data.root=/data/coco     # a COCO run on a GPU
    captioning-train trainer.resume=outputs/2026-11-21/21-13-34    # continue a run exactly
    captioning-train trainer.resume=outputs/2026-11-21/21-13-34 trainer.epochs=20   # longer
    torchrun --nproc_per_node=8 tools/train.py trainer.distributed=true ...   # DDP

A mistake in the configuration (unknown key or option, wrong type, value out of range, a path
that cannot be written) is one ``error:`` line and exit status 2, before any data is loaded and
before hydra makes the run's folder. The config is composed once (by hydra) and parsed once: the
:class:`CheckConfig` callback (``hydra.callbacks`` in ``conf/train.yaml``) parses it after
composition, before the folder exists, and hands the result to the run.

``trainer.resume=RUN`` continues a run with its own config (from ``RUN/checkpoints/last.pt``):
hydra's defaults are ignored, and an override is refused (one line) unless its key may change on
resume (:data:`captioning.training.resume.RESUMABLE`) or it repeats the run's value. The run
continues in RUN (``train.log`` appended, ``metrics.csv``, TensorBoard and checkpoints
continued; its ``.hydra/`` keeps the original config), not in a new ``outputs/DATE/TIME``. A run
stopped before its first checkpoint (while building the feature cache) starts again in its
folder from its ``.hydra/config.yaml``. SIGINT/SIGTERM at any phase saves what finished and
prints ``interrupted`` with the command that continues; an error after the run's folder exists
is written into its ``train.log`` too.
"""

from __future__ import annotations

import copy
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any, ClassVar, NoReturn

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write
from omegaconf.errors import OmegaConfBaseException

import captioning
from captioning.cli.resume import interrupted_message, resume_command, resumed
from captioning.data.loader import prepare_data
from captioning.errors import CaptioningError
from captioning.evaluation import format_table
from captioning.io import check_writable
from captioning.settings import unknown_key
from captioning.training import RunConfig, Trainer, parse_config
from captioning.training.config import RENAMED
from captioning.training.signals import exit_status

__all__ = ["CONF", "CheckConfig", "main", "report", "train"]

log = logging.getLogger(__name__)

#: hydra's config folder: conf/ beside the package, in a source checkout (an editable install)
CONF = Path(captioning.__file__).resolve().parents[1] / "conf"
_FULL_ERROR = "HYDRA_FULL_ERROR"
_SAVED: list[str | None] = []  # its value before _hydra_raises(True)


def _fail(message: str) -> NoReturn:
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    sys.exit(2)


def _hydra_message(exc: BaseException) -> str:
    """Hydra's (multi-line) composition error as one line, in the library's words where it is a
    key that does not exist (the key's new name when it moved, else the closest ones)."""
    text = " ".join(f"{exc} {exc.__cause__ or ''}".split())
    text = text.split(" Config search path:")[0].replace(" Available options in", "; options in")
    missing = re.search(r"Could not override '([^']+)'", text)
    if missing is None:
        return text
    key = missing.group(1)
    # the section hydra looked the key up in, as composed so far (when the section itself exists)
    cause = exc.__cause__
    parent = getattr(cause, "parent_node", None)
    known = []
    if isinstance(parent, DictConfig) and getattr(cause, "full_key", None) == key:
        known = [str(k) for k in parent if "." in key or k != "hydra"]
    return str(unknown_key(key, known, RENAMED))


def _hydra_raises(raises: bool) -> None:
    """Make hydra raise its errors instead of printing them (``HYDRA_FULL_ERROR``), or undo it.

    Set while hydra composes the config, so that a mistake reaches :func:`main` as an exception
    (one line); undone before the run starts, so the run's own errors are reported as hydra does.
    """
    if raises:
        _SAVED[:] = [os.environ.get(_FULL_ERROR)]
        os.environ[_FULL_ERROR] = "1"
    elif _SAVED:
        previous = _SAVED.pop()
        if previous is None:
            os.environ.pop(_FULL_ERROR, None)
        else:
            os.environ[_FULL_ERROR] = previous


def _check_output_dir(node: DictConfig, key: str) -> None:
    """Exit with one ``error:`` line when hydra's output folder (`key`) cannot be written.

    Hydra creates it after this and reports a failure as a traceback; this checks the folder
    first: the one configured, or the folder it goes in (the part before ``${...}``).
    """
    value = str(OmegaConf.to_container(node, resolve=False)["dir"])
    static = value.split("${", 1)[0]
    folder = (
        Path(static or ".") if "${" not in value or static.endswith("/") else Path(static).parent
    )
    try:
        check_writable(folder, key)
    except CaptioningError as exc:
        _fail(str(exc))


class CheckConfig(Callback):
    """Hydra callback: check the composed config once, after hydra composed it and before it makes
    the run's folder; a mistake is one ``error:`` line and exit status 2.

    A single run's parsed config goes to the run (:func:`train`), so it is parsed once. With
    ``--multirun`` only the sweep's folder is checked here; each job parses its own config.
    """

    #: the parsed config of the run about to start, for :func:`train`
    parsed: ClassVar[RunConfig | None] = None
    #: whether hydra has composed the config (errors before this are composition errors)
    composed: ClassVar[bool] = False
    #: a line for the run's log (how a resumed run was configured)
    note: ClassVar[str | None] = None

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Parse and check a single run's config, its data folder and its output folder."""
        CheckConfig.composed = True
        _hydra_raises(False)
        task = copy.deepcopy(config)  # what the run gets: the config without hydra's node
        with read_write(task), open_dict(task):
            del task["hydra"]
        try:
            if task.trainer.get("resume"):
                merged, CheckConfig.note = resumed(config, task)
                run = parse_config(merged)
            else:
                run = parse_config(task)
            if run.data.generate is None:  # a data set that must exist (the shapes data is made)
                prepare_data(run.data, generate=False)
        except CaptioningError as exc:
            _fail(str(exc))
        except (HydraException, OmegaConfBaseException) as exc:
            _fail(_hydra_message(exc))
        _check_output_dir(config.hydra.run, "hydra.run.dir")
        CheckConfig.parsed = run

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Check the sweep's output folder."""
        CheckConfig.composed = True
        _hydra_raises(False)
        _check_output_dir(config.hydra.sweep, "hydra.sweep.dir")


def report(summary: dict[str, Any], monitor: str) -> None:
    """Print the run directory, the best validation value, the test scores and a few captions."""
    print(f"\nrun directory: {summary['run_dir']}")
    print(f"best validation {monitor}: {summary['best']:.4f}")
    if "test" in summary:
        test = summary["test"]
        print(f"\ntest split ({test['num_images']} images, each decoded once):")
        print(format_table(test))
        print("\nexample captions:")
        for path, caption in summary["examples"]:
            print(f"  {path}: {caption}")


def _to_run_log(message: str, exc_info: Any = None, level: int = logging.ERROR) -> None:
    """Write `message` (and a traceback) into the run's ``train.log`` only (hydra's file
    handler): the terminal shows its own line."""
    record = logging.LogRecord(__name__, level, __file__, 0, message, None, exc_info)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


def train(cfg: DictConfig) -> None:
    """Hydra's task: train, then print the test scores and a few captions. An error is also
    written into the run's ``train.log``."""
    run, CheckConfig.parsed = CheckConfig.parsed, None
    note, CheckConfig.note = CheckConfig.note, None
    if note:
        log.info(note)
    try:
        if run is None:  # a --multirun job: its own config, parsed here
            run = parse_config(cfg)
        trainer = Trainer(run, run_dir=HydraConfig.get().runtime.output_dir)
        summary = trainer.fit()
    except CaptioningError as exc:
        _to_run_log(f"error: {' '.join(str(exc).split())}")
        _fail(str(exc))
    except Exception:
        _to_run_log("the run failed:", exc_info=sys.exc_info())
        raise
    if summary["interrupted"]:
        message = interrupted_message(summary, resume_command(summary["run_dir"]))
        _to_run_log(message, level=logging.WARNING)
        print(message, file=sys.stderr)
        sys.exit(exit_status(summary["interrupted"]))
    if int(os.environ.get("RANK", "0")) == 0:
        report(summary, trainer.config.trainer.monitor)


def main() -> int:
    """``captioning-train``: hydra's command line (overrides, ``--multirun``, ``--help``, ``--cfg``
    ...) on ``conf/train.yaml``; returns the exit status."""
    if not (CONF / "train.yaml").is_file():
        _fail(
            f"no training configs at {CONF}: captioning-train needs the source checkout's conf/ "
            "(install it with pip install -e .)"
        )
    run = hydra.main(config_path=str(CONF), config_name="train", version_base="1.3")(train)
    if any(a.startswith("-") for a in sys.argv[1:]):  # hydra's own flags and --multirun
        run()
        return 0
    CheckConfig.composed = False
    _hydra_raises(True)
    try:
        run()
    except (HydraException, OmegaConfBaseException) as exc:
        if CheckConfig.composed:
            raise
        _fail(_hydra_message(exc))
    finally:
        _hydra_raises(False)
    return 0


if __name__ == "__main__":  # python -m captioning.cli.train: the importable module's main, so
    from captioning.cli import train as command  # hydra's callback and the task share its state

    sys.exit(command.main())
