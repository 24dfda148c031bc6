"""The paper's Section 4 networks as plain PyTorch modules: VGG-19 and the CIFAR ResNet
the paper calls "ResNet-18" (registered as `vgg19` and `resnet20` in
`lth_lib.protocol.NETWORKS`, which also holds how they are trained and pruned).

Both follow the paper's Figure 2 table and Appendix I (arXiv 1803.03635v5):
- VGG-19 (App. I.2, "adapted from Liu et al. 2019"): five groups of 3x3 convolutions,
  64x2, 128x2, 256x4, 512x4, 512x4, each convolution followed by batch normalisation and
  ReLU; the first four groups end in 2x2 max pooling, the last in average pooling; one
  dense output layer 512 -> 10. 20,018,880 conv weights and 5,120 output weights: the
  table's "20.0M".
- ResNet (App. I.3): "a convolutional layer followed by nine pairs of convolutional layers
  (with residual connections around the pairs), average pooling, and a fully-connected
  output layer": 20 layers with weights, so it is ResNet-20 in He et al. (2016)'s naming
  for CIFAR, not the ImageNet ResNet-18 (11M weights) torchvision names so. Filters 16,
  3x[16, 16], 3x[32, 32], 3x[64, 64], batch normalisation after every convolution. The
  paper's "2,560 parameters used to downsample residual connections" (16x32 + 32x64) are
  1x1 convolutions of stride 2 where the width doubles. 267,696 3x3-conv weights, 2,560
  shortcut weights and 640 output weights: 270,896, the text's "271,000" (the table's
  "270K" conv weights; its "274K" in all does not follow from the layer list).

Convolutions carry no bias (batch normalisation's shift takes its place); the dense
layer does. The paper does not say either way; this is the usual choice (open_lth's too).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

VGG19_PLAN = (
    64,
    64,
    "pool",
    128,
    128,
    "pool",
    256,
    256,
    256,
    256,
    "pool",
    512,
    512,
    512,
    512,
    "pool",
    512,
    512,
    512,
    512,
)
RESNET_WIDTHS = (16, 32, 64)  # the three stages' filters
RESNET_BLOCKS = 3  # residual blocks (pairs of convolutions) per stage


class VGG(nn.Module):
    """A VGG for 32x32 images: `plan` lists the convolutions' widths and "pool" for 2x2
    max pooling; average pooling over what is left, then one dense layer to the classes."""

    def __init__(self, plan: tuple = VGG19_PLAN, classes: int = 10, channels: int = 3):
        super().__init__()
        layers: list[nn.Module] = []
        for width in plan:
            if width == "pool":
                layers.append(nn.MaxPool2d(2))
            else:
                layers += [
                    nn.Conv2d(channels, width, 3, padding=1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(),
                ]
                channels = width
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class Block(nn.Module):
    """Two 3x3 convolutions with batch normalisation, around them a residual connection
    (a 1x1 convolution of stride 2 with batch normalisation where the width doubles)."""

    def __init__(self, inputs: int, width: int):
        super().__init__()
        stride = 1 if inputs == width else 2
        self.conv1 = nn.Conv2d(inputs, width, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.shortcut = nn.Sequential()
        if stride != 1:
            self.shortcut = nn.Sequential(
                nn.Conv2d(inputs, width, 1, stride=2, bias=False), nn.BatchNorm2d(width)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """The CIFAR ResNet of He et al. (2016): a 3x3 convolution, three stages of `blocks`
    residual blocks at `widths`, average pooling, one dense layer to the classes."""

    def __init__(self, widths: tuple = RESNET_WIDTHS, blocks: int = RESNET_BLOCKS, classes: int = 10):
        super().__init__()
        self.conv = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(widths[0])
        stages, inputs = [], widths[0]
        for width in widths:
            for _ in range(blocks):
                stages.append(Block(inputs, width))
                inputs = width
        self.blocks = nn.Sequential(*stages)
        self.fc = nn.Linear(inputs, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(F.relu(self.bn(self.conv(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def vgg19() -> VGG:
    """VGG-19 as the paper's Section 4 trains it."""
    return VGG()


def resnet20() -> ResNet:
    """The paper's "ResNet-18": the 20-layer CIFAR ResNet."""
    return ResNet()
