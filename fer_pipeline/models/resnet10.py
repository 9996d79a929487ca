"""ResNet-10 with an added fc1: the second frame network of Xu et al. (EmotiW 2017).

Xu et al. use "the ResNet-10 network [Simon, Rodner, Denzler 2016, 'ImageNet pre-trained models with batch
normalization'] which only consists of 4 residual blocks", because deeper ResNets over-fit the small emotion
data, and "add another fully connected layer 1 (fc1) between the global pool layer and the last fully
connected layer"; fc1 (512) is the frame feature. That is He et al.'s ResNet with one basic block per stage::

    stem   = maxpool_3x3/2(ReLU(BN(conv_7x7/2,64(x))))
    block  y = ReLU(BN(W_2 * ReLU(BN(W_1 * x))) + shortcut(x))      (3x3 convolutions; 64, 128, 256, 512
                                                                       wide, the last three with stride 2)
    fc1    = W_f1 · GAP(block_4) + b_f1                            (512: the frame feature)
    logits = W_fc · drop(ReLU(fc1)) + b_fc

Inputs are RGB in [0, 1], normalised with ImageNet's mean and std (the pretrained weights' statistics); any
input size of at least 32 works (the pooling is global; the paper uses 150 x 150). ``width_multiplier``
scales the convolutions and ``fc1_width`` fc1, for small demos. Parameter names follow torchvision's ResNet
(``conv1``, ``bn1``, ``layer1.0.conv1``, ...), so ImageNet weights saved from a torchvision-style ResNet-10
load; ``fc1`` is new and ``fc`` the head.
"""

from __future__ import annotations

from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock

from . import register_model
from .parts import PixelNorm, scale_width

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)
STAGE_WIDTHS = (64, 128, 256, 512)
STAGE_STRIDES = (1, 2, 2, 2)
MIN_INPUT = 32  # the stem and three strided stages reduce the input 32-fold


class ResNet10(nn.Module):
    """ResNet-10 with fc1 on one frame: ``forward(batch)`` maps ``batch["rgb"]`` (B, 3, S, S) to
    (B, num_classes) logits; :meth:`extract` gives fc1 (B, fc1_width)."""

    fields = ("rgb",)
    head = "fc"

    def __init__(self, num_classes: int, input_size: int = 150, width_multiplier: float = 1.0,
                 fc1_width: int = 512, dropout: float = 0.0):
        super().__init__()
        if input_size < MIN_INPUT:
            raise ValueError(f"ResNet-10 reduces its input {MIN_INPUT}-fold: input_size must be at least "
                             f"{MIN_INPUT}, got {input_size}")
        self.input_norm = PixelNorm(IMAGENET_MEAN, IMAGENET_STD)
        stem = scale_width(64, width_multiplier)
        self.conv1 = nn.Conv2d(3, stem, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        channels = stem
        for index, (width, stride) in enumerate(zip(STAGE_WIDTHS, STAGE_STRIDES), start=1):
            width = scale_width(width, width_multiplier)
            shortcut = None
            if stride != 1 or channels != width:
                shortcut = nn.Sequential(nn.Conv2d(channels, width, 1, stride, bias=False), nn.BatchNorm2d(width))
            setattr(self, f"layer{index}", nn.Sequential(BasicBlock(channels, width, stride, shortcut)))
            channels = width
        self.fc1 = nn.Linear(channels, fc1_width)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(fc1_width, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")

    def extract(self, x: Tensor) -> Tensor:
        """fc1 (before its ReLU) of frames (B, 3, S, S): the frame feature."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(self.input_norm(x)))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc1(x.mean(dim=(2, 3)))

    def forward(self, batch) -> Tensor:
        return self.fc(self.drop(self.relu(self.extract(batch["rgb"]))))


@register_model
def resnet10(num_classes: int, **sizes) -> ResNet10:
    """ResNet-10: 4 residual blocks and fc1, fc1 frame features (Simon et al. 2016)"""
    return ResNet10(num_classes, **sizes)
