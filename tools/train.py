"""Train a captioning model: ``python tools/train.py [group=option ...] [key=value ...]``.

With no arguments it trains the embedded default (shapes data, CPU-sized model) and evaluates the
best checkpoint on the test split. Everything lands in hydra's run directory: ``.hydra/``
(resolved config), ``train.log``, ``vocab.json``, ``metrics.csv``, ``checkpoints/{last,best}.pt``
and ``test_scores.json``. The run itself is :class:`captioning.training.Trainer`; this file only
composes the config (``conf/``), checks it and reports.

    python tools/train.py decoder=gru trainer.epochs=3
    python tools/train.py experiment=sat_vgg16 data.root=/data/coco     # a COCO run on a GPU
    python tools/train.py trainer.resume=outputs/2026-11-21/21-13-34    # continue a run exactly
    torchrun --nproc_per_node=8 tools/train.py trainer.distributed=true ...   # DDP

A mistake in the configuration (unknown key or option, wrong type, value out of range, a path
that cannot be written) is one ``error:`` line and exit status 2, before any data is loaded.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

import _common  # noqa: F401  (puts the repo on sys.path)
import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from captioning.data.loader import prepare_data
from captioning.errors import CaptioningError
from captioning.io import check_writable
from captioning.metrics import format_table
from captioning.settings import unknown_key
from captioning.training import Trainer, parse_config
from captioning.training.config import RENAMED
from captioning.training.signals import exit_status

CONF = Path(__file__).resolve().parents[1] / "conf"
log = logging.getLogger("train")


def _fail(message: str) -> None:
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    sys.exit(2)


def _hydra_message(exc: BaseException, overrides: list[str]) -> str:
    """Hydra's (multi-line) composition error as one line, in the library's words where it is a
    key that does not exist (the key's new name when it moved, else the closest ones)."""
    text = " ".join(f"{exc} {exc.__cause__ or ''}".split())
    text = text.split(" Config search path:")[0].replace(" Available options in", "; options in")
    missing = re.search(r"Could not override '([^']+)'", text)
    if missing is None:
        return text
    key = missing.group(1)
    section = key.rpartition(".")[0]
    rest = [a for a in overrides if not a.startswith(f"{key}=")]
    try:
        node = _compose(rest)
        for part in filter(None, section.split(".")):
            node = node[part]
        known = list(node.keys())
    except Exception:  # the section itself may be unknown: fall back to hydra's words
        known = []
    return str(unknown_key(key, known, RENAMED))


def _compose(overrides: list[str]) -> DictConfig:
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def check_config(argv: list[str]) -> None:
    """Compose the config as hydra will and check it: one ``error:`` line on any mistake.

    Skipped for ``--multirun`` sweeps and hydra's own flags (``--help``, ``--cfg``, ...).
    """
    if any(a.startswith("-") for a in argv):
        return
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    overrides = [a for a in argv if not a.startswith(("hydra.", "+hydra.", "++hydra."))]
    try:
        run = parse_config(_compose(overrides))
        if run.data.generate is None:  # a data set that must exist (the shapes data is made)
            prepare_data(run.data, generate=False)
    except CaptioningError as exc:
        _fail(str(exc))
    except (HydraException, OmegaConfBaseException) as exc:
        _fail(_hydra_message(exc, overrides))


def check_output_dir(argv: list[str]) -> None:
    """Exit with one ``error:`` line when hydra's output folder cannot be written.

    Hydra creates ``hydra.run.dir`` (``hydra.sweep.dir`` with ``--multirun``) before ``main``
    runs and reports a failure as a traceback; this checks the folder first: the one given on
    the command line, or the folder the default one goes in (the part before ``${...}``).
    """
    if any(a.startswith("-") and a not in ("-m", "--multirun") for a in argv):
        return  # --help, --cfg, ...: hydra writes nothing
    key = "hydra.sweep.dir" if {"-m", "--multirun"} & set(argv) else "hydra.run.dir"
    given = [a.split("=", 1)[1] for a in argv if a.lstrip("+").startswith(f"{key}=")]
    value = given[-1].strip("'\"") if given else ("multirun/" if "sweep" in key else "outputs/")
    static = value.split("${", 1)[0]
    folder = (
        Path(static or ".") if "${" not in value or static.endswith("/") else Path(static).parent
    )
    try:
        check_writable(folder, key)
    except CaptioningError as exc:
        _fail(str(exc))


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


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Entry point: train, then print the test scores and a few captions."""
    try:
        trainer = Trainer.from_config(cfg, run_dir=HydraConfig.get().runtime.output_dir)
        summary = trainer.fit()
    except CaptioningError as exc:
        _fail(str(exc))
    if summary["interrupted"]:
        print(
            f"interrupted ({summary['interrupted']}): checkpoints/last.pt is in "
            f"{summary['run_dir']}; continue with trainer.resume={summary['run_dir']}",
            file=sys.stderr,
        )
        sys.exit(exit_status(summary["interrupted"]))
    if int(os.environ.get("RANK", "0")) == 0:
        report(summary, trainer.config.trainer.monitor)


if __name__ == "__main__":
    check_config(sys.argv[1:])  # first: a mistake in the config writes nothing
    check_output_dir(sys.argv[1:])
    main()
