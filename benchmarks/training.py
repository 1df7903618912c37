"""Training benchmark: the frozen-encoder feature cache, and the encoder against the machine's peak.

1. One epoch of decoder training on the same shapes images, same batches, same process: from
   the feature cache versus recomputing the frozen VGG-16 (random weights, 224 px) for every
   batch, for two LSTM decoders (512/512): Show-and-Tell's (fc7 as the first input) and the
   lectures' (fc7 injected at every step, so the decoder itself costs more). The cache is
   built once beforehand (timed too).
   Both run on one torch thread: on a shared, oversubscribed CPU two spin-waiting OpenMP
   threads make the small decoder kernels erratic (up to 100x slower), which would measure the
   machine's load rather than the cache; both sides are GEMM-bound, so the ratio carries over.
2. VGG-16 encoder forward at 224 px: images/s, and the GFLOP/s that achieves (forward FLOPs
   counted layer by layer, 2 per multiply-add) over the GFLOP/s of a large float32 GEMM (the
   better of MKL's and oneDNN's), measured interleaved with it on the process's thread count -
   how close the encoder runs to what the machine does at best.

``python -m benchmarks training [--quick]``; ``run(quick)`` returns ``rows`` and ``markdown``.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from captioning.data.coco import load_coco_captions
from captioning.data.datasets import CaptionDataset
from captioning.data.features import FeatureCaptionDataset, build_feature_cache
from captioning.data.loader import build_train_loader, start_epoch
from captioning.data.shapes import generate_shapes
from captioning.data.transforms import eval_transform
from captioning.models.caption_model import CaptionModel
from captioning.models.decoder import RNNDecoder
from captioning.models.encoder import vgg16
from captioning.training import TrainLoop
from captioning.training.optim import build_optimizer
from captioning.vocab import Vocabulary

DECODERS = {
    "first_input": "Show-and-Tell decoder (fc7 as first input)",
    "every_step": "lecture decoder (fc7 at every step)",
}
ENCODER_CONFIG = {
    "_target_": "captioning.models.encoder.vgg16",
    "weights": None,
    "image_size": 224,
    "trainable": False,
}


def forward_macs(model: nn.Module, images: torch.Tensor) -> int:
    """Multiply-adds of one forward pass per image, counted over Conv2d and Linear layers."""
    total = 0

    def count(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            per_output = (
                module.in_channels
                // module.groups
                * module.kernel_size[0]
                * (module.kernel_size[1])
            )
            total += out.numel() * per_output
        elif isinstance(module, nn.Linear):
            total += out.numel() * module.in_features

    hooks = [
        m.register_forward_hook(count)
        for m in model.modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    ]
    with torch.no_grad():
        model(images)
    for hook in hooks:
        hook.remove()
    return total // images.shape[0]


def _best_seconds(fn: Any, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


@torch.no_grad()
def encoder_vs_gemm(encoder: nn.Module, batch: int, repeats: int, n: int = 2048) -> tuple:
    """Best images/s of the encoder's forward (eval, no grad) at its input size, and best
    GFLOP/s of an n x n x n float32 GEMM (2 n^3 FLOPs) two ways, measured alternately with it:
    ``torch.mm`` (the BLAS, MKL in PyTorch's wheels) and a 1x1 convolution (the same GEMM in
    oneDNN, the library that runs the encoder's convolutions; on AMD CPUs it beats MKL)."""
    side = encoder.image_size
    images = torch.randn(batch, 3, side, side)
    a, b = torch.randn(n, n), torch.randn(n, n)
    pixels = torch.randn(1, n, n // 64, 64)  # n pixels of n channels
    kernel = torch.randn(n, n, 1, 1)
    enc = mm = conv = float("inf")
    for _ in range(repeats):
        enc = min(enc, _best_seconds(lambda: encoder(images), 1))
        mm = min(mm, _best_seconds(lambda: a @ b, 2))
        conv = min(conv, _best_seconds(lambda: F.conv2d(pixels, kernel), 2))
    return batch / enc, 2 * n**3 / mm / 1e9, 2 * n**3 / conv / 1e9


def _epoch_seconds(model: CaptionModel, loader: Any, optimizer: Any, epoch: int) -> float:
    start_epoch(loader, epoch)
    start = time.perf_counter()
    TrainLoop(model, optimizer, device=torch.device("cpu"), grad_clip=5.0).run_epoch(loader)
    return time.perf_counter() - start


def run(quick: bool) -> dict[str, Any]:
    """Run both measurements; ``quick`` uses 16 images and fewer repeats (a smoke run)."""
    n_images, batch, repeats = (16, 8, 1) if quick else (64, 8, 2)
    with tempfile.TemporaryDirectory() as tmp:
        root = generate_shapes(Path(tmp) / "shapes", train=n_images, val=0, test=0, seed=0)
        records = load_coco_captions(root / "annotations" / "captions_train.json", root / "images")
        vocab = Vocabulary.build(c for r in records for c in r.captions)
        torch.manual_seed(0)
        encoder = vgg16(weights=None, trainable=False)
        transform = eval_transform(encoder.preprocess)
        start = time.perf_counter()
        store = build_feature_cache(
            Path(tmp) / "cache",
            encoder,
            records,
            transform,
            encoder_config=ENCODER_CONFIG,
            with_grid=False,
            batch_size=batch,
            progress=False,
        )
        build_seconds = time.perf_counter() - start
        loaders = {
            "images": build_train_loader(
                CaptionDataset(records, vocab, transform), batch_size=batch
            ),
            "cache": build_train_loader(
                FeatureCaptionDataset(store, records, vocab), batch_size=batch
            ),
        }
        epochs = {}
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            for injection in DECODERS:
                decoder = RNNDecoder(
                    vocab_size=len(vocab),
                    vector_dim=encoder.vector_dim,
                    embed_dim=512,
                    hidden_dim=512,
                    dropout=0.5,
                    image_injection=injection,
                )
                model = CaptionModel(encoder, decoder)
                optimizer = build_optimizer(model, lr=1e-3)
                times: dict[str, list[float]] = {"images": [], "cache": []}
                for epoch in range(1, repeats + 1):  # interleaved: the same machine load
                    for name, loader in loaders.items():
                        times[name].append(_epoch_seconds(model, loader, optimizer, epoch))
                epochs[injection] = {k: statistics.median(v) for k, v in times.items()}
        finally:
            torch.set_num_threads(threads)

        encoder.eval()
        side = encoder.image_size
        macs = forward_macs(encoder, torch.randn(1, 3, side, side))
        images_per_s, mm, conv = encoder_vs_gemm(encoder, batch, repeats + 1)
    achieved, peak = images_per_s * 2 * macs / 1e9, max(mm, conv)
    n_captions = sum(len(r.captions) for r in records)
    rows = []
    for injection, label in DECODERS.items():
        seconds = epochs[injection]
        rows += [
            {
                "measure": f"{label}: epoch recomputing VGG-16 every batch ({n_images} images, "
                f"{n_captions} captions, 1 thread)",
                "value": round(seconds["images"], 3),
                "unit": "s",
            },
            {
                "measure": f"{label}: epoch from the feature cache (same batches)",
                "value": round(seconds["cache"], 4),
                "unit": "s",
            },
            {
                "measure": f"{label}: speed-up per epoch from the cache",
                "value": round(seconds["images"] / seconds["cache"], 1),
                "unit": "x",
            },
        ]
    rows += [
        {
            "measure": f"one-off cache build ({n_images} images)",
            "value": round(build_seconds, 2),
            "unit": "s",
        },
        {
            "measure": f"VGG-16 forward at {side} px, batch {batch}, {threads} threads",
            "value": round(images_per_s, 2),
            "unit": "images/s",
        },
        {
            "measure": f"VGG-16 forward FLOPs per image (counted; {macs / 1e9:.2f} GMACs)",
            "value": round(2 * macs / 1e9, 2),
            "unit": "GFLOP",
        },
        {"measure": "VGG-16 forward achieved", "value": round(achieved, 1), "unit": "GFLOP/s"},
        {
            "measure": "float32 GEMM 2048^3, torch.mm (MKL)",
            "value": round(mm, 1),
            "unit": "GFLOP/s",
        },
        {
            "measure": "float32 GEMM 2048^3, oneDNN (1x1 convolution)",
            "value": round(conv, 1),
            "unit": "GFLOP/s",
        },
        {
            "measure": "VGG-16 forward / best GEMM (the machine's matmul peak)",
            "value": round(achieved / peak, 2),
            "unit": "ratio",
        },
    ]
    lines = ["| measure | value | unit |", "|---|---:|---|"]
    lines += [f"| {r['measure']} | {r['value']} | {r['unit']} |" for r in rows]
    return {"rows": rows, "markdown": "\n".join(lines) + "\n"}
