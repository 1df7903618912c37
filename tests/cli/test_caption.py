"""tools/caption.py: its flags, bad files, attention maps."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import (
    ROOT,
    picture,
    run_tool,
    tiny_checkpoint,
    tiny_model_config,
    write_bad_images,
)
from PIL import Image

from captioning.checkpoint import save_checkpoint


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


# -- Captioner and tools/caption.py ------------------------------------------------------------


def test_caption_tool_flags(checkpoint):
    path, images = checkpoint
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "caption.py"),
            "-c",
            str(path),
            str(images),
            "--beam-size",
            "3",
            "--n-best",
            "2",
            "--batch-size",
            "2",
            "--length-penalty",
            "0.5",
            "--no-repeat-ngram-size",
            "2",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = [line.split("\t") for line in run.stdout.splitlines()]
    assert len(lines) == 6 and all(len(parts) == 3 for parts in lines)
    for first, second in zip(lines[::2], lines[1::2], strict=True):
        assert first[0] == second[0] and float(first[1]) >= float(second[1])

    def output(*flags):
        done = run_tool("caption.py", "-c", path, images / "*.png", *flags)
        assert done.returncode == 0, done.stderr
        return done.stdout.splitlines()

    greedy_lines = output("--batch-size", "2")
    assert len(greedy_lines) == 3 and all(len(x.split("\t")) == 2 for x in greedy_lines)
    assert output("--sample", "--temperature", "0") == greedy_lines
    drawn = output("--sample", "--seed", "1", "--num-samples", "2", "--top-k", "5")
    assert len(drawn) == 6 and drawn == output(
        "--sample", "--seed", "1", "--num-samples", "2", "--top-k", "5"
    )
    bad = run_tool("caption.py", "-c", path, images, "--beam-size", "2", "--n-best", "3")
    assert bad.returncode == 2 and "--n-best 3 must be <= --beam-size 2" in bad.stderr
    bad = run_tool("caption.py", "-c", path, images, "--temperature", "0.5")
    assert bad.returncode == 2 and "--sample" in bad.stderr


# --------------------------------------------------------------------------- caption.py


def _checkpoint(path: Path, decoder: str, **settings) -> Path:
    """An untrained model saved as training would, that emits no special token (`<pad>`,
    `<start>`, `<end>`, `<unk>`): every caption has max_len = 5 words (enough to exercise the
    tools)."""
    from captioning.checkpoint import load_checkpoint

    config = tiny_model_config(decoder=decoder, vector_dim=16, image_size=32, max_len=5, **settings)
    ckpt = load_checkpoint(tiny_checkpoint(path, config, words=["a red circle"]))
    ckpt["model"]["decoder.out.bias"][:4] = -1e4  # the specials
    fields = ("model", "config", "vocab", "epoch", "step")
    return save_checkpoint(path, **{k: ckpt[k] for k in fields})


def test_caption_tool_draws_attention_maps(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path / "att.pt", "attention", attention_dim=8)
    images = []
    for k in range(2):
        images.append(tmp_path / f"img{k}.png")
        picture((60, 40), seed=k).save(images[-1])
    out = tmp_path / "maps" / "att.png"
    done = run_tool("caption.py", "-c", ckpt, images[0], "--attention-map", out)
    assert done.returncode == 0, done.stderr
    with Image.open(out) as png:
        assert png.size[0] > png.size[1]  # the image and 5 word panels: one row of six
    assert done.stdout.startswith(f"{images[0]}\t") and f"attention map: {out}" in done.stderr
    assert len(done.stdout.split("\t")[1].split()) == 5
    done = run_tool("caption.py", "-c", ckpt, *images, "--attention-map", out, "--beam-size", "2")
    assert done.returncode == 0, done.stderr
    assert {p.name for p in out.parent.iterdir()} == {"att.png", "att_img0.png", "att_img1.png"}

    ckpt = _checkpoint(tmp_path / "lstm.pt", "rnn", cell="lstm")
    done = run_tool("caption.py", "-c", ckpt, images[0], "--attention-map", out)
    assert done.returncode == 2
    assert (
        done.stderr.startswith("error: --attention-map needs an attention model")
        and done.stderr.count("\n") == 1
    )


# -- issue 23: the command's own words, folders, the order of samples ----------------------------


def _caption(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    """captioning.cli.caption.main in this process: (status, stdout, stderr)."""
    from captioning.cli.caption import main

    try:
        status = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse's usage errors
        status = exc.code
    out = capsys.readouterr()
    return status, out.out, out.err


def test_caption_errors_name_the_flags_not_the_library_settings(files, capsys):
    ckpt, good = files["gru"], files["good"]
    status, _, err = _caption(capsys, "-c", ckpt, "--n-best", "5", good)
    assert (status, err) == (2, "error: --n-best 5 must be <= --beam-size 1\n")
    status, _, err = _caption(capsys, "-c", ckpt, "--sample", "--beam-size", "3", good)
    assert status == 2 and err.count("\n") == 1
    assert "use --beam-size 1 and --n-best 1 with --sample" in err and "got --beam-size 3" in err
    assert "beam_size" not in err and "sample=" not in err
    status, _, err = _caption(capsys, "-c", ckpt, "--no-repeat-ngram-size", "-1", good)
    assert (status, err) == (2, "error: --no-repeat-ngram-size -1: must be >= 0 (0 = off)\n")
    status, _, err = _caption(capsys, "-c", ckpt, "--max-pixels", "1000", files["big"])
    assert status == 1 and "exceeds --max-pixels 1000; resize the image or raise --max-pixels" in (
        err
    )
    assert "max_pixels" not in err


def test_caption_usage_errors_are_one_line_like_every_other_error(files, capsys):
    status, _, err = _caption(capsys, "-c", files["gru"], "--beam-size", "0", files["good"])
    assert status == 2
    assert err.startswith("error: argument --beam-size: must be at least 1, got 0 (see ")
    assert err.endswith(" --help)\n") and err.count("\n") == 1  # no usage block


def test_a_folder_with_images_only_in_subfolders_says_so_and_recursive_captions_them(
    files, tmp_path, capsys
):
    photos = tmp_path / "photos"
    for name in ("a/x.png", "a/y.png", "b/z.png"):
        (photos / name).parent.mkdir(parents=True, exist_ok=True)
        picture(seed=len(name)).save(photos / name)
    status, out, err = _caption(capsys, "-c", files["gru"], photos)
    assert (status, out) == (2, "")
    assert err == (
        f"error: {photos} has no image files at its top level, but 3 in subfolders (a, b); "
        f"pass a subfolder ({photos / 'a'}), or add --recursive\n"
    )
    status, out, err = _caption(capsys, "-c", files["gru"], "--recursive", photos)
    assert status == 0, err
    assert [line.split("\t")[0] for line in out.splitlines()] == [
        str(photos / name) for name in ("a/x.png", "a/y.png", "b/z.png")
    ]


def test_samples_are_printed_best_first_as_the_page_lists_them(files, captioner, capsys):
    """--num-samples prints each image's samples by log-probability, highest first (issue 23:
    they came in the order drawn), the same samples as drawn."""
    import torch

    from captioning.inference import Captioner

    ckpt, images = files["gru"], [files["good"], files["other"]]
    status, out, err = _caption(
        capsys, "-c", ckpt, "--sample", "--num-samples", "6", "--seed", "0", *images
    )
    assert status == 0, err
    printed: dict[str, list[tuple[float, str]]] = {}
    for line in out.splitlines():
        path, score, caption = line.split("\t")
        printed.setdefault(path, []).append((float(score), caption))
    drawn = Captioner.from_checkpoint(ckpt, device="cpu").generate(
        images,
        sample=True,
        num_samples=6,
        generator=torch.Generator().manual_seed(0),
    )
    unsorted = 0
    for k, path in enumerate(images):
        scores = [s for s, _ in printed[str(path)]]
        assert scores == sorted(scores, reverse=True), scores
        draw_order = [round(s, 4) for s in drawn.scores[k].tolist()]
        assert sorted(draw_order) == sorted(scores)  # the same samples
        unsorted += draw_order != sorted(draw_order, reverse=True)
    assert unsorted  # (else this test could not tell the orders apart)
