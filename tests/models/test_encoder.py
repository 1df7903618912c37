"""Encoders (captioning.models.encoder): shapes, weights, freezing, preprocessing from the weights;
CPU only, no network.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from captioning.contracts import EncoderOutput
from captioning.data.transforms import IMAGENET_MEAN, Preprocess, preprocess_from_weights
from captioning.errors import CaptioningError
from captioning.models.encoder import VGGEncoder, vgg11, vgg16, vgg_tiny

# ---------------------------------------------------------------------------------- encoders


@pytest.mark.parametrize(("size", "side"), [(64, 8), (96, 12)])
def test_vgg_tiny_shapes(size: int, side: int) -> None:
    torch.manual_seed(0)
    enc = vgg_tiny(width=8, image_size=size, vector_dim=64)
    out = enc(torch.randn(2, 3, size, size))
    assert isinstance(out, EncoderOutput)
    assert out.vector.shape == (2, 64) and enc.vector_dim == 64
    assert out.grid.shape == (2, side * side, 32) and enc.grid_dim == 32
    assert enc.grid_size == side * side and enc.image_size == size
    assert enc.num_blocks == 4 and not enc.frozen
    assert (out.vector >= 0).all()  # fc7 after ReLU
    assert enc.preprocess.crop is False and enc.preprocess.crop_size == size


def test_vgg_tiny_vector_keeps_spatial_layout() -> None:
    torch.manual_seed(0)
    enc = vgg_tiny(width=8, vector_dim=32).eval()
    x = torch.zeros(1, 3, 64, 64)
    left, right = x.clone(), x.clone()
    left[..., :, :16] = 3.0
    right[..., :, -16:] = 3.0
    with torch.no_grad():
        assert not torch.allclose(enc(left).vector, enc(right).vector)


def test_vgg_tiny_state_dict_roundtrip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    src = vgg_tiny(width=8, vector_dim=32)
    path = tmp_path / "tiny.pt"
    torch.save(src.state_dict(), path)
    dst = vgg_tiny(weights=path, width=8, vector_dim=32)
    assert torch.equal(dst.features[0].weight, src.features[0].weight)
    with pytest.raises(CaptioningError, match=r"tiny\.pt"):
        vgg_tiny(weights=str(path), width=16, vector_dim=32)
    with pytest.raises(CaptioningError, match="no torchvision weights"):
        vgg_tiny(weights="DEFAULT")


def test_vgg16_shapes_224() -> None:
    enc = vgg16(weights=None).eval()
    with torch.no_grad():
        out = enc(torch.randn(1, 3, 224, 224))
    assert out.vector.shape == (1, 4096)
    assert out.grid.shape == (1, 196, 512)
    assert (enc.vector_dim, enc.grid_dim, enc.grid_size) == (4096, 512, 196)
    assert enc.num_blocks == 5 and enc.frozen  # trainable=False by default
    assert "classifier.6.weight" not in enc.state_dict()
    assert enc.preprocess == Preprocess(256, 224, IMAGENET_MEAN, enc.preprocess.std)


@pytest.fixture(scope="module")
def vgg11_state(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    torch.manual_seed(0)
    state = torchvision.models.vgg11(weights=None).state_dict()
    path = tmp_path_factory.mktemp("weights") / "vgg11.pth"
    torch.save(state, path)
    return path, state


def test_vgg11_local_state_dict(vgg11_state: tuple[Path, dict]) -> None:
    path, state = vgg11_state
    enc = vgg11(weights=str(path), image_size=32)
    assert torch.equal(enc.features[0].weight, state["features.0.weight"])
    assert torch.equal(enc.classifier[3].bias, state["classifier.3.bias"])
    assert enc.grid_size == 4  # 32 px -> 2x2 before pool5


def test_vgg11_weights_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pth"
    with pytest.raises(CaptioningError, match=r"nope\.pth"):
        vgg11(weights=missing)
    wrong = tmp_path / "wrong.pt"
    torch.save({"foo.weight": torch.zeros(3)}, wrong)
    with pytest.raises(CaptioningError, match=r"wrong\.pt.*missing"):
        vgg11(weights=str(wrong))
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    with pytest.raises(CaptioningError, match=r"junk\.pt"):
        vgg11(weights=junk)
    with pytest.raises(CaptioningError, match="IMAGENET1K_V1"):
        vgg11(weights="IMAGENET_V9")
    with pytest.raises(CaptioningError, match="do not fit"):
        vgg11(weights=torchvision.models.VGG16_Weights.IMAGENET1K_V1)


def test_grid_is_prepool_conv5(vgg11_state: tuple[Path, dict]) -> None:
    path, state = vgg11_state
    enc = vgg11(weights=path, image_size=64).eval()
    ref = torchvision.models.vgg11(weights=None).eval()
    ref.load_state_dict(state)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = enc(x)
        conv5 = ref.features[:-1](x)  # (2, 512, 4, 4)
        fc7 = ref.classifier[:5](torch.flatten(ref.avgpool(ref.features(x)), 1))
    assert torch.allclose(out.grid, conv5.flatten(2).transpose(1, 2))
    assert torch.allclose(out.vector, fc7, atol=1e-6)


def _trainable_blocks(enc: VGGEncoder) -> list[bool]:
    return [
        all(p.requires_grad for layer in block for p in layer.parameters()) for block in enc._blocks
    ]


def test_freezing() -> None:
    enc = vgg_tiny(width=4, vector_dim=8, trainable=False)
    assert enc.frozen and not any(p.requires_grad for p in enc.parameters())
    enc.train()
    assert not any(m.training for m in list(enc.modules())[1:])  # frozen: dropout, BN in eval
    enc = vgg11(image_size=32, trainable=True, fine_tune_from=4, batch_norm=True)
    assert _trainable_blocks(enc) == [False, False, False, True, True]
    assert all(p.requires_grad for p in enc.classifier.parameters())
    enc.train()
    assert not enc.features[1].training and enc.features[-3].training  # frozen BN in eval
    enc.set_trainable(True)
    assert all(p.requires_grad for p in enc.parameters())
    with pytest.raises(CaptioningError, match="fine_tune_from"):
        enc.set_trainable(True, fine_tune_from=6)
    with pytest.raises(CaptioningError, match="trainable=True"):
        enc.set_trainable(False, fine_tune_from=2)


def test_bad_input_shape() -> None:
    with pytest.raises(CaptioningError, match=r"\(B, 3, H, W\)"):
        vgg_tiny(width=4, vector_dim=8)(torch.randn(3, 64, 64))
    with pytest.raises(CaptioningError, match="too small"):
        vgg_tiny(width=4, image_size=8)


# ----------------------------------------------------------------------------- preprocessing


def test_preprocess_from_weights_metadata() -> None:
    weights = torchvision.models.VGG16_Weights.IMAGENET1K_V1  # metadata only, no download
    pre = preprocess_from_weights(weights)
    assert (pre.resize_size, pre.crop_size, pre.crop) == (256, 224, True)
    assert pre.mean == pytest.approx((0.485, 0.456, 0.406))
    assert pre.std == pytest.approx((0.229, 0.224, 0.225))
    big = preprocess_from_weights(weights, image_size=448)
    assert (big.resize_size, big.crop_size) == (512, 448)
    feats = preprocess_from_weights(torchvision.models.VGG16_Weights.IMAGENET1K_FEATURES)
    assert feats.std[0] == pytest.approx(1 / 255)
