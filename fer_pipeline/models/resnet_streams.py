"""The ResNet streams of the Enhanced ConvLSTM paper: a small ResNet-50 on a dynamic image.

Miyoshi, Nagata, Hashimoto, "Facial-Expression Recognition from Video Using Enhanced Convolutional LSTM",
Japanese version section 3.2 and Table 1. A dynamic image (Bilen et al. 2016) of the RGB clip (3 channels)
or of its optical flow (2 channels) goes through a bottleneck ResNet (He et al. 2016) whose widths are
Table 1's, is pooled over space and "activated by tanh to make them the same scale as the features
obtained from the Enhanced ConvLSTM streams".

Table 1 (layer: 1x1, 3x3, 1x1 output channels x blocks)::

    conv1    3x3, 16
    conv2_x  [1x1, 16;  3x3, 16; 1x1, 32]  x 3
    conv3_x  [1x1, 32;  3x3, 32; 1x1, 64]  x 4
    conv4_x  [1x1, 64;  3x3, 32; 1x1, 128] x 6
    conv5_x  [1x1, 128; 3x3, 64; 1x1, 128] x 3

conv4_x's 3x3 is 32 wide although its 1x1 reduction is 64: that is what Table 1 prints, so it is kept (a
bottleneck here is three widths, not one width and an expansion). conv1 and the 3 x 16 block
convolutions are 49 layers; He et al.'s count of 50 adds the classifier, here the fusion's first FC layer.

Not in the paper, chosen here: the stem is a single stride-1 3x3 convolution without max pooling (a 3x3
conv1 is the CIFAR-style stem, for small images); conv3_x to conv5_x halve the resolution in their first
block, on the 3x3 convolution (torchvision's ResNet v1.5); shortcuts are identities, or 1x1 convolutions
with batch normalisation where the shape changes.
"""

from __future__ import annotations

from typing import Sequence

from torch import Tensor, nn

TABLE1_STEM = 16
TABLE1_WIDTHS = ((16, 16, 32), (32, 32, 64), (64, 32, 128), (128, 64, 128))
TABLE1_BLOCKS = (3, 4, 6, 3)
STAGE_STRIDES = (1, 2, 2, 2)


def conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1) -> nn.Sequential:
    """W * x followed by batch normalisation (the convolution has no bias: BN's shift replaces it)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
    )


class Bottleneck(nn.Module):
    """Bottleneck residual block (He et al. 2016, Fig. 5 right) with the three widths of Table 1::

        y = ReLU(BN(W_3 * ReLU(BN(W_2 * ReLU(BN(W_1 * x))))) + shortcut(x))

    W_1 is 1x1 -> widths[0], W_2 is 3x3 (stride ``stride``) -> widths[1], W_3 is 1x1 -> widths[2].
    """

    def __init__(self, in_channels: int, widths: Sequence[int], stride: int = 1):
        super().__init__()
        reduce, middle, out = widths
        self.conv1 = conv_bn(in_channels, reduce, 1)
        self.conv2 = conv_bn(reduce, middle, 3, stride)
        self.conv3 = conv_bn(middle, out, 1)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = (nn.Identity() if stride == 1 and in_channels == out
                         else conv_bn(in_channels, out, 1, stride))

    def forward(self, x: Tensor) -> Tensor:
        y = self.relu(self.conv1(x))
        y = self.relu(self.conv2(y))
        return self.relu(self.conv3(y) + self.shortcut(x))


class ResNetStream(nn.Module):
    """A ResNet stream (section III-B; 3.2 in Japanese): a dynamic image (B, in_channels, H, W) to
    tanh(P · GAP(ResNet(x))), a (B, feature_dim) vector in (-1, 1).

    ``stem_width``, ``widths`` (one (1x1, 3x3, 1x1) triple per stage) and ``blocks`` default to Table 1;
    ``width_multiplier`` scales every width (rounded, at least 1) so a demo can run a thinner network of
    the same shape. P is a linear projection when the last width is not ``feature_dim``, else identity
    (Table 1 ends at 128, the default ``feature_dim``). Any H x W works: the pooling is global.

    The dynamic image is standardised per channel first (batch normalisation): its values are weighted
    sums of 16 frames, tens of times larger than a frame's, and of flow and RGB alike.
    """

    def __init__(self, in_channels: int, feature_dim: int = 128, stem_width: int = TABLE1_STEM,
                 widths: Sequence[Sequence[int]] = TABLE1_WIDTHS, blocks: Sequence[int] = TABLE1_BLOCKS,
                 width_multiplier: float = 1.0):
        super().__init__()
        if len(widths) != len(blocks) or len(widths) > len(STAGE_STRIDES):
            raise ValueError(f"one block count per stage and at most {len(STAGE_STRIDES)} stages: "
                             f"got {len(widths)} width triples and {len(blocks)} block counts")

        def scaled(width: int) -> int:
            return max(1, round(width * width_multiplier))

        self.input_norm = nn.BatchNorm2d(in_channels)
        self.stem = nn.Sequential(conv_bn(in_channels, scaled(stem_width), 3), nn.ReLU(inplace=True))
        channels = scaled(stem_width)
        stages = []
        for triple, count, stride in zip(widths, blocks, STAGE_STRIDES):
            triple = tuple(scaled(w) for w in triple)
            stage = []
            for index in range(count):
                stage.append(Bottleneck(channels, triple, stride if index == 0 else 1))
                channels = triple[2]
            stages.append(nn.Sequential(*stage))
        self.stages = nn.Sequential(*stages)
        self.proj = nn.Identity() if channels == feature_dim else nn.Linear(channels, feature_dim)

    def forward(self, x: Tensor) -> Tensor:
        features = self.stages(self.stem(self.input_norm(x))).mean(dim=(2, 3))
        return self.proj(features).tanh()
