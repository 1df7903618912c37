"""Config composition and a short end-to-end run: train (the library's Trainer) -> checkpoint ->
caption -> evaluate (the tools, through their command line)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import SMALL, TINY, compose_train, fit
from helpers import tiny_cfg as _tiny_cfg
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
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
    assert {"shapes_precision", "shapes_recall", "CHAIR_i", "CHAIR_s"} <= set(written)

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
    scores = json.loads((run / "eval" / "test_greedy_results_scores.json").read_text())
    assert scores["num_images"] == 20
    assert scores["Bleu_4"] == pytest.approx(summary["test"]["Bleu_4"], abs=1e-12)
