"""Bad inputs give the project's own one-line errors, and nothing is lost."""

import io
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import evil_checkpoint
from PIL import Image

from captioning.checkpoint import load_checkpoint
from captioning.data.images import ImageLoadError, load_image
from captioning.errors import CaptioningError

ROOT = Path(__file__).resolve().parents[1]


def _seed_images() -> list[bytes]:
    rng = np.random.default_rng(0)
    out = []
    for fmt, mode in [
        ("PNG", "RGB"),
        ("PNG", "RGBA"),
        ("PNG", "L"),
        ("PNG", "P"),
        ("JPEG", "RGB"),
        ("JPEG", "L"),
        ("JPEG", "CMYK"),
    ]:
        pixels = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
        image = Image.fromarray(pixels).convert(mode)
        buf = io.BytesIO()
        image.save(buf, format=fmt)
        out.append(buf.getvalue())
    return out


def _mutate(data: bytes, rng: np.random.Generator) -> bytes:
    buf = bytearray(data)
    kind = rng.integers(0, 4)
    if kind == 0:  # flip random bytes
        for _ in range(int(rng.integers(1, 20))):
            buf[int(rng.integers(0, len(buf)))] = int(rng.integers(0, 256))
    elif kind == 1:  # truncate
        buf = buf[: int(rng.integers(0, len(buf)))]
    elif kind == 2:  # splice a random chunk
        at = int(rng.integers(0, len(buf)))
        buf[at:at] = rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
    else:  # overwrite a header region
        at = int(rng.integers(0, min(64, len(buf))))
        buf[at : at + 8] = rng.integers(0, 256, 8, dtype=np.uint8).tobytes()
    return bytes(buf)


def test_fuzzed_images_load_or_raise_our_error(tmp_path):
    """A few hundred mutated PNG/JPEG files: each loads as RGB or raises ImageLoadError."""
    rng = np.random.default_rng(1234)
    seeds = _seed_images()
    loaded = failed = 0
    for i in range(300):
        data = _mutate(seeds[i % len(seeds)], rng)
        path = tmp_path / f"f{i}.{'png' if i % len(seeds) < 4 else 'jpg'}"
        path.write_bytes(data)
        try:
            image = load_image(path)
        except ImageLoadError as exc:
            assert path.name in str(exc) and "\n" not in str(exc)
            failed += 1
        else:
            assert image.mode == "RGB" and min(image.size) > 0
            loaded += 1
    assert loaded > 0 and failed > 0  # the mutations exercise both outcomes


WRITER = """
import sys, torch
from captioning.checkpoint import save_checkpoint
path, = sys.argv[1:]
big = {f"w{i}": torch.randn(256, 256) for i in range(64)}   # ~16 MB: the write takes a while
print("ready", flush=True)
step = 1
while True:
    save_checkpoint(path, model=big, config={"step": step}, vocab=["<pad>"], epoch=step, step=step)
    step += 1
"""


@pytest.mark.slow
def test_sigkill_while_saving_leaves_a_readable_checkpoint(tmp_path):
    path = tmp_path / "last.pt"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for delay in (0.3, 0.7, 1.1, 1.6):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)], env=env, stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout.readline().strip() == "ready"
        while not path.exists():
            time.sleep(0.01)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        ckpt = load_checkpoint(path)  # the previous complete checkpoint, never a torn one
        assert ckpt["config"]["step"] == ckpt["step"] and len(ckpt["model"]) == 64
        assert torch.isfinite(ckpt["model"]["w0"]).all()


# -- shared helpers -------------------------------------------------------------------------------

TOOLS = ROOT / "tools"
TINY_MODEL = {
    "encoder": {
        "_target_": "captioning.models.encoder.vgg_tiny",
        "width": 4,
        "image_size": 16,
        "vector_dim": 8,
    },
    "decoder": {
        "_target_": "captioning.models.decoder.RNNDecoder",
        "cell": "gru",
        "embed_dim": 8,
        "hidden_dim": 8,
    },
    "decoding": {"max_len": 5},
}
WORDS = ["a red circle", "a blue square", "a green triangle"]


def tiny_checkpoint(path: Path, config: dict | None = None, words=WORDS) -> Path:
    """A small but complete checkpoint, as training writes it."""
    from captioning.checkpoint import save_checkpoint
    from captioning.models.captioner import build_model
    from captioning.vocab import Vocabulary

    config = config or TINY_MODEL
    vocab = Vocabulary.build(words)
    torch.manual_seed(0)
    model = build_model(config, vocab_size=len(vocab))
    optimizer = torch.optim.Adam(model.parameters())
    return save_checkpoint(
        path,
        model=model.state_dict(),
        config=config,
        vocab=vocab.to_list(),
        epoch=1,
        step=3,
        optimizer=optimizer.state_dict(),
    )


def run_tool(name: str, *args: str, timeout: int = 180) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(TOOLS / name), *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
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


