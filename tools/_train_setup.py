"""The parts of ``tools/train.py`` that turn config values into library objects: device and
precision, resume state, data and the feature cache, fine-tuning phases, the DDP objective.

Only ``tools/train.py`` imports this module; it reads configs with ``.get`` so that configs and
checkpoints written before a key existed keep working.
"""

from __future__ import annotations

import json
import logging
import math
import signal
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from torch.utils.data import Dataset

from captioning.checkpoint import load_checkpoint, restore_model
from captioning.data.coco import CaptionDataset, ImageRecord
from captioning.data.features import FeatureCaptionDataset, build_feature_cache, use_feature_cache
from captioning.data.images import MAX_PIXELS
from captioning.data.loader import load_split, prepare_data
from captioning.data.transforms import eval_transform, train_transform
from captioning.distributed import DistContext, barrier, broadcast_object
from captioning.engine import EpochStats, resolve_device
from captioning.errors import CaptioningError
from captioning.models.captioner import CaptionModel, build_model, resolve_target
from captioning.objective import CaptionObjective
from captioning.vocab import Vocabulary

log = logging.getLogger("train")

_AMP = {
    "none": None,
    "false": None,
    "null": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "auto": "auto",
}


def plain(cfg: DictConfig) -> dict[str, Any]:
    """The resolved config as plain containers, without hydra's own node."""
    config = OmegaConf.to_container(cfg, resolve=True)
    config.pop("hydra", None)
    return config


def training_device(name: str) -> torch.device:
    """``trainer.device`` as a device; asking for CUDA where there is none is an error."""
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CaptioningError(
            f"trainer.device={name} but no CUDA GPU is available here "
            "(torch.cuda.is_available() is False); use trainer.device=cpu or auto"
        )
    return resolve_device(name)


def check_writable(folder: Path, setting: str) -> None:
    """Create `folder` and write a probe file in it, so an unusable output folder is reported
    (one line, naming the setting to change) before any long work starts."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise CaptioningError(
            f"cannot write to {folder} ({exc.strerror or type(exc).__name__}); "
            f"set {setting} to a folder you can write to"
        ) from None


def check_targets(config: Mapping[str, Any]) -> None:
    """The encoder's and decoder's ``_target_`` exist under ``captioning.models`` (checked by
    import only, before data loading; building the model comes later)."""
    for part in ("encoder", "decoder"):
        resolve_target(config.get(part), part=part)


def bad_image_budget(data: Mapping[str, Any], images: int) -> int:
    """How many unreadable training images ``data.max_bad_image_fraction`` allows per epoch."""
    fraction = float(data.get("max_bad_image_fraction", 0.001))
    if not 0.0 <= fraction <= 1.0:
        raise CaptioningError(
            f"data.max_bad_image_fraction={fraction} must be between 0 and 1 (e.g. 0.001)"
        )
    return math.floor(fraction * images)


def check_finite(model: nn.Module, epoch: int, run_dir: Path) -> None:
    """Refuse to go on (and to checkpoint) with non-finite weights."""
    tensors = [*model.named_parameters(), *model.named_buffers()]  # BatchNorm statistics too
    bad = [n for n, t in tensors if t.is_floating_point() and not torch.isfinite(t).all()]
    if bad:
        raise CaptioningError(
            f"the model's weights became non-finite in epoch {epoch} ({', '.join(bad[:3])}); "
            f"nothing was saved, {run_dir / 'checkpoints' / 'last.pt'} is the last good model: "
            "lower optim.lr or set optim.grad_clip, then resume with trainer.resume"
        )


def configure_torch(trainer: Mapping[str, Any], device: torch.device) -> None:
    """CPU threads, cuDNN autotuning, TF32 matmuls and deterministic algorithms, as configured."""
    if trainer.get("threads"):
        torch.set_num_threads(int(trainer["threads"]))
    if trainer.get("deterministic"):
        torch.use_deterministic_algorithms(True, warn_only=True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = bool(trainer.get("cudnn_benchmark", True)) and not (
            trainer.get("deterministic")
        )
        tf32 = bool(trainer.get("tf32", True))
        torch.backends.cuda.matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32


def autocast_dtype(name: str, device: torch.device) -> torch.dtype | None:
    """``trainer.amp`` (auto | bf16 | fp16 | none) -> the autocast dtype (None: float32).

    ``auto``: bfloat16 on GPUs that support it, else float16 (with a GradScaler) on CUDA, and
    float32 on the CPU. ``bf16`` also runs on the CPU (used by the tests).
    """
    key = str(name).lower()
    if key not in _AMP:
        raise CaptioningError(f"trainer.amp={name!r}: use auto, bf16, fp16 or none")
    dtype = _AMP[key]
    if dtype == "auto":
        if device.type != "cuda":
            return None
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if dtype == torch.float16 and device.type != "cuda":
        raise CaptioningError("trainer.amp=fp16 needs a CUDA device; use bf16 or none on the CPU")
    if dtype == torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise CaptioningError("this GPU has no bfloat16 support; use trainer.amp=fp16 (or auto)")
    return dtype


def resume_source(value: Any) -> tuple[Path, Path | None] | None:
    """``trainer.resume`` -> (checkpoint file, run directory it belongs to, if any)."""
    if not value:
        return None
    path = Path(str(value))
    if path.is_dir():
        ckpt = path / "checkpoints" / "last.pt"
        if not ckpt.is_file():
            raise CaptioningError(f"trainer.resume={path}: no checkpoints/last.pt in that folder")
        return ckpt, path
    if not path.is_file():
        raise CaptioningError(f"trainer.resume={path}: no such run directory or checkpoint")
    return path, path.parent.parent if path.parent.name == "checkpoints" else None


def _differences(old: Any, new: Any, prefix: str) -> list[str]:
    """``key: old -> new`` for each leaf that differs between two config nodes."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        keys = sorted(set(old) | set(new), key=str)
        return [d for k in keys for d in _differences(old.get(k), new.get(k), f"{prefix}.{k}")]
    return [] if old == new else [f"{prefix}: {old!r} in the checkpoint, {new!r} now"]


