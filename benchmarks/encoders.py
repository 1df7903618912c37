"""Encoder benchmark: each encoder's forward throughput beside the machine's GEMM ceiling.

For VGG-16 (the reference row, as in ``benchmarks training``), ResNet-50/101/152 and a few
backbones by name (ConvNeXt-T, EfficientNet-B0, ViT-B/16), random weights, eval mode, no grad,
at 224 px: the best images/s over interleaved repeats, the forward FLOPs per image (counted by
``torch.utils.flop_counter``: 2 per multiply-add of every convolution and matrix product), the
GFLOP/s that achieves, and its ratio to the best float32 GEMM (MKL's ``torch.mm`` or oneDNN's
1x1 convolution, 2048^3) measured alternately with it - how close each encoder runs to what the
machine does at best. Each encoder has the same batch and thread count.

``python -m benchmarks encoders [--quick]``; ``run(quick)`` returns ``rows`` and ``markdown``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.training import encoder_vs_gemm
from captioning.models.backbone import backbone
from captioning.models.encoder import vgg16
from captioning.models.resnet import resnet50, resnet101, resnet152

ENCODERS = {
    "VGG-16 (encoder=vgg16)": lambda: vgg16(weights=None),
    "ResNet-50 (encoder=resnet50)": lambda: resnet50(weights=None),
    "ResNet-101 (encoder=resnet101)": lambda: resnet101(weights=None),
    "ResNet-152 (encoder=resnet152)": lambda: resnet152(weights=None),
    "ConvNeXt-T (encoder=backbone encoder.arch=convnext_tiny)": lambda: backbone(
        arch="convnext_tiny"
    ),
    "EfficientNet-B0 (encoder.arch=efficientnet_b0)": lambda: backbone(arch="efficientnet_b0"),
    "ViT-B/16 (encoder.arch=vit_b_16)": lambda: backbone(arch="vit_b_16"),
}
QUICK = ("VGG-16 (encoder=vgg16)", "ResNet-50 (encoder=resnet50)")


def forward_flops(encoder: nn.Module, side: int) -> int:
    """FLOPs of one image's forward pass (2 per multiply-add), counted by PyTorch.

    Counted with the fused attention fast path off and attention in its plain ("math") form:
    the counter sees neither inside ``torch._native_multi_head_attention`` (ViT's
    self-attention in eval mode: its projections are a third of ViT-B/16's work) nor the CPU's
    fused attention kernel; the timing runs the fast kernels."""
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        math = sdpa_kernel(SDPBackend.MATH)
        with torch.no_grad(), math, FlopCounterMode(display=False) as counter:
            encoder(torch.randn(1, 3, side, side))
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
    return int(counter.get_total_flops())


def run(quick: bool) -> dict[str, Any]:
    """Measure every encoder (``quick``: VGG-16 and ResNet-50, batch 2, one repeat)."""
    batch, repeats = (2, 1) if quick else (8, 3)
    names = QUICK if quick else tuple(ENCODERS)
    threads = torch.get_num_threads()
    rows, peak = [], 0.0
    measured = []
    for name in names:
        torch.manual_seed(0)
        encoder = ENCODERS[name]().eval()
        side = encoder.image_size
        flops = forward_flops(encoder, side)
        images_per_s, mm, conv = encoder_vs_gemm(encoder, batch, repeats)
        peak = max(peak, mm, conv)
        measured.append((name, side, flops, images_per_s, max(mm, conv)))
        del encoder
    for name, side, flops, images_per_s, gemm in measured:
        achieved = images_per_s * flops / 1e9
        rows.append(
            {
                "encoder": name,
                "px": side,
                "GFLOP/image": round(flops / 1e9, 2),
                "images/s": round(images_per_s, 2),
                "GFLOP/s": round(achieved, 1),
                "GEMM GFLOP/s (same minutes)": round(gemm, 1),
                "ratio to GEMM": round(achieved / gemm, 2),
            }
        )
    header = list(rows[0])
    lines = [
        f"Forward, eval, no grad, random weights, batch {batch}, {threads} threads; GEMM: the "
        "better of torch.mm and a 1x1 convolution, float32 2048^3, measured alternately with "
        f"each encoder (best of all: {peak:.1f} GFLOP/s).",
        "",
        "| " + " | ".join(header) + " |",
        "|---|" + "---:|" * (len(header) - 1),
    ]
    lines += ["| " + " | ".join(str(r[k]) for k in header) + " |" for r in rows]
    return {"rows": rows, "markdown": "\n".join(lines) + "\n"}
