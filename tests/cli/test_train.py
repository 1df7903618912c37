"""tools/train.py end to end: config composition, a short run -> checkpoint -> caption -> evaluate
(the tools, through their command line), and each data format trained, captioned and evaluated.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import (
    ROOT,
    SMALL,
    TINY,
    assert_one_line_error,
    compose_train,
    fit,
    run_tool,
    write_flickr,
    write_image,
)
from helpers import tiny_cfg as _tiny_cfg
from PIL import Image

from captioning.data.splits import load_split
from captioning.training.config import parse_config

SMALL_RUN = [*TINY, *SMALL, "trainer.epochs=1", "decoding.max_len=5"]  # a run of seconds


def tiny_cfg(shapes_root: Path, *overrides: str):
    return _tiny_cfg(shapes_root, "trainer.epochs=2", "trainer.batch_size=32", *overrides)


def test_config_composes_with_overrides(shapes_root):
    cfg = tiny_cfg(shapes_root, "decoder.cell=gru", "decoding.max_len=7")
    assert cfg.decoder.cell == "gru" and cfg.decoding.max_len == 7
    assert cfg.encoder._target_ == "captioning.models.encoder.vgg_tiny"
    assert cfg.trainer.device == "auto" and cfg.data.name == "shapes"
    vgg = compose_train("encoder=vgg16", "trainer=debug")
    assert vgg.encoder._target_.endswith("vgg16") and vgg.trainer.max_train_batches == 5


# runs captioning-train's main() in a fresh process, counting how often hydra composes the config
# for a run (ConfigLoaderImpl.load_configuration in RUN mode: not hydra's own mode probe, which
# composes in MULTIRUN mode with the sweep overrides unchecked) and how often it is parsed
COUNTED_TRAIN = """
import sys
from hydra._internal.config_loader_impl import ConfigLoaderImpl
from hydra.types import RunMode
import captioning.training.config as config
from captioning.cli.train import main
counts = {"composed": 0, "parsed": 0}
load, parse = ConfigLoaderImpl.load_configuration, config.parse_settings
def counted_load(self, *args, **kwargs):
    counts["composed"] += kwargs.get("run_mode", args[2] if len(args) > 2 else None) == RunMode.RUN
    return load(self, *args, **kwargs)
def counted_parse(cls, *args, **kwargs):
    counts["parsed"] += cls is config.RunConfig
    return parse(cls, *args, **kwargs)
ConfigLoaderImpl.load_configuration, config.parse_settings = counted_load, counted_parse
try:
    status = main()
finally:
    print(f"composed {counts['composed']} parsed {counts['parsed']}")
