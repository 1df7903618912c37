"""Builders the tests share: tiny configs, models and checkpoints, data files, the overfit harness,
and running the tools as a user does (a subprocess)."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
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
from torch import nn

from captioning.training.config import parse_config
from captioning.training.run_log import RunLog
from captioning.vocab import Vocabulary

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
        decoder: ``"rnn"`` (RNNDecoder, an LSTM unless ``cell=`` says otherwise),
            ``"attention"`` (AttentionDecoder) or ``"updown"`` (UpDownDecoder).
        width: vgg_tiny's channel width.
        image_size: input side in pixels.
        vector_dim: the image vector's size.
        max_len: adds ``decoding: {max_len: ...}`` when given.
        **decoder_settings: decoder keyword arguments (``embed_dim=8, hidden_dim=8`` by default).
    """
    target = {
        "rnn": "captioning.models.decoder.RNNDecoder",
        "attention": "captioning.models.attention_decoder.AttentionDecoder",
        "updown": "captioning.models.updown.UpDownDecoder",
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
#: every decoder we have: ``cell-injection`` (RNNDecoder), ``att-cell`` (AttentionDecoder) and
#: ``updown-lstm`` (UpDownDecoder)
RNN_CASES = [
    f"{cell}-{inj}"
    for cell in ("rnn", "lstm", "gru")
    for inj in ("every_step", "init_state", "first_input", "none")
]
ATT_CASES = [f"att-{cell}" for cell in ("lstm", "gru", "rnn")]
UPDOWN_CASES = ["updown-lstm"]
DECODERS = RNN_CASES + ATT_CASES + UPDOWN_CASES


def make_decoder(name: str, seed: int = 0, vocab_size: int = V) -> torch.nn.Module:
    """A tiny decoder in eval mode: ``cell-injection`` (RNNDecoder), ``att-cell`` or
    ``updown-lstm``."""
    from captioning.models.attention_decoder import AttentionDecoder
    from captioning.models.decoder import RNNDecoder
    from captioning.models.updown import UpDownDecoder

    torch.manual_seed(seed)
    kind, cell = name.split("-", 1)
    if kind == "updown":
        return UpDownDecoder(
            vocab_size=vocab_size,
            grid_dim=G,
            embed_dim=E,
            hidden_dim=H,
            attention_dim=7,
            dropout=0.0,
        ).eval()
    if kind == "att":
        return AttentionDecoder(
            vocab_size=vocab_size,
            grid_dim=G,
            cell=cell,
            embed_dim=E,
            hidden_dim=H,
            attention_dim=7,
            dropout=0.0,
        ).eval()
    return RNNDecoder(
        vocab_size=vocab_size,
        vector_dim=D,
        cell=kind,
        embed_dim=E,
        hidden_dim=H,
        image_injection=cell,
    ).eval()


def decoder_features(b: int = 4, seed: int = 0) -> Any:
    """An EncoderOutput of `b` random images for :func:`make_decoder`'s decoders."""
    from captioning.contracts import EncoderOutput

    g = torch.Generator().manual_seed(seed)
    return EncoderOutput(torch.randn(b, D, generator=g), torch.randn(b, L, G, generator=g))


def padded_features(counts: list[int], seed: int = 0) -> tuple[Any, list[Any]]:
    """Images with `counts` real regions each, padded to the largest count with a mask (the
    padding filled with large garbage, which masking must ignore), and each image alone,
    unpadded: (EncoderOutput (B, max K, G), [EncoderOutput (1, K_b, G)])."""
    from captioning.contracts import EncoderOutput

    g = torch.Generator().manual_seed(seed)
    k = max(counts)
    grid = torch.full((len(counts), k, G), 1e4)  # (B, K, G) garbage where there is no region
    mask = torch.zeros(len(counts), k, dtype=torch.bool)  # (B, K)
    vector = torch.randn(len(counts), D, generator=g)
    alone = []
    for b, n in enumerate(counts):
        grid[b, :n] = torch.randn(n, G, generator=g)
        mask[b, :n] = True
        alone.append(EncoderOutput(vector[b : b + 1], grid[b : b + 1, :n].clone()))
    return EncoderOutput(vector, grid, mask), alone


def caption_length(seq: list[int]) -> int:
    """Words up to and including `<end>`."""
    return seq.index(EOS) + 1 if EOS in seq else len(seq)


# -- builders several test modules share ------------------------------------------------------

CATEGORIES = [
    {"id": 1, "name": "person"},
    {"id": 6, "name": "bus"},
    {"id": 17, "name": "cat"},
    {"id": 18, "name": "dog"},
    {"id": 23, "name": "bear"},
    {"id": 58, "name": "hot dog"},
    {"id": 67, "name": "dining table"},
    {"id": 88, "name": "teddy bear"},
]

# image 1: person x2, dog; 2: teddy bear, hot dog, dining table; 3: bear, person, bus; 4: none
OBJECTS = {1: [1, 1, 18], 2: [88, 58, 67], 3: [23, 1, 6], 4: []}

CONFIG = {
    "encoder": {
        "_target_": "captioning.models.encoder.vgg_tiny",
        "width": 8,
        "image_size": 32,
        "vector_dim": 16,
    },
    "decoder": {
        "_target_": "captioning.models.decoder.RNNDecoder",
        "cell": "lstm",
        "embed_dim": 8,
        "hidden_dim": 16,
    },
    "decoding": {
        "beam_size": 1,
        "max_len": 6,
        "length_penalty": 0.0,
        "no_repeat_ngram_size": 0,
        "n_best": 1,
    },
}

VOCAB = Vocabulary.build(["a red circle", "a blue square", "a green triangle left of it"])

A, B_, C, D_, E_ = 4, 5, 6, 7, 8


class TableDecoder(nn.Module):
    """A bigram model with the step contract: log p(word | previous word) read from a table."""

    has_attention = False

    def __init__(self, probs: dict[int, dict[int, float]], vocab_size: int = 9) -> None:
        super().__init__()
        table = torch.full((vocab_size, vocab_size), 1.0 / vocab_size)  # unlisted rows: uniform
        for prev, row in probs.items():
            table[prev] = 0.0
            for word, p in row.items():
                table[prev, word] = p
            table[prev, E_] += 1.0 - sum(row.values())  # the rest of the mass: a word "E"
        self.logp = nn.Parameter(table.log(), requires_grad=False)

    def init_state(self, features, *, batch_size=None):
        return torch.zeros(1, features.vector.size(0) if features is not None else batch_size)

    def step(self, tokens, state, features):
        return self.logp[tokens], state, {}

    def reorder_state(self, state, index):
        return state.index_select(1, index)

    def score(self, seq: list[int]) -> float:
        return float(sum(self.logp[p, w] for p, w in zip([BOS, *seq], seq, strict=False)))


def random_captions(b: int = 5, t: int = 7, v: int = 20, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, t + 1, (b,), generator=g)
    captions = torch.randint(4, v, (b, t), generator=g)
    captions[:, 0] = 1
    for i, n in enumerate(lengths.tolist()):
        captions[i, n - 1], captions[i, n:] = 2, 0
    return captions, lengths


def html_scores(page: str) -> dict[int, list[float]]:
    """image id -> the numbers of its row (the metric columns)."""
    rows = re.findall(r'<tr data-image-id="(\d+)">(.*?)</tr>', page, flags=re.S)
    return {int(i): [float(v) for v in re.findall(r'data-value="([^"]*)"', row)] for i, row in rows}


def picture(size: tuple[int, int] = (48, 40), seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def records_with_bad_files(shapes_root, tmp_path, n_bad: int):
    """The shapes val records, with the first `n_bad` images replaced by broken files."""

    from captioning.data.coco import load_coco_captions
    from captioning.data.records import ImageRecord

    records = load_coco_captions(
        shapes_root / "annotations" / "captions_val.json", shapes_root / "images"
    )
    copies = []
    for k, record in enumerate(records):
        path = tmp_path / "imgs" / record.path.name
        path.parent.mkdir(exist_ok=True)
        if k < n_bad:
            path.write_bytes(record.path.read_bytes()[:100])  # truncated
        else:
            shutil.copy(record.path, path)
        copies.append(ImageRecord(record.image_id, path, record.captions))
    return copies


def metrics_run_dir(tmp_path: Path, epochs: int = 4) -> Path:
    """A run folder whose ``metrics.csv`` has `epochs` rows like training writes."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    log = RunLog(tmp_path, tensorboard=False)
    for e in range(1, epochs + 1):
        log.log_epoch(
            {
                "epoch": e,
                "step": 10 * e,
                "train_loss": 3.0 / e,
                "lr": 5e-4 * (epochs + 0.5 - e) / epochs,
                "val_loss": 3.2 - 0.1 * e,
                "val_Bleu_1": 0.1 * e,
                "val_Bleu_4": 0.05 * e,  # best at the last epoch
                "val_CIDEr": (0.3, 0.9, 0.6, 0.9)[(e - 1) % 4],  # best at epoch 2 (tied at 4)
                "val_num_images": 20,
            }
        )
    log.close()
    return tmp_path


def short_run_cfg(shapes_root: Path, *overrides: str):
    return tiny_cfg(
        shapes_root,
        "trainer.epochs=1",
        "trainer.max_train_batches=2",
        "trainer.batch_size=32",
        "trainer.test_after_training=false",
        "++trainer.tensorboard=false",
        *overrides,
    )


def captioner_data(run: Path) -> dict:
    """The data config a run's best checkpoint was trained with."""
    from captioning.checkpoint import load_checkpoint

    return load_checkpoint(run)["config"]["data"]


def write_bad_images(folder: Path) -> dict[str, Path]:
    """One file for each way an image can be unreadable."""
    folder.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(buf, "PNG")
    bad = {
        "text": folder / "notes.jpg",
        "truncated": folder / "cut.png",
        "empty": folder / "empty.png",
    }
    bad["text"].write_text("not an image at all")
    bad["truncated"].write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    bad["empty"].write_bytes(b"")
    return bad


def write_instances(path: Path, objects: dict[int, list[int]] = OBJECTS, **changes) -> Path:
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 9, "height": 9} for i in objects]
    anns = [
        {"id": 100 * i + k, "image_id": i, "category_id": c, "bbox": [0, 0, 1, 1], "iscrowd": 0}
        for i, cats in objects.items()
        for k, c in enumerate(cats)
    ]
    data = {"images": images, "annotations": anns, "categories": CATEGORIES, **changes}
    return write_json(path, data)


