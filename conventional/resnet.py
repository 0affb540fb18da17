"""ResNet-50 and Wide-ResNet-50-2 (PatchCore's backbone in its paper) in torchvision's state-dict
naming, so a user's local weights file loads as is. No weights ship with mmad and nothing is
downloaded: these backbones need `--weights FILE`.
"""

from __future__ import annotations

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 -> 1x1 residual block with 4x channel expansion."""

    def __init__(self, cin: int, planes: int, stride: int, width_factor: int) -> None:
        super().__init__()
        width = planes * width_factor
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != planes * 4:
            self.downsample = nn.Sequential(nn.Conv2d(cin, planes * 4, 1, stride=stride, bias=False),
                                            nn.BatchNorm2d(planes * 4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + (self.downsample(x) if self.downsample is not None else x))


class ResNet(nn.Module):
    """Bottleneck ResNet; `features()` returns layer1..layer4 (strides 4, 8, 16, 32)."""

    # Stage indices into features(): PatchCore uses layer2 + layer3, PaDiM layer1-3 on layer2's grid.
    patchcore_stages = (1, 2)
    padim_stages = (0, 1, 2)
    padim_grid = 1

    def __init__(self, width_factor: int = 1, blocks: tuple[int, ...] = (3, 4, 6, 3), num_classes: int = 1000) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        cin = 64
        for index, (planes, count) in enumerate(zip((64, 128, 256, 512), blocks), start=1):
            layers = []
            for b in range(count):
                layers.append(Bottleneck(cin, planes, 2 if b == 0 and index > 1 else 1, width_factor))
                cin = planes * 4
            setattr(self, f"layer{index}", nn.Sequential(*layers))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2048, num_classes)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """0..255 RGB -> ImageNet mean/std, as torchvision's weights expect."""
        mean = torch.tensor(IMAGENET_MEAN, device=pixels.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=pixels.device).view(1, 3, 1, 1)
        return (pixels / 255.0 - mean) / std

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outputs = []
        for index in range(1, 5):
            x = getattr(self, f"layer{index}")(x)
            outputs.append(x)
        return outputs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.features(x)[-1]), 1))


def resnet50() -> ResNet:
    return ResNet(width_factor=1)


def wide_resnet50_2() -> ResNet:
    return ResNet(width_factor=2)
