"""ResNet encoders (captioning.models.resnet) and the shared weights (captioning.models.weights):
shapes, the grid against layer4 pooled directly, torchvision-format weight files, one-line errors,
preprocessing from the weights, fine-tuning from a stage. CPU only, no network (downloads faked).
"""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torchvision.models import ResNet50_Weights, WeightsEnum

from captioning.data.transforms import IMAGENET_MEAN, Preprocess
from captioning.errors import CaptioningError
from captioning.models.resnet import resnet50
from captioning.models.weights import WeightsUnavailableError
from captioning.training.finetune import encoder_learns


@pytest.fixture(scope="module")
def resnet50_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    """A state dict saved from ``torchvision.models.resnet50(weights=None)``, and that model."""
    torch.manual_seed(0)
    ref = torchvision.models.resnet50(weights=None).eval()
    path = tmp_path_factory.mktemp("weights") / "resnet50.pth"
    torch.save(ref.state_dict(), path)
    return path, ref


def test_local_file_gives_torchvision_outputs_and_grid_is_pooled_layer4(resnet50_file) -> None:
    path, ref = resnet50_file
    enc = resnet50(weights=str(path), image_size=64, grid_size=3).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = enc(x)
        stem = ref.maxpool(ref.relu(ref.bn1(ref.conv1(x))))
        layer4 = ref.layer4(ref.layer3(ref.layer2(ref.layer1(stem))))  # (2, 2048, 2, 2)
        logits = ref(x)
    assert out.vector.shape == (2, 2048) and out.grid.shape == (2, 9, 2048)
    assert (enc.vector_dim, enc.grid_dim, enc.grid_side, enc.num_regions) == (2048, 2048, 3, 9)
    pooled = F.adaptive_avg_pool2d(layer4, 3).flatten(2).transpose(1, 2)  # (2, 9, 2048)
    assert torch.allclose(out.grid, pooled, atol=1e-6)
    assert torch.allclose(out.vector, ref.avgpool(layer4).flatten(1), atol=1e-6)
    assert torch.allclose(ref.fc(out.vector), logits, atol=1e-5)  # the classifier's own input
    assert "fc.weight" not in enc.state_dict() and "layer4.2.conv3.weight" in enc.state_dict()


def test_grid_default_is_14x14_and_null_keeps_layer4_map() -> None:
    enc = resnet50(image_size=64).eval()
    with torch.no_grad():
        assert enc(torch.randn(1, 3, 64, 64)).grid.shape == (1, 196, 2048)
        native = resnet50(image_size=64, grid_size=None).eval()
        assert native(torch.randn(1, 3, 64, 64)).grid.shape == (1, 4, 2048)  # 64 / 32 = 2
    assert native.num_regions == 4 and enc.frozen  # trainable=False by default


def test_weight_file_errors_are_one_line(tmp_path: Path, resnet50_file) -> None:
    wrong = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), wrong)
    junk = tmp_path / "junk.pt"
    junk.write_text("not a checkpoint")
    cases = [
        (tmp_path / "nope.pth", r"nope\.pth does not exist"),
        (wrong, r"resnet18\.pth does not match resnet50: .*wrong shape"),
        (junk, r"junk\.pt is not a loadable state dict"),
        ("IMAGENET_V9", "IMAGENET1K_V1, IMAGENET1K_V2"),
        (torchvision.models.VGG16_Weights.IMAGENET1K_V1, "use ResNet50_Weights"),
    ]
    for weights, message in cases:
        with pytest.raises(CaptioningError, match=message) as info:
            resnet50(weights=weights)
        assert "\n" not in str(info.value)


def test_offline_download_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def offline(self, *args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(WeightsEnum, "get_state_dict", offline)
    with pytest.raises(WeightsUnavailableError, match=r"\(URLError: .*hub/checkpoints") as info:
        resnet50(weights="DEFAULT")
    assert isinstance(info.value, OSError) and "\n" not in str(info.value)


def test_preprocessing_comes_from_the_weights(monkeypatch: pytest.MonkeyPatch, resnet50_file):
    path, ref = resnet50_file
    monkeypatch.setattr(WeightsEnum, "get_state_dict", lambda self, **kw: ref.state_dict())
    enc = resnet50(weights="DEFAULT")  # IMAGENET1K_V2: resize 232, crop 224
    tf = ResNet50_Weights.IMAGENET1K_V2.transforms()
    assert enc.preprocess == Preprocess(232, 224, tuple(tf.mean), tuple(tf.std))
    squashed = resnet50(weights="IMAGENET1K_V1", image_size=256, crop=False)
    assert squashed.preprocess == Preprocess(256, 256, IMAGENET_MEAN, tuple(tf.std), crop=False)
    assert resnet50(weights=path).preprocess == Preprocess(256, 224, IMAGENET_MEAN, tuple(tf.std))


def _learning(enc: torch.nn.Module) -> dict[str, bool]:
    names = ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")
    return {n: all(p.requires_grad for p in getattr(enc, n).parameters()) for n in names}


def test_fine_tune_from_stage_2_freezes_stem_and_layer1_as_the_tutorial() -> None:
    enc = resnet50(image_size=64, trainable=True, fine_tune_from=2)
    assert _learning(enc) == {
        "conv1": False,
        "bn1": False,
        "layer1": False,
        "layer2": True,
        "layer3": True,
        "layer4": True,
    }
    enc.train()
    assert not enc.bn1.training and not enc.layer1[0].bn1.training  # frozen BN: running stats
    assert enc.layer2[0].bn1.training
    with pytest.raises(CaptioningError, match=r"from 1 to 4 \(1 = layer1, .*4 = layer4\)"):
        enc.set_trainable(True, fine_tune_from=5)
    with pytest.raises(CaptioningError, match="trainable=True"):
        enc.set_trainable(False, fine_tune_from=2)


def test_fine_tuning_phase_switches_a_frozen_resnet_on() -> None:
    enc = resnet50(image_size=64, trainable=False)
    model = torch.nn.Module()
    model.encoder = enc
    kwargs = {"trainable": True, "finetune_after": 1, "fine_tune_from": 2}
    assert not encoder_learns(model, 1, **kwargs) and enc.frozen
    assert encoder_learns(model, 2, **kwargs)
    assert _learning(enc)["layer2"] and not _learning(enc)["layer1"]
