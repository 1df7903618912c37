"""Builders the tests share: tiny configs, models and checkpoints, data files, the overfit harness,
and running the tools as a user does (a subprocess)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"  # data files the tests read
TOOLS = ROOT / "tools"
HAS_JAVA = shutil.which("java") is not None
needs_java = pytest.mark.skipif(not HAS_JAVA, reason="java not found (PTB tokenizer, METEOR)")

# -- training configs -------------------------------------------------------------------------

# The embedded default shrunk to seconds: the session's small shapes set (`shapes_root`), an
# 8-channel vgg_tiny, a 16/32 decoder, no progress bars. Each test adds what it needs.
TINY = [
    "data.sizes.train=120",
    "data.sizes.val=20",
    "data.sizes.test=20",
    "data.seed=3",
    "encoder.width=8",
    "encoder.vector_dim=32",
    "decoder.embed_dim=16",
    "decoder.hidden_dim=32",
    "trainer.progress=false",
]
# on top of TINY: 32 px images, small batches, 3 batches an epoch, one thread, no test
SMALL = [
    "encoder.image_size=32",
    "trainer.batch_size=8",
    "trainer.max_train_batches=3",
    "trainer.test_after_training=false",
    "trainer.tensorboard=false",
    "trainer.threads=1",
]


def compose_train(*overrides: str) -> DictConfig:
    """``conf/train.yaml`` composed with hydra `overrides`, as ``tools/train.py`` would."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def tiny_cfg(shapes_root: Path, *overrides: str) -> DictConfig:
    """The tiny training config on the shapes data at `shapes_root`, plus `overrides`."""
    return compose_train(f"data.root={shapes_root}", *TINY, *overrides)


def small_cfg(shapes_root: Path, *overrides: str) -> DictConfig:
    """:func:`tiny_cfg` with :data:`SMALL`: a training run of a few seconds."""
    return tiny_cfg(shapes_root, *SMALL, *overrides)


def fit(cfg: Any, run_dir: Path | None = None, **kwargs: Any) -> dict[str, Any]:
    """Train as the library's users do: ``Trainer.from_config(cfg, ...).fit()``."""
    from captioning.training import Trainer

    return Trainer.from_config(cfg, run_dir=run_dir, **kwargs).fit()


# -- models and checkpoints ---------------------------------------------------------------------


def tiny_model_config(
    *,
    decoder: str = "rnn",
    width: int = 4,
    image_size: int = 16,
    vector_dim: int = 8,
    max_len: int | None = None,
    **decoder_settings: Any,
) -> dict[str, Any]:
    """An encoder + decoder config of a few thousand parameters (vgg_tiny + LSTM or attention).

    Args:
        decoder: ``"rnn"`` (RNNDecoder, an LSTM unless ``cell=`` says otherwise) or
            ``"attention"`` (AttentionDecoder).
        width: vgg_tiny's channel width.
        image_size: input side in pixels.
        vector_dim: the image vector's size.
        max_len: adds ``decoding: {max_len: ...}`` when given.
        **decoder_settings: decoder keyword arguments (``embed_dim=8, hidden_dim=8`` by default).
    """
    target = {
        "rnn": "captioning.models.decoder.RNNDecoder",
        "attention": "captioning.models.attention_decoder.AttentionDecoder",
    }[decoder]
    config: dict[str, Any] = {
        "encoder": {
            "_target_": "captioning.models.encoder.vgg_tiny",
            "width": width,
            "image_size": image_size,
            "vector_dim": vector_dim,
        },
        "decoder": {"_target_": target, "embed_dim": 8, "hidden_dim": 8, **decoder_settings},
    }
    if max_len is not None:
        config["decoding"] = {"max_len": max_len}
    return config


WORDS = ["a red circle", "a blue square", "a green triangle"]


