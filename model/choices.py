"""The names the command line offers, known without importing torch (so `grn --help` answers
at once). The registries they name, `model.backbones.BACKBONES` and `model.losses.LOSSES`,
are checked against them by the tests."""

BACKBONE_NAMES = (
    "efficientnet_lite0",
    "efficientnet_lite1",
    "efficientnet_lite2",
    "resnet18",
    "resnet50",
    "wide_resnet50_2",
    "tiny",
)
LOSS_NAMES = ("sndl", "sndl_bce", "bce")
