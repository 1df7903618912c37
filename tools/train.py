"""Train a captioning model: ``python tools/train.py [group=option ...] [key=value ...]``.

With no arguments it trains the embedded default (shapes data, CPU-sized model) and evaluates the
best checkpoint on the test split. Everything lands in hydra's run directory:
``.hydra/`` (resolved config), ``train.log``, ``vocab.json``, ``metrics.csv``,
``checkpoints/{last,best}.pt`` and ``test_scores.json``.
"""

from __future__ import annotations

import csv
import itertools
import json
import logging
import random
import sys
from pathlib import Path
from typing import Any

import _common  # noqa: F401  (puts the repo on sys.path)
import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from captioning.checkpoint import get_rng_state, save_checkpoint
from captioning.data.loader import build_eval_loader, build_loaders, load_split, prepare_data
from captioning.data.transforms import eval_transform, train_transform
from captioning.engine import evaluate, resolve_device, train_one_epoch
from captioning.errors import CaptioningError
from captioning.metrics import format_table
from captioning.models.captioner import build_model
from captioning.vocab import Vocabulary

log = logging.getLogger("train")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _plain(cfg: DictConfig) -> dict[str, Any]:
    config = OmegaConf.to_container(cfg, resolve=True)
    config.pop("hydra", None)
    return config


def train(cfg: DictConfig, run_dir: str | Path | None = None) -> dict[str, Any]:
    """Run training as `cfg` says and return a summary.

    Args:
        cfg: the composed config (``conf/train.yaml``).
        run_dir: output folder; defaults to hydra's run directory.

    Returns:
        ``run_dir``, ``best`` (monitored value), ``history`` (per epoch), ``test`` (scores) and
        ``examples`` (a few test captions).
    """
    if run_dir is None:
        run_dir = hydra.core.hydra_config.HydraConfig.get().runtime.output_dir
    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    config = _plain(cfg)
    trainer, optim, data = cfg.trainer, cfg.optim, cfg.data
    seed_everything(int(cfg.seed))
    if trainer.get("threads"):
        torch.set_num_threads(int(trainer.threads))
    device = resolve_device(str(trainer.device))

    prepare_data(data)
    records = {split: load_split(data, split) for split in ("train", "val")}
    vocab = Vocabulary.build((c for r in records["train"] for c in r.captions),
                             min_count=int(data.min_count))
    vocab.save(run_dir / "vocab.json")
    model = build_model(config, vocab_size=len(vocab)).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("data %s: %d train / %d val images; vocabulary %d words; model %.2fM parameters on %s",
             data.name, len(records["train"]), len(records["val"]), len(vocab), n_params / 1e6,
             device)

    pre = model.encoder.preprocess
    loaders = build_loaders(
        train_records=records["train"], eval_records={"val": records["val"]}, vocab=vocab,
        train_transform=train_transform(pre), eval_transform=eval_transform(pre),
        batch_size=int(trainer.batch_size), eval_batch_size=int(trainer.eval_batch_size),
        max_len=data.get("max_len"), num_workers=int(trainer.num_workers),
        pin_memory=device.type == "cuda", seed=int(cfg.seed),
    )
    references = {"val": loaders["val"].dataset.references()}
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad],
                                 lr=float(optim.lr), weight_decay=float(optim.weight_decay))
    decoding = OmegaConf.to_container(cfg.decoding, resolve=True)
    monitor, best, step, history = str(trainer.monitor), -float("inf"), 0, []

    for epoch in range(1, int(trainer.epochs) + 1):
        batches = loaders["train"]
        if trainer.get("max_train_batches"):
            batches = itertools.islice(batches, int(trainer.max_train_batches))
        stats = train_one_epoch(
            model, batches, optimizer, device=device, grad_clip=optim.get("grad_clip"),
            pad_id=vocab.pad_id, label_smoothing=float(optim.get("label_smoothing", 0.0)),
            epoch=epoch, progress=bool(trainer.progress),
        )
        step += stats.steps
        scores, _ = evaluate(model, loaders["val"], vocab, references["val"], device=device,
                             decoding=decoding)
        if monitor not in scores:
            raise CaptioningError(f"trainer.monitor={monitor!r} is not a validation metric; "
                                  f"choose one of {sorted(scores)}")
        row = {"epoch": epoch, "step": step, "train_loss": stats.loss,
               "epoch_seconds": stats.seconds, **{f"val_{k}": v for k, v in scores.items()}}
        history.append(row)
        improved = scores[monitor] > best
        best = max(best, scores[monitor])
        log.info("epoch %d: loss %.3f (%.0f s, %.0f words/s) | val %s %.4f, CIDEr %.3f%s",
                 epoch, stats.loss, stats.seconds, stats.words / max(stats.seconds, 1e-9), monitor,
                 scores[monitor], scores.get("CIDEr", float("nan")), " (best)" if improved else "")
        _append_csv(run_dir / "metrics.csv", row)
        payload = dict(model=model.state_dict(), config=config, vocab=vocab.to_list(), epoch=epoch,
                       step=step, metrics={**scores, f"best_{monitor}": best},
                       optimizer=optimizer.state_dict(), scheduler=None, rng=get_rng_state())
        save_checkpoint(ckpt_dir / "last.pt", **payload)
        if improved:
            save_checkpoint(ckpt_dir / "best.pt", **payload)

    summary: dict[str, Any] = {"run_dir": str(run_dir), "best": best, "history": history}
    if trainer.get("test_after_training"):
        summary.update(test_best(cfg, run_dir, device))
    return summary


def test_best(cfg: DictConfig, run_dir: Path, device: torch.device) -> dict[str, Any]:
    """Score the best checkpoint on the test split (each image decoded once)."""
    from captioning.inference import Captioner

    captioner = Captioner.from_checkpoint(run_dir / "checkpoints" / "best.pt", device=str(device))
    test = load_split(cfg.data, "test")
    pre = captioner.model.encoder.preprocess
    loader = build_eval_loader(test, eval_transform(pre),
                               batch_size=int(cfg.trainer.eval_batch_size))
    scores, predictions = evaluate(captioner.model, loader, captioner.vocab,
                                   loader.dataset.references(), device=device,
                                   decoding=captioner.decoding,
                                   metrics=("Bleu", "METEOR", "ROUGE_L", "CIDEr"))
    (run_dir / "test_scores.json").write_text(json.dumps(scores, indent=2) + "\n")
    results = [{"image_id": i, "caption": c} for i, c in sorted(predictions.items())]
    (run_dir / "test_results.json").write_text(json.dumps(results) + "\n")
    paths = {r.image_id: r.path for r in test}
    examples = [(str(paths[i]), predictions[i]) for i in sorted(predictions)[:5]]
    return {"test": scores, "examples": examples}


def _append_csv(path: Path, row: dict[str, Any]) -> None:
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> None:
    """Entry point: train, then print the test scores and a few captions."""
    try:
        summary = train(cfg)
    except CaptioningError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(f"\nrun directory: {summary['run_dir']}")
    print(f"best validation {cfg.trainer.monitor}: {summary['best']:.4f}")
    if "test" in summary:
        test = summary["test"]
        print(f"\ntest split ({test['num_images']} images, each decoded once):")
        print(format_table(test))
        print("\nexample captions:")
        for path, caption in summary["examples"]:
            print(f"  {path}: {caption}")


if __name__ == "__main__":
    main()