def tiny_checkpoint(
    path: Path, config: dict[str, Any] | None = None, words: list[str] = WORDS, **fields: Any
) -> Path:
    """A small but complete checkpoint, as training writes it (seeded: the same every time)."""
    from captioning.checkpoint import save_checkpoint
    from captioning.models.caption_model import build_model
    from captioning.vocab import Vocabulary

    config = config or tiny_model_config(cell="gru", max_len=5)
    vocab = Vocabulary.build(words)
    torch.manual_seed(0)
    model = build_model(config, vocab_size=len(vocab))
    return save_checkpoint(
        path,
        model=model.state_dict(),
        config=config,
        vocab=vocab.to_list(),
        epoch=fields.pop("epoch", 1),
        step=fields.pop("step", 3),
        optimizer=torch.optim.Adam(model.parameters()).state_dict(),
        **fields,
    )


def evil_checkpoint(path: Path, marker: Path) -> Path:
    """A checkpoint whose unpickling would create `marker` (if anything unpickled it)."""

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    torch.save(
        {
            "format_version": 1,
            "model": {},
            "config": {},
            "vocab": [],
            "epoch": 0,
            "step": 0,
            "payload": Evil(),
        },
        path,
    )
    return path


# -- the overfit harness ------------------------------------------------------------------------


def caption_loss(logits: torch.Tensor, targets: torch.Tensor, pad_id: int = 0) -> torch.Tensor:
    """Mean cross-entropy per real (non-`<pad>`) target word: logits (B, T, V), targets (B, T)."""
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=pad_id)


def overfit(
    loss_of: Callable[[], torch.Tensor], parameters: Any, *, steps: int, lr: float
) -> torch.Tensor:
    """Adam on `parameters` for `steps` steps of ``loss_of()``; returns the last loss."""
    opt = torch.optim.Adam(list(parameters), lr=lr)
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        loss = loss_of()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return loss.detach()


def fixed_captions(b: int, words: int, vocab_size: int, seed: int = 5) -> torch.Tensor:
    """(b, words + 2) random captions ``<start> w1 .. wn <end>`` to overfit."""
    g = torch.Generator().manual_seed(seed)
    return torch.cat(
        [
            torch.ones(b, 1, dtype=torch.long),
            torch.randint(4, vocab_size, (b, words), generator=g),
            torch.full((b, 1), 2),
        ],
        dim=1,
    )


# -- data files ---------------------------------------------------------------------------------


def write_json(path: Path, data: object) -> Path:
    """Write `data` as JSON to `path`; returns the path."""
    path.write_text(json.dumps(data))
    return path


def write_coco(
    folder: Path, name: str, captions: dict[str, list[str]], *, size: int = 32, start_id: int = 1
) -> Path:
    """Write JPEG images and a COCO caption file; returns the annotation file path."""
    rng = np.random.default_rng(start_id)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for k, (file_name, caps) in enumerate(captions.items()):
        image_id = start_id + k
        pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / "images" / file_name)
        images.append({"id": image_id, "file_name": file_name, "width": size, "height": size})
        annotations += [
            {"id": image_id * 10 + j, "image_id": image_id, "caption": c}
            for j, c in enumerate(caps)
        ]
    path = folder / "annotations" / f"captions_{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"images": images, "annotations": annotations}))
    return path


# -- the tools, as a user runs them -------------------------------------------------------------