def write_karpathy(root: Path) -> Path:
    """A miniature dataset_coco.json with images under train2014/ and val2014/."""
    images, rng = [], np.random.default_rng(0)
    layout = [
        ("train", "train2014"),
        ("train", "train2014"),
        ("restval", "val2014"),
        ("val", "val2014"),
        ("test", "val2014"),
        ("test", "val2014"),
    ]
    for k, (split, folder) in enumerate(layout):
        name = f"COCO_{folder}_{k:012d}.jpg"
        (root / folder).mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(
            root / folder / name
        )
        sentences = [
            {"raw": f"A photo number {k} of a red thing. ", "tokens": ["x"]},
            {"raw": f"a red thing {k}", "tokens": ["x"]},
            {"raw": " ?! ", "tokens": []},
        ]
        images.append(
            {
                "filepath": folder,
                "filename": name,
                "imgid": k,
                "split": split,
                "cocoid": 1000 - k,
                "sentids": [],
                "sentences": sentences,
            }
        )
    path = root / "dataset_coco.json"
    path.write_text(json.dumps({"images": images, "dataset": "coco"}))
    return path


def write_rows(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def folder_data(root: Path, *overrides: str):
    cfg = compose_train("data=folder", f"data.root={root}", *overrides)
    return parse_config(cfg).data


# -- host synchronisations --------------------------------------------------------------------


def count_tokenizations(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """How many times each caption is tokenized from now on: :mod:`captioning.text`'s tokenizers
    patched with `monkeypatch` (chunks count their ASCII captions, the others go through
    ``tokenize``), also where modules import ``tokenize`` and where the reward scorers take it
    as a default argument (bound when they were defined)."""
    from captioning import rewards, text

    seen: Counter[str] = Counter()
    chunk, one = text._tokenize_chunk, text.tokenize

    def counted_chunk(captions: list[str]) -> Any:
        seen.update(c for c in captions if c.isascii() and "\x00" not in c)
        return chunk(captions)

    def counted_one(caption: str) -> list[str]:
        seen[caption] += 1
        return one(caption)

    monkeypatch.setattr(text, "_tokenize_chunk", counted_chunk)
    for module in ("captioning.text", "captioning.vocab", "captioning.rewards"):
        monkeypatch.setattr(f"{module}.tokenize", counted_one)
    for scorer in (rewards.CiderD, rewards.SelfCriticalReward):
        monkeypatch.setitem(scorer.__init__.__kwdefaults__, "tokenizer", counted_one)
    return seen


#: the Tensor methods that read a value back to the host: on a GPU each waits for the device
HOST_READS = ("item", "tolist", "numpy", "cpu", "__bool__", "__float__", "__int__", "__index__")
#: (file, function, method) -> why the tensors read there live on the host by design (no wait
#: on a GPU); only integer or 0-dimensional tensors are accepted there
HOST_SIDE_SITES = {
    ("optimizer.py", "_get_value", "item"): "torch.optim keeps the step count on the CPU",
    ("decoder.py", "forward", "cpu"): "a batch's caption lengths stay on the host (packing)",
    ("decoder.py", "_real_logits", "__bool__"): "padded positions, from those host lengths",
    ("stepping.py", "__init__", "cpu"): "an attention decoder's step schedule, from host lengths",
    ("stepping.py", "__init__", "__bool__"): "the same",
    ("stepping.py", "__init__", "tolist"): "the same",
    ("decoder.py", "_run", "__bool__"): "packing checks the host lengths",
    ("decoder.py", "_pad", "tolist"): "a PackedSequence's batch_sizes are on the host",
    ("scst.py", "_image_ids", "tolist"): "the image ids, once copied to the host",
    ("rewards.py", "_rows", "tolist"): "the sampled words, once copied to the host for the reward",
}


class HostSyncs:
    """Counts the reads of tensor values by the host (each a synchronisation with a GPU) while
    active: the Tensor methods of :data:`HOST_READS` and ``torch.cuda.synchronize``, patched with
    `monkeypatch`. Reads at :data:`HOST_SIDE_SITES` of integer or 0-dim tensors are host-side by
    design and kept apart (``host_side``); every other read is a sync (``syncs``: method, file,
    function, line)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import sys

        self.syncs: list[tuple[str, str, str, int]] = []
        self.host_side: list[tuple[str, str, str, int]] = []
        self.active = False
        for name in HOST_READS:
            original = getattr(torch.Tensor, name)

            def read(t, *args, _original=original, _name=name, **kwargs):
                if self.active:
                    frame = sys._getframe(1)
                    code = frame.f_code
                    site = (_name, Path(code.co_filename).name, code.co_name, frame.f_lineno)
                    host = (site[1], site[2], _name) in HOST_SIDE_SITES and (
                        not t.is_floating_point() or t.dim() == 0
                    )
                    (self.host_side if host else self.syncs).append(site)
                return _original(t, *args, **kwargs)

            monkeypatch.setattr(torch.Tensor, name, read)
        original_sync = torch.cuda.synchronize

        def synchronize(*args, **kwargs):
            if self.active:
                self.syncs.append(("synchronize", "", "", 0))
            return original_sync(*args, **kwargs)

        monkeypatch.setattr(torch.cuda, "synchronize", synchronize)

    def count(self, fn: Callable[[], Any]) -> int:
        """The syncs while `fn()` runs."""
        before, self.active = len(self.syncs), True
        try:
            fn()
        finally:
            self.active = False
        return len(self.syncs) - before