def load_resume(
    path: Path, config: Mapping[str, Any], run_dir: Path | None = None
) -> dict[str, Any]:
    """Read the checkpoint to resume and check that it fits the configured model and run.

    Args:
        path: the checkpoint.
        config: this run's resolved config.
        run_dir: the run directory it is resumed in (its ``vocab.json`` must match), if known.

    Returns:
        The checkpoint.
    """
    ckpt = load_checkpoint(path)
    for part in ("encoder", "decoder"):
        diff = _differences(ckpt["config"].get(part), config.get(part), part)
        if diff:
            raise CaptioningError(
                f"trainer.resume={path}: the checkpoint's {part} config differs from this run's "
                f"({'; '.join(diff[:3])}); resume with the same {part} settings"
            )
    if ckpt.get("optimizer") is None:
        raise CaptioningError(
            f"trainer.resume={path}: the checkpoint has no optimizer state, so it cannot be "
            "resumed; start a new run instead"
        )
    saved = run_dir / "vocab.json" if run_dir is not None else None
    if saved is not None and saved.is_file():
        try:
            words = json.loads(saved.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            words = None
        if isinstance(words, list) and words != ckpt["vocab"]:
            raise CaptioningError(
                f"trainer.resume={path}: the checkpoint's vocabulary ({len(ckpt['vocab'])} words) "
                f"differs from the run's {saved} ({len(words)} words); resume from a checkpoint "
                "of that run"
            )
    if ckpt["config"].get("data") != config.get("data"):
        log.warning("resuming with a different data config than %s was trained with", path)
    return ckpt


def load_data(
    data: Mapping[str, Any], ckpt: dict | None, ctx: DistContext
) -> tuple[dict[str, list[ImageRecord]], Vocabulary]:
    """Train/val records, and the vocabulary (the checkpoint's when resuming)."""
    if ctx.is_main:  # a generated data set is written once
        prepare_data(data)
    barrier()
    if not ctx.is_main:
        prepare_data(data)
    records = {split: load_split(data, split) for split in ("train", "val")}
    if ckpt is not None:
        return records, Vocabulary(ckpt["vocab"])
    captions = (c for r in records["train"] for c in r.captions)
    return records, Vocabulary.build(captions, min_count=int(data.get("min_count", 1)))


def build(
    config: Mapping[str, Any],
    vocab: Vocabulary,
    ckpt: dict | None,
    device: torch.device,
    trainer: Mapping[str, Any],
) -> CaptionModel:
    """The model, with the checkpoint's weights when resuming, on `device`."""
    after = trainer.get("finetune_encoder_after")
    if after is not None and not config["encoder"].get("trainable", False):
        raise CaptioningError(
            f"trainer.finetune_encoder_after={after} needs encoder.trainable=true "
            "(and optionally encoder.fine_tune_from); there is nothing to fine-tune"
        )
    if ckpt is not None:
        model, _ = restore_model(ckpt, source=f"trainer.resume={trainer.get('resume')}")
    else:
        model = build_model(config, vocab_size=len(vocab))
    model = model.to(device)
    if trainer.get("channels_last"):
        model.encoder.to(memory_format=torch.channels_last)
    return model


def encoder_phase(cfg: DictConfig, model: CaptionModel, epoch: int) -> bool:
    """Whether the encoder learns in `epoch`; applies ``trainer.finetune_encoder_after``.

    With ``encoder.trainable=true`` and ``trainer.finetune_encoder_after=N`` the encoder is
    frozen for epochs 1..N and learns (``encoder.fine_tune_from`` on) from epoch N+1.
    """
    trainable = bool(cfg.encoder.get("trainable", False))
    after = cfg.trainer.get("finetune_encoder_after")
    if after is None or not trainable:  # (build() refused the second case)
        return trainable
    if not hasattr(model.encoder, "set_trainable"):
        raise CaptioningError("trainer.finetune_encoder_after needs an encoder with set_trainable")
    learns = epoch > int(after)
    model.encoder.set_trainable(learns, cfg.encoder.get("fine_tune_from") if learns else None)
    if learns and epoch == int(after) + 1:
        log.info(
            "epoch %d: encoder fine-tuning starts (from block %s)",
            epoch,
            cfg.encoder.get("fine_tune_from") or 1,
        )
    return learns


def objective(
    model: CaptionModel, cfg: DictConfig, vocab: Vocabulary, device: torch.device, ctx: DistContext
) -> nn.Module:
    """The training objective, wrapped in DDP (several processes) and torch.compile (if asked)."""
    module: nn.Module = CaptionObjective(
        model, pad_id=vocab.pad_id, label_smoothing=float(cfg.optim.get("label_smoothing", 0))
    )
    if ctx.world_size > 1:
        module = nn.parallel.DistributedDataParallel(
            module,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=bool(cfg.trainer.get("find_unused_parameters", False)),
        )
    if cfg.trainer.get("compile"):
        module = torch.compile(module)
    return module


def train_dataset(
    cfg: DictConfig,
    model: CaptionModel,
    records: list[ImageRecord],
    vocab: Vocabulary,
    device: torch.device,
    ctx: DistContext,
    stop: Any,
) -> Dataset | None:
    """Images, or the frozen encoder's cached features (None: the cache build was stopped)."""
    data, trainer = cfg.data, cfg.trainer
    augment = bool(data.get("augment", False))
    pre = model.encoder.preprocess
    frozen = not any(p.requires_grad for p in model.encoder.parameters())
    cached = use_feature_cache(
        data.get("feature_cache", "auto"),
        frozen=frozen,
        fine_tuning=trainer.get("finetune_encoder_after") is not None,
        augment=augment,
    )
    max_len, max_pixels = data.get("max_len"), data.get("max_pixels", MAX_PIXELS)
    if not cached:
        transform = train_transform(pre, augment=augment)
        return CaptionDataset(records, vocab, transform, max_len=max_len, max_pixels=max_pixels)
    cache_dir = Path(str(data.get("cache_dir", "cache/features")))
    if ctx.is_main:
        check_writable(cache_dir, "data.cache_dir (or data.feature_cache=false)")

    def build_cache() -> Any:
        return build_feature_cache(
            cache_dir,
            model.encoder,
            records,
            eval_transform(pre),
            encoder_config=cfg.encoder,
            with_grid=bool(getattr(model.decoder, "has_attention", False)),
            batch_size=int(trainer.eval_batch_size),
            num_workers=int(trainer.num_workers),
            device=device,
            channels_last=bool(trainer.get("channels_last", False)),
            progress=bool(trainer.progress) and ctx.is_main,
            should_stop=lambda: stop.signum is not None,
            max_pixels=max_pixels,
        )

    store = build_cache() if ctx.is_main else None  # rank 0 builds it ...
    if not broadcast_object(store is not None):  # (the other ranks wait here)
        return None
    if store is None:
        store = build_cache()  # ... and the others find it complete
    log.info("training the decoder from cached encoder features (%s)", store.folder)
    return FeatureCaptionDataset(store, records, vocab, max_len=max_len)


def restore(
    ckpt: dict | None, optimizer: Any, scheduler: Any, scaler: Any, ctx: DistContext, monitor: str
) -> dict[str, Any]:
    """Load optimizer / scheduler / scaler states; return the loop's counters to resume from."""
    if ckpt is None:
        return {
            "epoch": 0,
            "step": 0,
            "best": -float("inf"),
            "batch": 0,
            "partial": None,
            "rng": None,
        }
    if scaler is not None and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    try:
        optimizer.load_state_dict(ckpt["optimizer"])
        if ckpt.get("scheduler"):
            scheduler.load_state_dict(ckpt["scheduler"])
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        detail = " ".join(str(exc).split())[:160]
        raise CaptioningError(
            f"trainer.resume: the checkpoint's optimizer/schedule state does not fit this run's "
            f"optim settings ({detail}); resume with the optim config the run was trained with"
        ) from None
    state = ckpt.get("trainer_state") or {}
    per_rank = ckpt.get("rng_per_rank") or []
    return {
        "epoch": int(ckpt["epoch"]),
        "step": int(ckpt["step"]),
        "best": float(state.get("best", ckpt["metrics"].get(f"best_{monitor}", -float("inf")))),
        "batch": int(state.get("batch", 0)),
        "partial": state.get("partial"),
        "rng": per_rank[ctx.rank] if len(per_rank) == ctx.world_size else ckpt["rng"],
    }


def trainer_state(
    epoch: int, step: int, best: float, partial: EpochStats | None, loader: Any, scaler: Any
) -> dict[str, Any]:
    """What a checkpoint needs beyond model and optimizer to continue exactly.

    Args:
        epoch: epochs completed.
        step: optimizer steps taken.
        best: best monitored validation value so far.
        partial: the stats of an epoch stopped part-way (None at an epoch's end).
        loader: the training loader (its sampler and generator states are recorded).
        scaler: the GradScaler, if any.
    """
    batch, part = 0, None
    if partial is not None:
        batch = partial.steps + partial.skipped
        part = {
            "loss_sum": partial.loss_sum,
            "words": partial.words,
            "steps": partial.steps,
            "skipped": partial.skipped,
            "seconds": partial.seconds,
            "nonfinite": partial.nonfinite,
            "nonfinite_streak": partial.nonfinite_streak,
            "bad_images": partial.bad_images,
        }
    return {
        "trainer_state": {
            "epoch": epoch,
            "step": step,
            "best": best,
            "batch": batch,
            "partial": part,
        },
        "sampler": loader.sampler.state_dict(),
        "loader_generator": loader.generator.get_state(),
        "scaler": scaler.state_dict() if scaler is not None else None,
    }


def merge_stats(partial: Mapping[str, Any] | None, stats: EpochStats) -> EpochStats:
    """Add the part of an epoch done before a resume to the part done after it."""
    if not partial:
        return stats
    loss_sum = partial["loss_sum"] + stats.loss_sum
    words = partial["words"] + stats.words
    return EpochStats(
        loss=loss_sum / words if words else float("nan"),
        words=words,
        steps=partial["steps"] + stats.steps,
        seconds=partial["seconds"] + stats.seconds,
        skipped=partial["skipped"] + stats.skipped,
        interrupted=stats.interrupted,
        loss_sum=loss_sum,
        nonfinite=partial.get("nonfinite", 0) + stats.nonfinite,
        nonfinite_streak=stats.nonfinite_streak,
        bad_images=partial.get("bad_images", 0) + stats.bad_images,
    )


def stop_name(signum: int | None) -> str:
    """What stopped the run: a signal name, or ``"stop requested"`` (the test hook)."""
    return signal.Signals(signum).name if signum is not None else "stop requested"


def exit_status(name: str) -> int:
    """Shell convention: 128 + signal number (130 for SIGINT, 143 for SIGTERM)."""
    try:
        return 128 + int(signal.Signals[name])
    except KeyError:
        return 1