def run_tool(
    name: str, *args: Any, timeout: int = 180, cwd: Path | None = None, **env: str
) -> subprocess.CompletedProcess:
    """``python tools/<name> args...`` in a subprocess (one torch thread, in `cwd`), output
    captured."""
    environ = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **env}
    return subprocess.run(
        [sys.executable, str(TOOLS / name), *map(str, args)],
        env=environ,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


def assert_one_line_error(out: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit status != 0, exactly one `error:` line on stderr (returned), no traceback."""
    assert out.returncode != 0, out.stderr
    assert "Traceback" not in out.stderr, out.stderr
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


def robust_cfg(root: Path, *overrides: str) -> DictConfig:
    """A training config of seconds for the fault tests: a GRU on a 4-channel vgg_tiny at 16 px,
    one epoch of two batches, no test split."""
    return compose_train(
        f"data.root={root}",
        "data.sizes.train=120",
        "data.sizes.val=20",
        "data.sizes.test=20",
        "data.seed=3",
        "encoder.width=4",
        "encoder.vector_dim=8",
        "encoder.image_size=16",
        "decoder.embed_dim=8",
        "decoder.hidden_dim=8",
        "decoder.cell=gru",
        "trainer.batch_size=8",
        "trainer.max_train_batches=2",
        "trainer.epochs=1",
        "trainer.progress=false",
        "trainer.test_after_training=false",
        "trainer.tensorboard=false",
        "trainer.threads=1",
        "decoding.max_len=5",
        *overrides,
    )


def torchrun_train(*overrides: Any, processes: int = 2) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc_per_node=N tools/train.py trainer.distributed=true ...``
    (gloo on the CPU, one thread per process), output captured."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={processes}",
            str(TOOLS / "train.py"),
            "trainer.distributed=true",
            *map(str, overrides),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def chromium_flags(profile: Path) -> list[str]:
    """Headless Chromium on a machine with no internet: no background requests, a fresh
    profile in `profile`."""
    return [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
    ]


# -- writers --------------------------------------------------------------------------------------


def write_image(path: Path, shade: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (12, 10), (shade % 256, 40, 90)).save(path)


def write_flickr(
    root: Path,
    sizes: dict[str, int],
    *,
    name: str = "dataset_flickr8k.json",
    folder: str | None = "Flicker8k_Dataset",
    images: bool = True,
) -> Path:
    """A Flickr-style Karpathy split file (imgid, filename, sentences; no cocoid, no filepath)
    and its images under `root/folder` (None: in `root`)."""
    entries, k, sentid = [], 0, 0
    for split, count in sizes.items():
        for _ in range(count):
            filename = f"{1000 + 37 * k}_{k:04x}.jpg"
            if images:
                write_image(root / (folder or "") / filename, k)
            sentences = []
            for j in range(5):
                raw = f"A dog number {k} runs in field {j} . "
                sentences.append(
                    {"tokens": raw.lower().split()[:-1], "raw": raw, "imgid": k, "sentid": sentid}
                )
                sentid += 1
            entries.append(
                {
                    "sentids": [s["sentid"] for s in sentences],
                    "imgid": k,
                    "sentences": sentences,
                    "split": split,
                    "filename": filename,
                }
            )
            k += 1
    path = root / name
    path.write_text(json.dumps({"images": entries, "dataset": name[8:-5]}))
    return path


# -- tiny decoders: the decoding tests' models --------------------------------------------------

V, E, H, D, L, G = 23, 8, 12, 10, 4, 6  # vocab, embed, hidden, vector, regions, grid dim
BOS, EOS, PAD = 1, 2, 0
#: every decoder we have: ``cell-injection`` (RNNDecoder) and ``att-cell`` (AttentionDecoder)
RNN_CASES = [
    f"{cell}-{inj}"
    for cell in ("rnn", "lstm", "gru")
    for inj in ("every_step", "init_state", "first_input", "none")
]
ATT_CASES = [f"att-{cell}" for cell in ("lstm", "gru", "rnn")]
DECODERS = RNN_CASES + ATT_CASES


def make_decoder(name: str, seed: int = 0) -> torch.nn.Module:
    """A tiny decoder in eval mode: ``cell-injection`` (RNNDecoder) or ``att-cell``."""
    from captioning.models.attention_decoder import AttentionDecoder
    from captioning.models.decoder import RNNDecoder

    torch.manual_seed(seed)
    kind, cell = name.split("-", 1)
    if kind == "att":
        return AttentionDecoder(
            vocab_size=V,
            grid_dim=G,
            cell=cell,
            embed_dim=E,
            hidden_dim=H,
            attention_dim=7,
            dropout=0.0,
        ).eval()
    return RNNDecoder(
        vocab_size=V, vector_dim=D, cell=kind, embed_dim=E, hidden_dim=H, image_injection=cell
    ).eval()


def decoder_features(b: int = 4, seed: int = 0) -> Any:
    """An EncoderOutput of `b` random images for :func:`make_decoder`'s decoders."""
    from captioning.contracts import EncoderOutput

    g = torch.Generator().manual_seed(seed)
    return EncoderOutput(torch.randn(b, D, generator=g), torch.randn(b, L, G, generator=g))


def caption_length(seq: list[int]) -> int:
    """Words up to and including `<end>`."""
    return seq.index(EOS) + 1 if EOS in seq else len(seq)