sys.exit(status)
"""


def test_train_composes_and_parses_the_config_once(shapes_root, tmp_path):
    run = tmp_path / "run"
    args = [f"hydra.run.dir={run}", *SMALL_RUN, f"data.root={shapes_root}"]
    out = subprocess.run(
        [sys.executable, "-c", COUNTED_TRAIN, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert out.returncode == 0, out.stderr
    assert "composed 1 parsed 1" in out.stdout, out.stdout
    assert (run / "checkpoints" / "last.pt").is_file() and (
        run / ".hydra" / "config.yaml"
    ).is_file()
    assert (run / "train.log").is_file()  # hydra's job name is still "train"


def test_train_command_line_help():
    """``python -m captioning.cli.train`` and ``tools/train.py`` are the same hydra command."""
    for command in (["-m", "captioning.cli.train"], [str(ROOT / "tools" / "train.py")]):
        out = subprocess.run(
            [sys.executable, *command, "--help"], capture_output=True, text=True, timeout=120
        )
        assert out.returncode == 0, out.stderr
        assert (
            "train is powered by Hydra" in out.stdout
            and "decoder: attention, gru, lstm, rnn" in out.stdout
        )
        # the shared bases are no choice (issue 23): only real data sets and trainers are offered
        assert "data: coco, coco2017, coco_karpathy, flickr30k, flickr8k, folder, shapes\n" in (
            out.stdout
        )
        assert "trainer: cpu, debug, gpu\n" in out.stdout


def test_every_data_set_and_trainer_composes_from_the_shared_bases():
    """conf/base_data.yaml and conf/base_trainer.yaml still fill every data set and trainer."""
    names = {"data": sorted(p.stem for p in (ROOT / "conf" / "data").glob("*.yaml"))}
    names["trainer"] = sorted(p.stem for p in (ROOT / "conf" / "trainer").glob("*.yaml"))
    assert "base" not in names["data"] + names["trainer"]
    for data in names["data"]:
        for trainer in names["trainer"]:
            config = parse_config(compose_train(f"data={data}", f"trainer={trainer}"))
            assert config.data.max_pixels == 100_000_000, (data, trainer)  # from base_data
            assert config.trainer.max_nonfinite_steps == 20, (data, trainer)  # base_trainer


def test_train_without_configs_is_one_line(tmp_path):
    """A non-editable install has no conf/ beside the package: one line, before hydra starts."""
    code = (
        "import sys, pathlib; from captioning.cli import train; "
        f"train.CONF = pathlib.Path({str(tmp_path / 'conf')!r}); sys.exit(train.main())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert (
        out.stderr.startswith("error: no training configs at ") and "pip install -e ." in out.stderr
    )


@pytest.mark.slow
def test_end_to_end(shapes_root, tmp_path):
    run = tmp_path / "run"
    summary = fit(tiny_cfg(shapes_root), run_dir=run)
    assert len(summary["history"]) == 2
    for name in (
        "checkpoints/best.pt",
        "checkpoints/last.pt",
        "vocab.json",
        "metrics.csv",
        "test_scores.json",
    ):
        assert (run / name).is_file(), name
    assert summary["test"]["num_images"] == 20
    assert 0.0 <= summary["test"]["Bleu_4"] <= 1.0
    text = (run / "test_scores.json").read_text()
    written = json.loads(text, parse_constant=lambda c: pytest.fail(f"not JSON: {c}"))
    grounded = {"shapes_precision", "shapes_recall", "shapes_relation_accuracy", "CHAIR_i"}
    assert grounded | {"CHAIR_s"} <= set(written)

    # caption PNG and JPEG files of other sizes and modes with the checkpoint
    images = []
    for mode, suffix, size in [
        ("RGB", ".jpg", (300, 200)),
        ("L", ".png", (50, 90)),
        ("RGBA", ".png", (128, 128)),
    ]:
        path = tmp_path / f"img_{mode}{suffix}"
        Image.new(mode, size, color=128 if mode == "L" else (200, 30, 30, 255)[: len(mode)]).save(
            path
        )
        images.append(str(path))
    tool = [
        sys.executable,
        str(ROOT / "tools" / "caption.py"),
        "--checkpoint",
        str(run / "checkpoints" / "best.pt"),
    ]
    out = subprocess.run([*tool, *images], capture_output=True, text=True, check=True)
    lines = out.stdout.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == images
    assert all(line.split("\t")[1].strip() for line in lines)

    bad = subprocess.run([*tool, str(tmp_path / "missing.png")], capture_output=True, text=True)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and "missing.png" in bad.stderr

    # evaluate decodes each test image once and reproduces the training run's test scores
    training_results = (run / "test_results.json").read_bytes()
    ev = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "evaluate.py"),
            "--checkpoint",
            str(run),
            "--split",
            "test",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "decoded 20 images" in ev.stdout
    assert (run / "test_results.json").read_bytes() == training_results  # not overwritten
    scores = json.loads(
        (run / "eval" / "test_beam3_results_scores.json").read_text()
    )  # its decoding
    assert scores["num_images"] == 20
    assert scores["Bleu_4"] == pytest.approx(summary["test"]["Bleu_4"], abs=1e-12)


# a model and a run of seconds: 8-channel vgg_tiny at 32 px, a 16/32 LSTM, 3 batches of 4 images
RUN = [
    "encoder.width=8",
    "encoder.vector_dim=32",
    "encoder.image_size=32",
    "decoder.embed_dim=16",
    "decoder.hidden_dim=32",
    "decoding.max_len=8",
    "data.min_count=1",
    "trainer.batch_size=4",
    "trainer.max_train_batches=3",
    "trainer.epochs=1",
    "trainer.progress=false",
    "trainer.tensorboard=false",
    "trainer.threads=1",
]


def evaluate_cli(run: Path, split: str, n_images: int, ids: list[int]) -> None:
    """``tools/evaluate.py -c RUN --split SPLIT`` decodes every image once and scores it."""
    out = run.parent / f"{split}_results.json"
    done = run_tool("evaluate.py", "-c", run, "--split", split, "--results", out, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"decoded {n_images} images of split '{split}', each once" in done.stdout
    assert f"images scored: {n_images}" in done.stdout and "CIDEr" in done.stdout
    results = json.loads(out.read_text())
    assert sorted(r["image_id"] for r in results) == ids  # the data set's own ids


def caption_cli(run: Path, image: Path) -> None:
    done = run_tool("caption.py", "-c", run, image)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"{image}\t")


@pytest.mark.slow
def test_flickr8k_trains_captions_and_evaluates(tmp_path):
    root = tmp_path / "flickr8k"
    write_flickr(root, {"train": 12, "val": 3, "test": 3})
    cfg = compose_train("data=flickr8k", f"data.root={root}", *RUN)
    summary = fit(cfg, run_dir=tmp_path / "run")
    assert summary["interrupted"] is None and summary["test"]["num_images"] == 3
    caption_cli(tmp_path / "run", root / "Flicker8k_Dataset" / "1000_0000.jpg")
    evaluate_cli(tmp_path / "run", "test", 3, [15, 16, 17])  # Karpathy's imgids


@pytest.mark.slow
def test_folder_csv_trains_captions_and_evaluates(tmp_path):
    root = tmp_path / "mine"
    root.mkdir()
    with (root / "captions.csv").open("w", newline="") as f:
        rows = csv.writer(f)
        rows.writerow(["image", "caption"])
        for k in range(20):
            write_image(root / "photos" / f"{k}.jpg", 12 * k)
            rows.writerow([f"photos/{k}.jpg", f"A photo of thing {k % 4}."])
            rows.writerow([f"photos/{k}.jpg", f"thing {k % 4}, seen from afar"])
    cfg = compose_train("data=folder", f"data.root={root}", *RUN)
    data = parse_config(cfg).data
    val, test = ([r.image_id for r in load_split(data, s)] for s in ("val", "test"))
    assert len(val) == len(test) == 2 and not set(val) & set(test)  # 10% of 20 images each
    summary = fit(cfg, run_dir=tmp_path / "run")
    assert summary["test"]["num_images"] == 2
    tested = json.loads((tmp_path / "run" / "test_results.json").read_text())
    assert sorted(r["image_id"] for r in tested) == sorted(test)
    caption_cli(tmp_path / "run", root / "photos" / "3.jpg")
    evaluate_cli(tmp_path / "run", "val", 2, sorted(val))


@pytest.mark.slow
def test_coco2017_trains(tmp_path):
    for split, start, count in (("train", 30, 12), ("val", 900, 3)):
        images, anns = [], []
        for k in range(count):
            name = f"{start + k:012d}.jpg"
            write_image(tmp_path / f"{split}2017" / name, 20 * k)
            images.append({"id": start + k, "file_name": name})
            anns += [
                {"id": 10 * (start + k) + j, "image_id": start + k, "caption": f"a cat {k % 3}"}
                for j in range(2)
            ]
        path = tmp_path / "annotations" / f"captions_{split}2017.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps({"images": images, "annotations": anns}))
    cfg = compose_train("data=coco2017", f"data.root={tmp_path}", *RUN)
    summary = fit(cfg, run_dir=tmp_path / "run")
    assert summary["test"]["num_images"] == 3  # val2017 doubles as the test split


def test_a_data_error_after_the_run_folder_exists_is_written_into_its_train_log(tmp_path):
    """A folder data set without a captions file fails while the run loads its data: one
    ``error:`` line on the terminal, and the same line in the run's train.log."""
    (tmp_path / "photos").mkdir()
    run = tmp_path / "run"
    out = run_tool(
        "train.py", "data=folder", f"data.root={tmp_path / 'photos'}", f"hydra.run.dir={run}"
    )
    line = assert_one_line_error(out, "captions file")
    assert line in (run / "train.log").read_text()


# captioning-train with the data loading failing unexpectedly (not a CaptioningError)
FAILING_TRAIN = """
import sys
from captioning.training import run_data
from captioning.cli.train import main
def broken(*args, **kwargs):
    raise RuntimeError("the disk went away")
run_data.load_records = broken
sys.exit(main())
"""


def test_an_unexpected_error_leaves_its_traceback_in_train_log(shapes_root, tmp_path):
    run = tmp_path / "run"
    args = [f"hydra.run.dir={run}", *SMALL_RUN, f"data.root={shapes_root}"]
    out = subprocess.run(
        [sys.executable, "-c", FAILING_TRAIN, *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert out.returncode != 0 and "the disk went away" in out.stderr
    log = (run / "train.log").read_text()
    assert "the run failed:" in log and "Traceback" in log
    assert "RuntimeError: the disk went away" in log
