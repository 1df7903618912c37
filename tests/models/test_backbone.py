"""Any torchvision classifier as an encoder (captioning.models.backbone): family defaults against
the torchvision model computed directly, torchvision-format weight files, ViT tokens, one-line
errors for unknown names. Small images, random weights, CPU only, no network.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision

from captioning.errors import CaptioningError
from captioning.models.backbone import backbone


def _saved(tmp_path: Path, arch: str, **kwargs) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    ref = torchvision.models.get_model(arch, weights=None, **kwargs).eval()
    path = tmp_path / f"{arch}.pth"
    torch.save(ref.state_dict(), path)
    return path, ref


def test_resnet18_backbone_is_layer4_and_its_average(tmp_path: Path) -> None:
    path, ref = _saved(tmp_path, "resnet18")
    enc = backbone(arch="resnet18", weights=path, image_size=64, grid_size=3).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = enc(x)
        stem = ref.maxpool(ref.relu(ref.bn1(ref.conv1(x))))
        layer4 = ref.layer4(ref.layer3(ref.layer2(ref.layer1(stem))))  # (2, 512, 2, 2)
    assert out.vector.shape == (2, 512) and out.grid.shape == (2, 9, 512)
    pooled = F.adaptive_avg_pool2d(layer4, 3).flatten(2).transpose(1, 2)
    assert torch.allclose(out.grid, pooled, atol=1e-6)
    assert torch.allclose(out.vector, layer4.mean(dim=(2, 3)), atol=1e-6)
    assert enc.stage_names == [f"model.layer{i}" for i in range(1, 5)]
    enc.set_trainable(True, fine_tune_from=4)
    learning = {n for n, p in enc.named_parameters() if p.requires_grad}
    assert learning and all(n.startswith("model.layer4.") for n in learning)


def test_mobilenet_features_map_with_a_local_file(tmp_path: Path) -> None:
    path, ref = _saved(tmp_path, "mobilenet_v3_small")
    enc = backbone(arch="mobilenet_v3_small", weights=str(path), image_size=64).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = enc(x)
        fmap = ref.features(x)  # (2, 576, 2, 2)
    assert out.grid.shape == (2, 4, 576) and enc.num_regions == 4 and enc.grid_side == 2
    assert torch.allclose(out.grid, fmap.flatten(2).transpose(1, 2), atol=1e-6)
    assert torch.allclose(out.vector, fmap.mean(dim=(2, 3)), atol=1e-6)  # the avgpool's output
    assert enc.preprocess.crop_size == 64 and not any(p.requires_grad for p in enc.parameters())
    wrong = tmp_path / "other.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), wrong)
    with pytest.raises(CaptioningError, match=r"other\.pth does not match mobilenet_v3_small"):
        backbone(arch="mobilenet_v3_small", weights=wrong, image_size=64)


@pytest.mark.slow  # two ViT-B/16 builds: about 10 s idle, 27 s on the shared machine
def test_vit_patch_tokens_are_the_grid_and_class_token_the_vector(tmp_path: Path) -> None:
    path, ref = _saved(tmp_path, "vit_b_16", image_size=32)
    enc = backbone(arch="vit_b_16", weights=path, image_size=32).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        out = enc(x)
        patches = ref._process_input(x)  # (2, 4, 768)
        tokens = torch.cat([ref.class_token.expand(2, -1, -1), patches], dim=1)
        encoded = ref.encoder(tokens)  # (2, 5, 768) after the final LayerNorm
    assert out.grid.shape == (2, 4, 768) and out.vector.shape == (2, 768)
    assert torch.allclose(out.grid, encoded[:, 1:], atol=1e-5)
    assert torch.allclose(out.vector, encoded[:, 0], atol=1e-5)
    assert torch.allclose(ref.heads(out.vector), ref(x), atol=1e-5)
    enc.set_trainable(True, fine_tune_from=12)  # only the last block and the final norm learn
    learning = {n.split(".")[3] for n, p in enc.named_parameters() if p.requires_grad}
    assert learning == {"encoder_layer_11", "weight", "bias"}  # + encoder.ln.weight / .bias
    pooled = backbone(arch="vit_b_16", image_size=64, grid_size=2).eval()  # 4x4 patches -> 2x2
    with torch.no_grad():
        assert pooled(torch.randn(1, 3, 64, 64)).grid.shape == (1, 4, 768)


def test_unknown_arch_lists_close_names() -> None:
    with pytest.raises(CaptioningError, match=r"close names: resnet50, .*list_models") as info:
        backbone(arch="resnet5")
    assert "\n" not in str(info.value)
    with pytest.raises(CaptioningError, match=r"convnext_tiny"):
        backbone(arch="convnext_tiy")


def test_unknown_node_and_pretrained_vit_size_are_one_line() -> None:
    with pytest.raises(CaptioningError, match=r"resnet18 has no node 'layer9' \(close: layer"):
        backbone(arch="resnet18", grid_node="layer9", image_size=32)
    with pytest.raises(CaptioningError, match=r"takes 224 px images"):
        backbone(arch="vit_b_16", weights="DEFAULT", image_size=32)  # fails before any download
