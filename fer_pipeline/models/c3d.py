"""C3D (Tran, Bourdev, Fergus, Torresani, Paluri, "Learning Spatiotemporal Features with 3D Convolutional
Networks", ICCV 2015), the clip network of Xu et al. (EmotiW 2017): "8 convolutional layers, 5 pooling
layers, two fully connected layers and a SoftMax output layer"; the last fully connected layer (4096) is the
video's feature, for a linear SVM.

All convolutions are 3x3x3 (stride 1, padding 1) with ReLU; pool1 is 1x2x2 (it keeps early temporal
detail), pool2-pool5 are 2x2x2, pool5 padded by one pixel in space (112 -> 4x4 as in the original)::

    conv1 64, pool1 | conv2 128, pool2 | conv3a, conv3b 256, pool3 | conv4a, conv4b 512, pool4 |
    conv5a, conv5b 512, pool5
    v    = mean over the remaining time steps of pool5                   (512 x 4 x 4 at 112 x 112)
    fc6  = ReLU(W_6 · flatten(v) + b_6)                                  (4096)
    fc7  = W_7 · drop(fc6) + b_7                                         (4096: the video feature)
    logits = W_8 · drop(ReLU(fc7)) + b_8

C3D was built for 16-frame clips, which pool5 reduces to one time step. Xu et al. feed "a series of the
length of 128 sequent faces" without saying how 128 frames reach fc6; here the convolutional trunk runs
over all the frames (pool5 leaves 128 / 16 = 8 steps) and their mean enters fc6: Tran et al. likewise
average clip features over a video. So fc6 keeps its size and Sports-1M weights keep fitting. Clips need
at least 16 frames.

Inputs are RGB in [0, 1] (B, T, 3, H, W) at ``crop`` x ``crop`` (112 after resizing to 128 x 171, as
Tran et al. and Xu et al.), less the Sports-1M model's mean colour (about 90, 98, 101 in RGB, 0..255).
``width_multiplier``, ``fc_width`` and ``crop`` make demos small; ``batch_norm`` (not in C3D) lets a small
network learn from scratch. Parameter names are those of the common PyTorch port of the Sports-1M model
(``conv1`` ... ``conv5b``, ``fc6``, ``fc7``, ``fc8``: the head).
"""

from __future__ import annotations

from torch import Tensor, nn

from . import register_model
from .parts import PixelNorm, he_init_convolutions, scale_width

# (name, width) of each convolution, and the pooling after it (None: none).
C3D_LAYERS = (("conv1", 64, (1, 2, 2)), ("conv2", 128, (2, 2, 2)), ("conv3a", 256, None),
              ("conv3b", 256, (2, 2, 2)), ("conv4a", 512, None), ("conv4b", 512, (2, 2, 2)),
              ("conv5a", 512, None), ("conv5b", 512, (2, 2, 2)))
MIN_FRAMES = 16  # four temporal poolings
SPORTS1M_MEAN = (90.25, 97.66, 101.41)


class C3D(nn.Module):
    """C3D on a face clip: ``forward(batch)`` maps ``batch["rgb"]`` (B, T, 3, crop, crop) to
    (B, num_classes) logits; :meth:`extract` gives fc7 (B, fc_width)."""

    fields = ("rgb",)
    head = "fc8"

    def __init__(self, num_classes: int, crop: int = 112, width_multiplier: float = 1.0, fc_width: int = 4096,
                 batch_norm: bool = False, dropout: float = 0.5):
        super().__init__()
        self.input_norm = PixelNorm(SPORTS1M_MEAN)
        channels, spatial = 3, crop
        self.blocks = nn.ModuleDict()
        for name, width, pool in C3D_LAYERS:
            width = scale_width(width, width_multiplier)
            layers: list[nn.Module] = [nn.Conv3d(channels, width, 3, padding=1)]
            if batch_norm:
                layers.append(nn.BatchNorm3d(width))
            layers.append(nn.ReLU(inplace=True))
            if pool is not None:
                last = name == "conv5b"
                layers.append(nn.MaxPool3d(pool, pool, padding=(0, 1, 1) if last else 0))
                spatial = (spatial + 2 * last - 2) // 2 + 1
            self.blocks[name] = nn.Sequential(*layers)
            channels = width
        if spatial < 1:
            raise ValueError(f"C3D pools space 16-fold: crop {crop} is too small")
        self.fc6 = nn.Linear(channels * spatial * spatial, fc_width)
        self.fc7 = nn.Linear(fc_width, fc_width)
        self.fc8 = nn.Linear(fc_width, num_classes)
        self.drop = nn.Dropout(dropout)
        self.relu = nn.ReLU()
        self.crop = crop
        he_init_convolutions(self)

    def extract(self, clips: Tensor) -> Tensor:
        """fc7 (before its ReLU) of clips (B, T, 3, crop, crop): the video feature."""
        if clips.shape[1] < MIN_FRAMES or clips.shape[-1] != self.crop or clips.shape[-2] != self.crop:
            raise ValueError(f"C3D takes (B, T >= {MIN_FRAMES}, 3, {self.crop}, {self.crop}) clips, got "
                             f"{tuple(clips.shape)}")
        x = self.input_norm(clips.transpose(1, 2))  # (B, 3, T, H, W)
        for block in self.blocks.values():
            x = block(x)
        fc6 = self.relu(self.fc6(x.mean(dim=2).flatten(1)))
        return self.fc7(self.drop(fc6))

    def forward(self, batch) -> Tensor:
        return self.fc8(self.drop(self.relu(self.extract(batch["rgb"]))))


@register_model
def c3d(num_classes: int, **sizes) -> C3D:
    """C3D: 8 conv, 5 pool, 2 fc on face clips, fc7 video features (Tran et al. 2015)"""
    return C3D(num_classes, **sizes)