def png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height (a decompression bomb's first bytes)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )
    return path


# -- 1. images ----------------------------------------------------------------------------------------


def test_decompression_bombs_are_refused_before_decoding(tmp_path):
    bomb = png_header_only(tmp_path / "bomb.png", 12_000, 12_000)  # 144 M pixels, 432 MB as RGB
    with pytest.raises(ImageLoadError, match=r"bomb\.png.*exceeds max_pixels=100000000"):
        load_image(bomb)
    huge = png_header_only(tmp_path / "huge.png", 40_000, 40_000)  # over twice Pillow's limit
    with pytest.raises(ImageLoadError, match=r"huge\.png.*decompression bomb"):
        load_image(huge, max_pixels=None)  # Pillow's own limit still applies
    small = png_header_only(tmp_path / "small.png", 300, 200)
    with pytest.raises(ImageLoadError, match="60000 pixels exceeds max_pixels=50000"):
        load_image(small, max_pixels=50_000)


def test_captioner_preprocesses_what_it_can_and_names_the_rest(tmp_path):
    from captioning.inference import Captioner

    captioner = Captioner.from_checkpoint(
        tiny_checkpoint(tmp_path / "ck.pt"), device="cpu", max_pixels=5000
    )
    good = tmp_path / "good.png"
    Image.new("RGB", (40, 30), (200, 10, 10)).save(good)
    big = tmp_path / "big.png"
    Image.new("RGB", (100, 100)).save(big)
    bad = write_bad_images(tmp_path / "bad")
    inputs = [good, bad["text"], Image.new("L", (8, 8)), big, bad["empty"]]
    ok, failed = captioner.preprocess_many(inputs)
    assert [k for k, _ in ok] == [0, 2] and all(t.shape == (3, 16, 16) for _, t in ok)
    assert [k for k, _ in failed] == [1, 3, 4]
    for (k, exc), problem in zip(failed, ["not a recognised", "max_pixels", "empty"], strict=True):
        assert (
            isinstance(exc, ImageLoadError) and str(inputs[k]) in str(exc) and problem in str(exc)
        )
    assert isinstance(captioner.caption([t for _, t in ok]), list)  # tensors go straight in


def test_caption_tool_captions_a_folder_past_its_bad_files(tmp_path):
    ckpt = tiny_checkpoint(tmp_path / "ck.pt")
    folder = tmp_path / "photos"
    good = []
    for k, (mode, suffix) in enumerate(
        [("RGB", ".jpg"), ("L", ".png"), ("RGBA", ".png"), ("P", ".gif"), ("RGB", ".png")]
    ):
        path = folder / f"g{k}{suffix}"
        path.parent.mkdir(exist_ok=True)
        Image.new(mode, (20 + k, 30)).save(path)
        good.append(path)
    Image.new("RGB", (500, 500)).save(folder / "huge.png")  # fine, but over --max-pixels below
    bad = sorted([*write_bad_images(folder).values(), folder / "huge.png"])
    (folder / "readme.txt").write_text("ignored: not an image suffix")

    out = run_tool(
        "caption.py", "--checkpoint", ckpt, "--batch-size", "2", "--max-pixels", "10000", folder
    )
    assert out.returncode == 1 and "Traceback" not in out.stderr
    captioned = [line.split("\t")[0] for line in out.stdout.splitlines()]
    assert captioned == [str(p) for p in sorted(good)]  # every good image, in order
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == len(bad)  # one line per bad file, naming it
    assert sorted(next(str(p) for p in bad if str(p) in e) for e in errors) == [str(p) for p in bad]
    assert "4 of 9 files could not be read" in out.stderr

    skip = run_tool("caption.py", "--checkpoint", ckpt, "--skip-errors", folder)
    assert skip.returncode == 0 and len(skip.stdout.splitlines()) == len(good) + 1  # huge.png
    assert sum(line.startswith("error:") for line in skip.stderr.splitlines()) == len(bad) - 1


def _records_with_bad_files(shapes_root, tmp_path, n_bad: int):
    """The shapes val records, with the first `n_bad` images replaced by broken files."""
    import shutil

    from captioning.data.coco import ImageRecord, load_coco_captions

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


def test_dataset_and_collate_drop_unreadable_images(shapes_root, tmp_path):
    from captioning.data.coco import CaptionDataset, ImageDataset, SkippedImage
    from captioning.data.loader import collate_captions, collate_images
    from captioning.data.transforms import eval_transform, imagenet_preprocess
    from captioning.vocab import Vocabulary

    records = _records_with_bad_files(shapes_root, tmp_path, 2)
    vocab = Vocabulary.build(c for r in records for c in r.captions)
    transform = eval_transform(imagenet_preprocess(16))
    data = CaptionDataset(records, vocab, transform)
    items = [data[k] for k in range(4)]
    assert [isinstance(i, SkippedImage) for i in items] == [True, True, False, False]
    assert items[0].image_id == records[0].image_id and records[0].path.name in items[0].reason
    batch = collate_captions(items)
    assert batch.images.shape[0] == 2 and len(batch.skipped) == 2
    assert set(batch.image_ids.tolist()) == {records[2].image_id, records[3].image_id}
    empty = collate_captions(items[:2])
    assert empty.captions.shape == (0, 0) and empty.images is None and len(empty.skipped) == 2
    per_image = ImageDataset(records, transform)
    batch = collate_images([per_image[k] for k in range(3)])
    assert batch.image_ids.tolist() == [records[2].image_id] and len(batch.skipped) == 2
    assert collate_images([per_image[0]]).images.numel() == 0


def test_training_skips_unreadable_images_counted_across_workers(shapes_root, tmp_path, caplog):
    from captioning.data.coco import CaptionDataset
    from captioning.data.loader import build_train_loader, start_epoch
    from captioning.data.transforms import eval_transform
    from captioning.engine import train_one_epoch
    from captioning.models.captioner import build_model
    from captioning.vocab import Vocabulary

    records = _records_with_bad_files(shapes_root, tmp_path, 3)
    vocab = Vocabulary.build(c for r in records for c in r.captions)
    torch.manual_seed(0)
    model = build_model(TINY_MODEL, vocab_size=len(vocab))
    data = CaptionDataset(records, vocab, eval_transform(model.encoder.preprocess))
    loader = build_train_loader(data, batch_size=2, num_workers=2)  # (3 bad of 20: 2 batches hit)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    start_epoch(loader, 1)
    with caplog.at_level("WARNING", logger="captioning.engine"):
        stats = train_one_epoch(
            model, loader, optimizer, device=torch.device("cpu"), progress=False, max_bad_images=3
        )
    assert stats.bad_images == 3 and stats.steps + stats.skipped == len(loader)
    named = [r.getMessage() for r in caplog.records if "unreadable training image" in r.message]
    assert len(named) == 3 and all(p.path.name in " ".join(named) for p in records[:3])
    start_epoch(loader, 2)
    with pytest.raises(
        CaptioningError, match=r"3 training images could not be read.*more than the 2"
    ):
        train_one_epoch(
            model, loader, optimizer, device=torch.device("cpu"), progress=False, max_bad_images=2
        )


def test_evaluation_leaves_unreadable_images_out_and_names_them(shapes_root, tmp_path, caplog):
    from captioning.data.loader import build_eval_loader
    from captioning.engine import evaluate
    from captioning.inference import Captioner

    records = _records_with_bad_files(shapes_root, tmp_path, 2)
    captioner = Captioner.from_checkpoint(tiny_checkpoint(tmp_path / "ck.pt"), device="cpu")
    loader = build_eval_loader(records, captioner.transform, batch_size=2)  # 1st batch: all bad
    refs = {r.image_id: list(r.captions) for r in records}
    with caplog.at_level("WARNING", logger="captioning.engine"):
        scores, predictions = evaluate(
            captioner.model,
            loader,
            captioner.vocab,
            refs,
            device=torch.device("cpu"),
            decoding={"max_len": 5},
        )
    assert sorted(predictions) == sorted(r.image_id for r in records[2:])
    assert scores["num_images"] == len(records) - 2
    left_out = [r.getMessage() for r in caplog.records if "left out of evaluation" in r.message]
    assert [records[k].path.name in left_out[k] for k in range(2)] == [True, True]


def test_feature_cache_skips_unreadable_images(shapes_root, tmp_path):
    from captioning.data.coco import SkippedImage
    from captioning.data.features import FeatureCaptionDataset, build_feature_cache
    from captioning.data.loader import collate_captions
    from captioning.data.transforms import eval_transform
    from captioning.models.encoder import vgg_tiny
    from captioning.vocab import Vocabulary

    records = _records_with_bad_files(shapes_root, tmp_path, 1)
    records = records[1:4] + records[:1] + records[4:8]  # the bad one in the middle of a batch
    torch.manual_seed(0)
    encoder = vgg_tiny(width=4, image_size=16, vector_dim=8, trainable=False)
    store = build_feature_cache(
        tmp_path / "cache",
        encoder,
        records,
        eval_transform(encoder.preprocess),
        encoder_config=TINY_MODEL["encoder"],
        batch_size=3,
        progress=False,
    )
    bad_id = records[3].image_id
    assert list(store.skipped) == [bad_id] and records[3].path.name in store.skipped[bad_id]
    vocab = Vocabulary.build(c for r in records for c in r.captions)
    data = FeatureCaptionDataset(store, records, vocab)
    assert isinstance(data[3], SkippedImage)
    with torch.no_grad():  # the good rows hold the encoder's features of their own image
        image = eval_transform(encoder.preprocess)(load_image(records[4].path))
        expected = encoder(image[None]).vector[0]
    assert torch.allclose(data[4][0].vector.float(), expected, atol=1e-2, rtol=1e-2)
    batch = collate_captions([data[k] for k in range(2, 6)])
    assert len(batch.skipped) == 1 and batch.features.vector.shape[0] == 3


# -- 2. checkpoints -----------------------------------------------------------------------------------


def test_every_torch_load_is_weights_only_and_every_save_is_atomic():
    """Static check of the library and the tools: ``torch.load(..., weights_only=True)`` only,
    and ``torch.save`` only inside ``save_checkpoint`` (temporary file + rename)."""
    import ast

    loads, saves = [], []
    for path in sorted([*(ROOT / "captioning").rglob("*.py"), *(ROOT / "tools").glob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                owner = node.func.value
                if not (isinstance(owner, ast.Name) and owner.id == "torch"):
                    continue
                where = f"{path.relative_to(ROOT)}:{node.lineno}"
                if node.func.attr == "load":
                    safe = any(
                        k.arg == "weights_only"
                        and isinstance(k.value, ast.Constant)
                        and k.value.value is True
                        for k in node.keywords
                    )
                    loads.append((where, safe))
                elif node.func.attr == "save":
                    saves.append(where)
    assert loads and all(safe for _, safe in loads), loads
    assert [s.split(":")[0] for s in saves] == ["captioning/checkpoint.py"], saves


def test_pickled_checkpoints_are_refused_by_the_captioner(tmp_path):
    from captioning.checkpoint import CheckpointError
    from captioning.inference import Captioner

    marker = tmp_path / "pwned"
    evil = evil_checkpoint(tmp_path / "evil.pt", marker)
    with pytest.raises(
        CheckpointError, match=r"refused to load .*evil\.pt: .*pickled Python object"
    ):
        Captioner.from_checkpoint(evil)
    assert not marker.exists()


@pytest.mark.slow
def test_pickled_checkpoints_are_refused_by_the_tools(tmp_path):
    marker = tmp_path / "pwned"
    evil = evil_checkpoint(tmp_path / "evil.pt", marker)
    image = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(image)
    for tool, args in [
        ("caption.py", ["--checkpoint", evil, image]),
        ("evaluate.py", ["--checkpoint", evil]),
    ]:
        assert_one_line_error(run_tool(tool, *args), "refused to load", "evil.pt")
    assert not marker.exists()


@pytest.mark.slow
def test_pickled_checkpoint_is_refused_on_resume(tmp_path):
    marker = tmp_path / "pwned"
    evil = evil_checkpoint(tmp_path / "evil.pt", marker)
    out = run_tool(
        "train.py",
        f"trainer.resume={evil}",
        f"hydra.run.dir={tmp_path / 'run'}",
        f"data.root={tmp_path / 'never'}",
    )
    assert_one_line_error(out, "refused to load", "evil.pt")
    assert not marker.exists() and not (tmp_path / "never").exists()


def test_checkpoints_that_do_not_fit_say_what_differs(tmp_path):
    from captioning.checkpoint import CheckpointError, load_checkpoint, restore_model
    from captioning.inference import Captioner

    ckpt = load_checkpoint(tiny_checkpoint(tmp_path / "ck.pt"))
    cases = [
        (
            {**ckpt, "vocab": [*ckpt["vocab"], "extra"]},
            r"decoder weights \(decoder\.embed\.weight\) are for 11 words but its vocabulary has 12",
        ),
        (
            {
                **ckpt,
                "config": {
                    **ckpt["config"],
                    "decoder": {**ckpt["config"]["decoder"], "hidden_dim": 16},
                },
            },
            r"do not fit the model its config describes: wrong shapes decoder\.",
        ),
        (
            {
                **ckpt,
                "config": {
                    **ckpt["config"],
                    "decoder": {**ckpt["config"]["decoder"], "cell": "lstm"},
                },
            },
            r"wrong shapes decoder\.rnn\.weight_ih_l0 \(24, 16\) \(model \(32, 16\)\)",
        ),
        (
            {**ckpt, "model": {k: v for k, v in ckpt["model"].items() if "rnn" not in k}},
            r"missing weights decoder\.rnn",
        ),
        (
            {**ckpt, "config": {**ckpt["config"], "encoder": {"_target_": "os.system"}}},
            "not allowed",
        ),
    ]
    for k, (broken, message) in enumerate(cases):
        with pytest.raises(CaptioningError, match=message):
            restore_model(broken, source="ck.pt")
        torch.save(broken, tmp_path / f"broken{k}.pt")
        with pytest.raises(CaptioningError, match=message):
            Captioner.from_checkpoint(tmp_path / f"broken{k}.pt")
    torch.save({**ckpt, "model": [1, 2]}, tmp_path / "types.pt")
    with pytest.raises(CheckpointError, match="model have the wrong type"):
        load_checkpoint(tmp_path / "types.pt")
    torch.save({**ckpt, "format_version": 2}, tmp_path / "v2.pt")
    with pytest.raises(CheckpointError, match=r"format_version 2.*reads format_version 1"):
        Captioner.from_checkpoint(tmp_path / "v2.pt")


def test_a_checkpoint_loads_without_its_pretrained_weights_file(tmp_path):
    """The checkpoint holds every weight: the encoder's pretrained-weights file named in its
    config (on the machine that trained it) is not needed to load it."""
    from captioning.checkpoint import load_checkpoint, restore_model
    from captioning.models.encoder import vgg_tiny

    torch.manual_seed(1)
    weights = tmp_path / "pretrained.pt"
    torch.save(vgg_tiny(width=4, image_size=16, vector_dim=8).state_dict(), weights)
    config = {**TINY_MODEL, "encoder": {**TINY_MODEL["encoder"], "weights": str(weights)}}
    path = tiny_checkpoint(tmp_path / "ck.pt", config)
    weights.unlink()  # another machine
    model, _ = restore_model(load_checkpoint(path))
    assert torch.equal(
        model.state_dict()["decoder.out.weight"],
        load_checkpoint(path)["model"]["decoder.out.weight"],
    )


def test_offline_torchvision_weights_are_a_one_line_error(tmp_path, monkeypatch):
    """A checkpoint of a torchvision VGG names its pretrained weights; where they are neither
    cached nor downloadable the error says so (the download is faked: tests stay offline)."""
    import urllib.error

    from torchvision.models._api import WeightsEnum

    from captioning.checkpoint import CheckpointError, restore_model

    def offline(self, *args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(WeightsEnum, "get_state_dict", offline)
    ckpt = {
        "config": {
            **TINY_MODEL,
            "encoder": {
                "_target_": "captioning.models.encoder.vgg11",
                "weights": "DEFAULT",
                "image_size": 32,
            },
        },
        "vocab": ["<pad>", "<start>", "<end>", "<unk>"],
        "model": {},
    }
    with pytest.raises(CheckpointError, match=r"needs torchvision's DEFAULT weights .*\(URLError"):
        restore_model(ckpt, source="vgg.pt")


def _resume_cfg(root: Path, run: Path, *overrides: str):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(
            config_name="train",
            overrides=[
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
            ],
        )


def test_resume_refuses_a_different_model_or_vocabulary(shapes_root, tmp_path):
    from train import train

    run = tmp_path / "run"
    train(_resume_cfg(shapes_root, run), run_dir=run)
    with pytest.raises(
        CaptioningError,
        match=r"decoder config differs .*decoder\.hidden_dim: 8 in the checkpoint, 16 now",
    ):
        train(
            _resume_cfg(
                shapes_root,
                run,
                "trainer.epochs=2",
                f"trainer.resume={run}",
                "decoder.hidden_dim=16",
            )
        )
    (run / "vocab.json").write_text('["<pad>", "<start>", "<end>", "<unk>", "zebra"]')
    with pytest.raises(CaptioningError, match=r"vocabulary \(\d+ words\) differs from the run's"):
        train(_resume_cfg(shapes_root, run, "trainer.epochs=2", f"trainer.resume={run}"))


# -- 3. annotation files ------------------------------------------------------------------------------


def _coco(tmp_path: Path, images: list, annotations: list, name: str = "ann.json") -> Path:
    folder = tmp_path / "images"
    folder.mkdir(exist_ok=True)
    for image in images:
        if isinstance(image, dict) and image.get("file_name"):
            Image.new("RGB", (8, 8)).save(folder / image["file_name"])
    path = tmp_path / name
    path.write_text(json.dumps({"images": images, "annotations": annotations}))
    return path


GOOD_IMAGES = [{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "b.png"}]
GOOD_ANNS = [
    {"id": 10, "image_id": 1, "caption": "a red box"},
    {"id": 20, "image_id": 2, "caption": "a blue box"},
]


@pytest.mark.parametrize(
    "images, annotations, message",
    [
        (
            [{"file_name": "a.png"}, *GOOD_IMAGES],
            GOOD_ANNS,
            r"'images' entries without an integer 'id' at positions \[0\]",
        ),
        (
            [*GOOD_IMAGES, {"id": 7}, {"id": 8, "file_name": ""}],
            GOOD_ANNS,
            r"images without a 'file_name', ids \[7, 8\]",
        ),
        (
            [*GOOD_IMAGES, {"id": 1, "file_name": "c.png"}],
            GOOD_ANNS,
            r"image ids listed twice: \[1\]",
        ),
        (
            GOOD_IMAGES,
            [*GOOD_ANNS, {"id": 11, "caption": "x"}, {"id": 12, "image_id": "2", "caption": "x"}],
            r"annotations without an integer 'image_id', annotation ids \[11, 12\]",
        ),
        (
            GOOD_IMAGES,
            [*GOOD_ANNS, {"id": 13, "image_id": 1}, {"id": 14, "image_id": 1, "caption": 5}],
            r"annotations without a 'caption' string, annotation ids \[13, 14\]",
        ),
        (
            GOOD_IMAGES,
            [{"image_id": 1, "caption": "a box"}, *GOOD_ANNS, "junk"],
            r"'annotations' entries without an 'id' at positions \[0, 3\]",
        ),
    ],
)
def test_malformed_coco_entries_are_one_line_errors(tmp_path, images, annotations, message):
    """(pycocotools itself would raise a KeyError deep in COCO.createIndex for several of these.)"""
    from captioning.data.coco import load_coco_captions

    path = _coco(tmp_path, images, annotations)
    with pytest.raises(CaptioningError, match=message) as info:
        load_coco_captions(path, tmp_path / "images")
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_files_that_are_not_coco_json_are_one_line_errors(tmp_path):
    from captioning.data.coco import load_coco_captions, load_karpathy

    cases = {
        "broken.json": ('{"images": [', "is not valid JSON"),
        "list.json": ("[1, 2]", "found a JSON list"),
        "half.json": ('{"images": []}', "expected an object with 'images' and 'annotations'"),
        "latin1.json": (b"\xff\xfe\x00junk", "cannot read"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        with pytest.raises(CaptioningError, match=message) as info:
            load_coco_captions(path, tmp_path)
        assert name in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(CaptioningError, match="not a Karpathy split file"):
        load_karpathy(tmp_path / "list.json", tmp_path, ["train"])
    with pytest.raises(CaptioningError, match="is not valid JSON"):
        load_karpathy(tmp_path / "broken.json", tmp_path, ["train"])


def test_coco_content_problems_are_errors_when_strict_and_counted_otherwise(tmp_path, caplog):
    from captioning.data.coco import load_coco_captions

    images = [*GOOD_IMAGES, {"id": 3, "file_name": "c.png"}, {"id": 4, "file_name": "d.png"}]
    annotations = [
        *GOOD_ANNS,
        {"id": 30, "image_id": 3, "caption": "  "},  # image 3: only empty captions
        {"id": 21, "image_id": 2, "caption": "?!"},
        {"id": 40, "image_id": 4, "caption": "a green box"},
        {"id": 90, "image_id": 99, "caption": "an orphan"},
    ]
    path = _coco(tmp_path, images, annotations)
    (tmp_path / "images" / "d.png").unlink()
    with pytest.raises(CaptioningError) as info:
        load_coco_captions(path, tmp_path / "images")
    message = str(info.value)
    assert "\n" not in message and "data.strict=false" in message
    for part in (
        "2 empty or punctuation-only captions, annotation ids [21, 30]",
        "1 images without a caption, ids [3]",
        "1 captions of image ids not in 'images': [99]",
    ):
        assert part in message, message
    with caplog.at_level("WARNING", logger="captioning.data.coco"):
        records = load_coco_captions(path, tmp_path / "images", strict=False)
    assert [(r.image_id, r.captions) for r in records] == [
        (1, ("a red box",)),
        (2, ("a blue box",)),
    ]
    logged = " | ".join(r.getMessage() for r in caplog.records)
    for part in (
        "skipped 2 empty or punctuation-only captions, annotation ids [21, 30]",
        "skipped 1 images without a caption, ids [3]",
        "[99]",
        "1 of 3 image files listed",
        "d.png",
    ):
        assert part in logged, logged
    (tmp_path / "images" / "d.png").write_bytes(b"")  # there again: only the content errors left
    with pytest.raises(CaptioningError, match="empty or punctuation-only"):
        load_coco_captions(path, tmp_path / "images")


def test_karpathy_entry_problems(tmp_path, caplog):
    from captioning.data.coco import load_karpathy

    def entry(cocoid, sentences, **extra):
        Image.new("RGB", (8, 8)).save(tmp_path / f"{cocoid}.jpg")
        return {
            "split": "train",
            "cocoid": cocoid,
            "filename": f"{cocoid}.jpg",
            "sentences": [{"raw": s} for s in sentences],
            **extra,
        }

    path = tmp_path / "dataset_coco.json"
    images = [entry(1, ["a dog", " . "]), entry(2, ["", "?"]), entry(3, ["a cat"])]
    path.write_text(json.dumps({"images": images}))
    with pytest.raises(CaptioningError, match=r"1 images without a caption, cocoids \[2\]"):
        load_karpathy(path, tmp_path, ["train"])
    with caplog.at_level("INFO", logger="captioning.data.coco"):
        records = load_karpathy(path, tmp_path, ["train"], strict=False)
    assert [r.image_id for r in records] == [1, 3] and records[0].captions == ("a dog",)
    assert "3 empty or punctuation-only sentences ignored" in caplog.text
    broken = [
        *images,
        {"split": "train", "cocoid": 4, "sentences": []},
        {"split": "train", "filename": "x.jpg", "sentences": [{"raw": "a"}]},
        {"split": "val", "junk": True},
    ]
    path.write_text(json.dumps({"images": broken}))
    with pytest.raises(CaptioningError, match=r"entries at positions \[3, 4\] lack"):
        load_karpathy(path, tmp_path, ["train"])


def test_split_config_without_files_is_a_one_line_error(tmp_path):
    from captioning.data.loader import load_split

    data = {"root": str(tmp_path), "splits": {"train": {"images": "imgs"}}}
    with pytest.raises(
        CaptioningError, match=r"data\.splits\.train needs 'annotations' and 'images'"
    ):
        load_split(data, "train")


# -- 4. configs and paths -----------------------------------------------------------------------------


def _config_cases(tmp_path: Path) -> dict[str, tuple[list[str], list[str]]]:
    afile = tmp_path / "a_file"
    afile.write_text("")
    return {
        "missing data.root": (
            ["data=coco", f"data.root={tmp_path / 'nowhere'}"],
            ["data.root", "nowhere", "does not exist"],
        ),
        "unknown _target_": (
            ["encoder._target_=captioning.models.encoder.nope"],
            ["encoder._target_=captioning.models.encoder.nope", "conf/encoder/"],
        ),
        "run dir in /proc": (
            ["hydra.run.dir=/proc/nope/run"],
            ["cannot write to /proc/nope/run", "set hydra.run.dir"],
        ),
        "run dir under a file": (
            [f"hydra.run.dir={afile}/run"],
            [f"cannot write to {afile}/run", "set hydra.run.dir"],
        ),
    }


@pytest.mark.parametrize(
    "case", ["missing data.root", "unknown _target_", "run dir in /proc", "run dir under a file"]
)
def test_config_mistakes_are_one_line_errors_before_any_work(tmp_path, case):
    args, needles = _config_cases(tmp_path)[case]
    shapes = tmp_path / "shapes"  # would be generated by the default data config
    run = [f"hydra.run.dir={tmp_path / 'run'}", f"data.root={shapes}", *args]
    out = run_tool("train.py", *run)
    assert out.returncode == 2
    assert_one_line_error(out, *needles)
    assert not shapes.exists()  # stopped before preparing any data


def test_unknown_config_group_option_is_hydras_one_message(tmp_path):
    out = run_tool("train.py", "encoder=vgg99", f"hydra.run.dir={tmp_path / 'run'}")
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "Could not find 'encoder/vgg99'" in out.stderr and "vgg16" in out.stderr  # the options


def test_train_checks_its_output_folders_before_long_work(shapes_root, tmp_path):
    from train import train

    afile = tmp_path / "a_file"
    afile.write_text("")
    with pytest.raises(CaptioningError, match=r"cannot write to .*a_file/run .*hydra\.run\.dir"):
        train(_resume_cfg(tmp_path / "not_generated", tmp_path), run_dir=afile / "run")
    assert not (tmp_path / "not_generated").exists()
    frozen = _resume_cfg(
        shapes_root, tmp_path, "encoder.trainable=false", f"data.cache_dir={afile}/cache"
    )
    with pytest.raises(CaptioningError, match=r"cannot write to .*a_file/cache .*data\.cache_dir"):
        train(frozen, run_dir=tmp_path / "run")
    with pytest.raises(CaptioningError, match=r"max_bad_image_fraction=2\.0 must be between"):
        train(
            _resume_cfg(shapes_root, tmp_path, "data.max_bad_image_fraction=2"),
            run_dir=tmp_path / "run2",
        )


# -- 5. training faults -------------------------------------------------------------------------------


class FlakyObjective(torch.nn.Module):
    """A CaptionObjective whose loss is NaN on the calls listed in `nan_calls` (0-based)."""

    def __init__(self, model, nan_calls):
        from captioning.objective import CaptionObjective

        super().__init__()
        self.inner = CaptionObjective(model)
        self.nan_calls, self.calls = set(nan_calls), 0

    def forward(self, *args, **kwargs):
        loss, words = self.inner(*args, **kwargs)
        self.calls += 1
        return (loss * float("nan") if self.calls - 1 in self.nan_calls else loss), words


def _tiny_batches(n: int):
    from captioning.data.loader import CaptionBatch
    from captioning.vocab import Vocabulary

    vocab = Vocabulary.build(WORDS)
    torch.manual_seed(0)
    batches = []
    for _ in range(n):
        captions = torch.tensor([vocab.encode(w) for w in WORDS])  # (3, T)
        batches.append(
            CaptionBatch(
                torch.randn(3, 3, 16, 16),
                captions,
                torch.full((3,), captions.shape[1]),
                torch.arange(3),
                torch.arange(3),
            )
        )
    return vocab, batches


def test_non_finite_steps_are_skipped_and_a_streak_stops_training():
    from captioning.engine import NonFiniteLossError, train_one_epoch
    from captioning.models.captioner import build_model

    vocab, batches = _tiny_batches(8)
    torch.manual_seed(0)
    model = build_model(TINY_MODEL, vocab_size=len(vocab))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    cpu = torch.device("cpu")
    flaky = FlakyObjective(model, nan_calls={1, 2, 5, 6, 7})
    stats = train_one_epoch(
        model,
        batches,
        optimizer,
        device=cpu,
        progress=False,
        objective=flaky,
        max_nonfinite_steps=4,
    )
    assert (stats.steps, stats.nonfinite, stats.skipped, stats.nonfinite_streak) == (3, 5, 5, 3)
    assert math.isfinite(stats.loss)
    assert all(torch.isfinite(p).all() for p in model.parameters())  # skipped: no update

    before = {k: v.clone() for k, v in model.named_parameters()}
    with pytest.raises(
        NonFiniteLossError, match=r"not finite for 4 consecutive steps \(epoch 2, batch 1\)"
    ):
        train_one_epoch(
            model,
            batches,
            optimizer,
            device=cpu,
            progress=False,
            epoch=2,
            objective=FlakyObjective(model, nan_calls=range(8)),
            max_nonfinite_steps=4,
            nonfinite_streak=stats.nonfinite_streak,
        )
    assert all(torch.equal(before[k], v) for k, v in model.named_parameters())


def _faulty_run(shapes_root, tmp_path, monkeypatch, fault, max_nonfinite=2):
    """Train 2 epochs of 3 batches; from the 4th step on, `fault(objective, loss)` is applied."""
    from train import train

    from captioning.objective import CaptionObjective

    original, calls = CaptionObjective.forward, []

    def forward(self, *args, **kwargs):
        loss, words = original(self, *args, **kwargs)
        calls.append(1)
        return (fault(self, loss) if len(calls) > 3 else loss), words

    monkeypatch.setattr(CaptionObjective, "forward", forward)
    run = tmp_path / "run"
    cfg = _resume_cfg(
        shapes_root,
        run,
        "trainer.epochs=2",
        "trainer.max_train_batches=3",
        f"trainer.max_nonfinite_steps={max_nonfinite}",
    )
    with pytest.raises(CaptioningError) as info:
        train(cfg, run_dir=run)
    last = load_checkpoint(run / "checkpoints" / "last.pt")
    assert last["epoch"] == 1 and last["step"] == 3
    assert all(torch.isfinite(v).all() for v in last["model"].values() if v.is_floating_point())
    return str(info.value)


def test_a_run_whose_loss_stays_nan_stops_and_keeps_the_last_good_checkpoint(
    shapes_root, tmp_path, monkeypatch
):
    message = _faulty_run(shapes_root, tmp_path, monkeypatch, lambda _, loss: loss * float("nan"))
    assert "not finite for 2 consecutive steps (epoch 2, batch 2)" in message
    assert "trainer.max_nonfinite_steps=2" in message and "last.pt (epoch 1) is kept" in message


def test_a_run_whose_weights_blow_up_saves_nothing(shapes_root, tmp_path, monkeypatch):
    def poison(objective, loss):  # a finite loss, but the weights are gone
        with torch.no_grad():
            objective.model.decoder.out.weight.fill_(float("inf"))
        return loss.detach().requires_grad_()

    message = _faulty_run(shapes_root, tmp_path, monkeypatch, poison, max_nonfinite=100)
    assert "weights became non-finite in epoch 2 (decoder.out.weight)" in message
    assert "nothing was saved" in message


def test_training_run_skips_a_bad_image_up_to_the_allowed_fraction(shapes_root, tmp_path, caplog):
    import shutil

    from train import train

    root = tmp_path / "shapes"
    shutil.copytree(shapes_root, root)
    train_ann = json.loads((root / "annotations" / "captions_train.json").read_text())
    victim = root / "images" / train_ann["images"][0]["file_name"]
    victim.write_bytes(victim.read_bytes()[:64])  # truncated
    overrides = ("trainer.max_train_batches=null", "data.max_bad_image_fraction=0.01")
    with caplog.at_level("INFO"):
        summary = train(_resume_cfg(root, tmp_path, *overrides), run_dir=tmp_path / "ok")
    assert summary["history"] and victim.name in caplog.text
    assert "1 unreadable images skipped" in caplog.text  # the epoch's log line
    with pytest.raises(
        CaptioningError, match=r"1 training images could not be read.*more than the 0"
    ):
        train(
            _resume_cfg(root, tmp_path, "trainer.max_train_batches=null"),
            run_dir=tmp_path / "strict",
        )  # default 0.001 of 120 images: none allowed


def test_a_batch_left_with_one_image_is_skipped_not_a_batchnorm_crash():
    from captioning.engine import train_one_epoch
    from captioning.models.captioner import build_model

    vocab, batches = _tiny_batches(2)
    single = [
        b._replace(images=b.images[:1], image_index=torch.zeros(3, dtype=torch.long))
        for b in batches
    ]
    torch.manual_seed(0)
    model = build_model(TINY_MODEL, vocab_size=len(vocab))  # vgg_tiny: BatchNorm1d in fc layers
    optimizer = torch.optim.Adam(model.parameters())
    stats = train_one_epoch(
        model, [single[0], batches[1]], optimizer, device=torch.device("cpu"), progress=False
    )
    assert (stats.steps, stats.skipped, stats.nonfinite) == (1, 1, 0)
