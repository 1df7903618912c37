"""The command line's side of resuming and stopping a training run (``captioning-train``).

:func:`resumed`: ``trainer.resume=RUN`` takes the run's own config; only the keys in
:data:`~captioning.training.resume.RESUMABLE` may be overridden (an override that repeats the
run's value is accepted), and hydra's run folder becomes RUN. :func:`resume_command` and
:func:`interrupted_message`: the line a stopped run prints.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from captioning.checkpoint import load_checkpoint
from captioning.errors import CaptioningError
from captioning.training.resume import resume_source, resumed_config

__all__ = ["interrupted_message", "resume_command", "resumed"]


def _touched(config: DictConfig, task: DictConfig) -> list[str]:
    """What the command line overrode: its keys, and sections for its group choices (``""``, all
    of the config, for a group such as ``experiment`` that sets keys anywhere)."""
    overrides = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
    groups = config.hydra.runtime.choices
    return [
        (o.key_or_group if o.key_or_group in task else "")
        if o.key_or_group in groups
        else o.key_or_group
        for o in overrides
    ]


def resumed(config: DictConfig, task: DictConfig) -> tuple[dict[str, Any], str]:
    """``trainer.resume=RUN``: the run's own config with the overrides that may change on
    resume, and a line for the run's log; hydra's run folder becomes RUN (no new folder; its
    ``.hydra/`` is kept).

    Raises:
        CaptioningError: an override that may not change on resume, or nothing to resume.
    """
    value, touched = str(task.trainer.resume), _touched(config, task)
    if "trainer.init_from" in touched and task.trainer.init_from:
        raise CaptioningError(
            f"trainer.init_from={task.trainer.init_from} and trainer.resume={value}: resume "
            "continues a run from its own checkpoint; drop one of them"
        )
    path, fresh = Path(value), False
    if path.is_dir() and not (path / "checkpoints" / "last.pt").is_file():
        saved_yaml = path / ".hydra" / "config.yaml"  # stopped before its first checkpoint
        if not saved_yaml.is_file():
            raise CaptioningError(
                f"trainer.resume={path}: no checkpoints/last.pt and no .hydra/config.yaml in "
                "that folder, so it is not a run that can continue; pass a run directory or a "
                "checkpoint file"
            )
        saved = OmegaConf.to_container(OmegaConf.load(saved_yaml), resolve=True)
        fresh, run_dir = True, path
    else:
        ckpt, run_dir = resume_source(value)
        saved = load_checkpoint(ckpt)["config"]
    given = OmegaConf.to_container(task, resolve=True)
    merged = resumed_config(saved, given, touched, value)
    if fresh:  # nothing to restore: the run starts again, in its folder, as configured
        merged["trainer"].update(resume=None, init_from=saved["trainer"].get("init_from"))
    if run_dir is not None:
        configured = [o for o in config.hydra.overrides.hydra if o.startswith("hydra.run.dir=")]
        where = configured[-1].split("=", 1)[1] if configured else None
        if where is not None and Path(where).resolve() != run_dir.resolve():
            raise CaptioningError(
                f"hydra.run.dir={where}: trainer.resume={value} continues in the run's own "
                f"folder {run_dir}; drop hydra.run.dir (or start a new run there)"
            )
        with read_write(config.hydra), open_dict(config.hydra):
            config.hydra.run.dir = str(run_dir)
            config.hydra.output_subdir = None
    note = (
        f"trainer.resume={value}: {'starting again' if fresh else 'continuing'} with the run's "
        f"own config (command line: {' '.join(config.hydra.overrides.task)})"
    )
    return merged, note


def resume_command(run_dir: str) -> str:
    """The command that continues `run_dir`, spelt as this one was started."""
    script = sys.argv[0] if sys.argv else ""
    if Path(script).name == "captioning-train":
        program = ["captioning-train"]
    elif (
        script.endswith(".py")
        and Path(script).resolve() != (Path(__file__).parent / "train.py").resolve()
    ):
        program = ["python", script]
    else:
        program = ["python", "-m", "captioning.cli.train"]
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1:  # torchrun started it
        local = os.environ.get("LOCAL_WORLD_SIZE", str(world))
        program = ["torchrun", f"--nproc_per_node={local}", *program[1:]]
    return shlex.join([*program, f"trainer.resume={run_dir}"])


_SAVED_AT = {
    "feature cache": "the feature cache keeps the images encoded so far",
    "training": "checkpoints/last.pt holds every finished training batch",
    "validation": "checkpoints/last.pt holds the epoch's training; its validation runs again",
    "end of epoch": "the epoch is complete in checkpoints/last.pt",
    "test": "training is complete (checkpoints/best.pt, last.pt); the test split is scored again",
}


def interrupted_message(summary: dict[str, Any], command: str) -> str:
    """The line a stopped run prints: what stopped it, in which phase, what is saved, and the
    command that continues it."""
    phase = summary.get("phase") or "training"
    saved = _SAVED_AT.get(phase, _SAVED_AT["training"])
    return (
        f"interrupted ({summary['interrupted']}) during {phase}: {saved} in "
        f"{summary['run_dir']}; continue with: {command}"
    )
