"""Train a captioning model: ``python tools/train.py [group=option ...] [key=value ...]``.

With no arguments it trains the embedded default (shapes data, CPU-sized model) and evaluates the
best checkpoint on the test split. Everything lands in hydra's run directory:
``.hydra/`` (resolved config), ``train.log``, ``vocab.json``, ``metrics.csv``,
``checkpoints/{last,best}.pt`` and ``test_scores.json``.

COCO scale:

* ``data=coco_karpathy data.root=/data/coco encoder=vgg16 trainer=gpu``: a GPU run. With a frozen
  encoder and no augmentation the encoder's features are computed once into ``data.cache_dir``
  and the decoder trains from them (``data.feature_cache``).
* ``trainer.resume=RUN_DIR`` (or a checkpoint file) continues a run exactly where it stopped
  (model, optimizer, schedule, epoch, step, RNG and data order, mid-epoch included); SIGINT or
  SIGTERM during training writes ``checkpoints/last.pt`` before exiting.
* ``torchrun --nproc_per_node=G tools/train.py trainer.distributed=true ...``: DDP on G GPUs
  (per-GPU ``trainer.batch_size``); rank 0 writes checkpoints and logs, evaluation is sharded.

Faults: a training image that cannot be read is logged and skipped (the run stops when more than
``data.max_bad_image_fraction`` of an epoch's images fail); a step with a non-finite loss or
gradient is skipped, and ``trainer.max_nonfinite_steps`` of them in a row stop the run with
``checkpoints/last.pt`` left as the last good model. Configuration mistakes (paths, devices,
unwritable output folders, unknown model parts) are one ``error:`` line before any long work.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import random
import signal
import sys
import threading
from pathlib import Path
from typing import Any

import _common  # noqa: F401  (puts the repo on sys.path)
import _train_setup as setup
import hydra
import numpy as np
import torch
import torch.distributed as dist
from omegaconf import DictConfig, OmegaConf

from captioning.checkpoint import get_rng_state, save_checkpoint, set_rng_state
from captioning.data.images import MAX_PIXELS
from captioning.data.loader import build_eval_loader, build_train_loader, load_split, start_epoch
from captioning.data.transforms import eval_transform
from captioning.distributed import (
    DistContext,
    barrier,
    broadcast_object,
    cleanup_distributed,
    gather_objects,
    init_distributed,
    is_distributed,
)
from captioning.engine import NonFiniteLossError, evaluate, train_one_epoch
from captioning.errors import CaptioningError
from captioning.metrics import format_table
from captioning.optim import build_optimizer, build_scheduler, sampling_probability
from captioning.tracking import RunLog

log = logging.getLogger("train")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class StopOnSignal:
    """SIGINT / SIGTERM set a flag (training stops at the next batch and saves ``last.pt``);
    a second SIGINT interrupts at once. Handlers are only installed in the main thread."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        log.warning(
            "%s received: stopping after this batch and saving checkpoints/last.pt",
            signal.Signals(signum).name,
        )

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def train(
    cfg: DictConfig, run_dir: str | Path | None = None, *, should_stop: Any = None
) -> dict[str, Any]:
    """Run training as `cfg` says and return a summary.

    Args:
        cfg: the composed config (``conf/train.yaml``).
        run_dir: output folder; defaults to hydra's run directory (with ``trainer.resume``:
            the resumed run's directory).
        should_stop: test hook ``should_stop(epoch, batches_done) -> bool``, polled before each
            batch; ``True`` stops training like a SIGTERM does.

    Returns:
        ``run_dir``, ``best`` (monitored value), ``history`` (per epoch), ``interrupted``
        (None, or what stopped the run), and after a complete run ``test`` (scores) and
        ``examples`` (a few test captions).
    """
    device = setup.training_device(str(cfg.trainer.device))  # before any work
    ctx = DistContext()
    if cfg.trainer.get("distributed"):
        ctx = init_distributed(
            device.type,
            backend=cfg.trainer.get("dist_backend"),
            timeout_minutes=float(cfg.trainer.get("dist_timeout_minutes", 60)),
        )
        device = torch.device("cuda", ctx.local_rank) if device.type == "cuda" else device
    try:
        with StopOnSignal() as stop:
            return _train(cfg, run_dir, device, ctx, stop, should_stop)
    finally:
        cleanup_distributed()


