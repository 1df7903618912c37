"""The Captioner (captioning.inference)."""

from __future__ import annotations

from helpers import tiny_checkpoint, write_bad_images
from PIL import Image

from captioning.data.images import ImageLoadError
from captioning.inference import Captioner


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


# -- Captioner and tools/caption.py ------------------------------------------------------------


def test_captioner_n_best(checkpoint):
    path, images = checkpoint
    captioner = Captioner.from_checkpoint(path, device="cpu")
    files = sorted(images.glob("*.png"))
    assert isinstance(captioner.caption(files[0]), str)
    assert isinstance(captioner.caption(files[0], beam_size=3), str)
    three = captioner.caption(files[0], beam_size=3, n_best=3)
    assert isinstance(three, list) and len(three) == 3
    many = captioner.caption(files, beam_size=3, n_best=2)
    assert len(many) == 3 and all(len(c) == 2 for c in many) and many[0] == three[:2]
    assert captioner.caption(files, beam_size=3) == [c[0] for c in many]