def _train(
    cfg: DictConfig,
    run_dir: str | Path | None,
    device: torch.device,
    ctx: DistContext,
    stop: StopOnSignal,
    hook: Any,
) -> dict[str, Any]:
    trainer, data = cfg.trainer, cfg.data
    if not ctx.is_main:
        logging.getLogger().setLevel(logging.WARNING)
    seed_everything(int(cfg.seed))
    setup.configure_torch(trainer, device)
    amp_dtype = setup.autocast_dtype(str(trainer.get("amp", "none")), device)
    resume = setup.resume_source(trainer.get("resume"))
    if resume is not None and resume[1] is not None:
        run_dir = resume[1]
    elif run_dir is None:
        run_dir = hydra.core.hydra_config.HydraConfig.get().runtime.output_dir
    run_dir = Path(broadcast_object(str(run_dir)))
    config = setup.plain(cfg)
    if ctx.is_main:  # before any long work: the output folder and the model parts
        where = "hydra.run.dir" if resume is None or resume[1] is None else "trainer.resume"
        setup.check_writable(run_dir, where)
    setup.check_targets(config)
    ckpt = setup.load_resume(resume[0], config, run_dir) if resume is not None else None

    records, vocab = setup.load_data(data, ckpt, ctx)
    model = setup.build(config, vocab, ckpt, device, trainer)
    if ctx.is_main:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        vocab.save(run_dir / "vocab.json")
    log.info(
        "data %s: %d train / %d val images; vocabulary %d words; model %.2fM parameters on %s%s",
        data.name,
        len(records["train"]),
        len(records["val"]),
        len(vocab),
        sum(p.numel() for p in model.parameters()) / 1e6,
        device,
        f" x {ctx.world_size} processes" if ctx.world_size > 1 else "",
    )
    if ctx.world_size > 1:
        seed_everything(int(cfg.seed) + ctx.rank)  # ranks draw different dropout masks

    dataset = setup.train_dataset(cfg, model, records["train"], vocab, device, ctx, stop)
    if dataset is None:  # the feature-cache build was interrupted (it resumes next time)
        return {
            "run_dir": str(run_dir),
            "best": -float("inf"),
            "history": [],
            "interrupted": setup.stop_name(stop.signum),
        }
    pin = device.type == "cuda"
    workers = int(trainer.num_workers)
    max_pixels = data.get("max_pixels", MAX_PIXELS)
    max_bad = setup.bad_image_budget(data, len(dataset) // ctx.world_size)
    max_nonfinite = trainer.get("max_nonfinite_steps", 20)
    train_loader = build_train_loader(
        dataset,
        batch_size=int(trainer.batch_size),
        seed=int(cfg.seed),
        rank=ctx.rank,
        world_size=ctx.world_size,
        num_workers=workers,
        pin_memory=pin,
    )
    val_loader = build_eval_loader(
        records["val"][ctx.rank :: ctx.world_size],
        eval_transform(model.encoder.preprocess),
        batch_size=int(trainer.eval_batch_size),
        num_workers=workers,
        pin_memory=pin,
        max_pixels=max_pixels,
    )
    val_refs = {r.image_id: list(r.captions) for r in records["val"]}

    optim = cfg.optim
    optimizer = build_optimizer(
        model,
        name=str(optim.get("name", "adam")),
        lr=float(optim.lr),
        encoder_lr=optim.get("encoder_lr"),
        weight_decay=float(optim.get("weight_decay", 0.0)),
    )
    max_batches = trainer.get("max_train_batches")
    steps_per_epoch = min(len(train_loader), int(max_batches or len(train_loader)))
    scheduler = build_scheduler(
        optimizer,
        schedule=str(optim.get("schedule", "none")),
        warmup_steps=int(optim.get("warmup_steps", 0)),
        step_size_epochs=int(optim.get("step_size", 3)),
        gamma=float(optim.get("gamma", 0.8)),
        steps_per_epoch=steps_per_epoch,
        epochs=int(trainer.epochs),
    )
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
    state = setup.restore(ckpt, optimizer, scheduler, scaler, ctx, str(trainer.monitor))
    decoding = OmegaConf.to_container(cfg.decoding, resolve=True)
    monitor, best, step = str(trainer.monitor), state["best"], state["step"]
    run_log = None
    if ctx.is_main:
        run_log = RunLog(
            run_dir,
            tensorboard=bool(trainer.get("tensorboard", True)),
            resume=ckpt is not None,
            resume_epoch=state["epoch"],
        )
    history = list(run_log.rows) if run_log is not None else []
    ss = dict(trainer.get("scheduled_sampling") or {})
    learns, objective, interrupted = None, None, None
    streak = int((state["partial"] or {}).get("nonfinite_streak", 0))
    if ckpt is not None:
        set_rng_state(state["rng"])  # last: model building above drew random numbers
        log.info(
            "resuming %s at epoch %d, batch %d (best %s %.4f)",
            run_dir,
            state["epoch"] + 1,
            state["batch"],
            monitor,
            best,
        )

    for epoch in range(state["epoch"] + 1, int(trainer.epochs) + 1):
        phase = setup.encoder_phase(cfg, model, epoch)
        if phase != learns:  # (re)wrap for DDP / compile when the trainable set changes
            learns, objective = phase, setup.objective(model, cfg, vocab, device, ctx)
        skip = state["batch"] if epoch == state["epoch"] + 1 else 0
        start_epoch(train_loader, epoch, skip_batches=skip)
        total = len(train_loader) if not max_batches else max(int(max_batches) - skip, 0)
        batches = itertools.islice(train_loader, total)
        polls = itertools.count(skip)

        def should_stop(epoch: int = epoch, polls: Any = polls) -> bool:
            done = next(polls)
            return stop.signum is not None or bool(hook is not None and hook(epoch, done))

        try:
            stats = train_one_epoch(
                model,
                batches,
                optimizer,
                device=device,
                grad_clip=optim.get("grad_clip"),
                pad_id=vocab.pad_id,
                epoch=epoch,
                progress=bool(trainer.progress) and ctx.is_main,
                objective=objective,
                scheduler=scheduler,
                autocast_dtype=amp_dtype,
                scaler=scaler,
                sample_prob=sampling_probability(epoch, **ss),
                should_stop=should_stop,
                channels_last=bool(trainer.get("channels_last", False)),
                total=total,
                max_bad_images=max_bad,
                max_nonfinite_steps=int(max_nonfinite) if max_nonfinite else None,
                nonfinite_streak=streak,
            )
        except NonFiniteLossError as exc:
            last = run_dir / "checkpoints" / "last.pt"
            kept = f"{last} (epoch {epoch - 1}) is kept" if last.is_file() else "nothing saved"
            raise CaptioningError(
                f"{exc} (trainer.max_nonfinite_steps={max_nonfinite}); {kept}: lower optim.lr, "
                "set optim.grad_clip or check the data, then resume with trainer.resume"
            ) from None
        streak = stats.nonfinite_streak
        setup.check_finite(model, epoch, run_dir)
        step += stats.steps
        stats = setup.merge_stats(state["partial"] if skip else None, stats)
        if stats.interrupted:
            interrupted = setup.stop_name(stop.signum)
            extra = setup.trainer_state(epoch - 1, step, best, stats, train_loader, scaler)
            _save(
                run_dir,
                ("last.pt",),
                ctx,
                model,
                config,
                vocab,
                optimizer,
                scheduler,
                extra,
                metrics={f"best_{monitor}": best},
            )
            log.warning(
                "stopped in epoch %d after %d batches: checkpoints/last.pt written; "
                "resume with trainer.resume=%s",
                epoch,
                stats.steps + stats.skipped,
                run_dir,
            )
            break
        scores, _ = evaluate(model, val_loader, vocab, val_refs, device=device, decoding=decoding)
        if monitor not in scores:
            raise CaptioningError(
                f"trainer.monitor={monitor!r} is not a validation metric; "
                f"choose one of {sorted(scores)}"
            )
        row = {
            "epoch": epoch,
            "step": step,
            "train_loss": stats.loss,
            "epoch_seconds": stats.seconds,
            "lr": scheduler.get_last_lr()[0],
            **{f"val_{k}": v for k, v in scores.items()},
        }
        history.append(row)
        improved = scores[monitor] > best
        best = max(best, scores[monitor])
        faults = [
            f"{n} {what}"
            for n, what in (
                (stats.nonfinite, "non-finite steps skipped"),
                (stats.bad_images, "unreadable images skipped"),
            )
            if n
        ]
        log.info(
            "epoch %d: loss %.3f (%.0f s, %.0f words/s) | val %s %.4f, CIDEr %.3f%s%s",
            epoch,
            stats.loss,
            stats.seconds,
            stats.words / max(stats.seconds, 1e-9),
            monitor,
            scores[monitor],
            scores.get("CIDEr", float("nan")),
            " (best)" if improved else "",
            f" | {', '.join(faults)}" if faults else "",
        )
        if run_log is not None:
            run_log.log_epoch(row)
        extra = setup.trainer_state(epoch, step, best, None, train_loader, scaler)
        metrics = {**scores, f"best_{monitor}": best}
        names = ("last.pt", "best.pt") if improved else ("last.pt",)
        _save(run_dir, names, ctx, model, config, vocab, optimizer, scheduler, extra, metrics)
        signals = [s for s in gather_objects(stop.signum) if s is not None]  # any rank's
        if signals:
            interrupted = setup.stop_name(signals[0])
            break

    if run_log is not None:
        run_log.close()
    summary: dict[str, Any] = {
        "run_dir": str(run_dir),
        "best": best,
        "history": history,
        "interrupted": interrupted,
    }
    if interrupted is None and trainer.get("test_after_training"):
        barrier()  # best.pt is on disk
        summary.update(test_best(cfg, run_dir, device))
    return summary


def _save(
    run_dir: Path,
    names: tuple[str, ...],
    ctx: DistContext,
    model: torch.nn.Module,
    config: dict[str, Any],
    vocab: Any,
    optimizer: Any,
    scheduler: Any,
    extra: dict[str, Any],
    metrics: dict[str, float],
) -> None:
    """Write checkpoints on rank 0 (every rank takes part: the RNG states are gathered)."""
    rng = gather_objects(get_rng_state())  # every rank's generators, in rank order
    if not ctx.is_main:
        return
    state = extra["trainer_state"]
    for name in names:
        save_checkpoint(
            run_dir / "checkpoints" / name,
            model=model.state_dict(),
            config=config,
            vocab=vocab.to_list(),
            epoch=state["epoch"],
            step=state["step"],
            metrics=metrics,
            optimizer=optimizer.state_dict(),
            scheduler=scheduler.state_dict(),
            rng=rng[0],
            extra={**extra, "rng_per_rank": rng},
        )


def test_best(cfg: DictConfig, run_dir: Path, device: torch.device) -> dict[str, Any]:
    """Score the best checkpoint on the test split (each image decoded once, sharded over ranks)."""
    from captioning.inference import Captioner

    ctx = DistContext()
    if is_distributed():
        ctx = DistContext(dist.get_rank(), 0, dist.get_world_size())
    captioner = Captioner.from_checkpoint(run_dir / "checkpoints" / "best.pt", device=str(device))
    test = load_split(cfg.data, "test")
    pre = captioner.model.encoder.preprocess
    loader = build_eval_loader(
        test[ctx.rank :: ctx.world_size],
        eval_transform(pre),
        batch_size=int(cfg.trainer.eval_batch_size),
        max_pixels=cfg.data.get("max_pixels", MAX_PIXELS),
    )
    scores, predictions = evaluate(
        captioner.model,
        loader,
        captioner.vocab,
        {r.image_id: list(r.captions) for r in test},
        device=device,
        decoding=captioner.decoding,
        metrics=("Bleu", "METEOR", "ROUGE_L", "CIDEr"),
    )
    if ctx.is_main:
        (run_dir / "test_scores.json").write_text(json.dumps(scores, indent=2) + "\n")
        results = [{"image_id": i, "caption": c} for i, c in sorted(predictions.items())]
        (run_dir / "test_results.json").write_text(json.dumps(results) + "\n")
    paths = {r.image_id: r.path for r in test}
    examples = [(str(paths[i]), predictions[i]) for i in sorted(predictions)[:5]]
    return {"test": scores, "examples": examples}


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Entry point: train, then print the test scores and a few captions."""
    try:
        summary = train(cfg)
    except CaptioningError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    if summary["interrupted"]:
        print(
            f"interrupted ({summary['interrupted']}): checkpoints/last.pt is in "
            f"{summary['run_dir']}; continue with trainer.resume={summary['run_dir']}",
            file=sys.stderr,
        )
        sys.exit(setup.exit_status(summary["interrupted"]))
    if int(os.environ.get("RANK", "0")) != 0:
        return
    print(f"\nrun directory: {summary['run_dir']}")
    print(f"best validation {cfg.trainer.monitor}: {summary['best']:.4f}")
    if "test" in summary:
        test = summary["test"]
        print(f"\ntest split ({test['num_images']} images, each decoded once):")
        print(format_table(test))
        print("\nexample captions:")
        for path, caption in summary["examples"]:
            print(f"  {path}: {caption}")


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
        setup.check_writable(folder, key)
    except CaptioningError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    check_output_dir(sys.argv[1:])
    main()
