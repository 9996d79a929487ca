"""VGG-Face: VGG-16 (configuration D of Simonyan & Zisserman 2015) as Parkhi, Vedaldi, Zisserman trained it
for face recognition ("Deep Face Recognition", BMVC 2015), the frame network of Xu et al. (EmotiW 2017).

Thirteen 3x3 convolutions (stride 1, padding 1) with ReLU in five blocks, each ending in 2x2 max pooling,
then three fully connected layers::

    conv 64 x2, pool | conv 128 x2, pool | conv 256 x3, pool | conv 512 x3, pool | conv 512 x3, pool
    fc6 = W_6 · flatten(pool5) + b_6          (4096: the frame feature Xu et al. aggregate and the LSTM reads)
    fc7 = W_7 · drop(ReLU(fc6)) + b_7         (4096)
    logits = W_8 · drop(ReLU(fc7)) + b_8      (the emotion classes; replaced when fine-tuning)

Inputs are RGB in [0, 1], normalised with VGG-Face's mean pixel (129.186, 104.762, 93.594 in 0..255).
``input_size`` (224 in the paper: 128-pixel aligned crops scaled up) fixes fc6's input (512 x 7 x 7 at 224);
``width_multiplier`` scales the convolutions and ``fc_width`` the fully connected layers, so a demo trains
the same shape small. ``batch_norm`` adds batch normalisation after each convolution (torchvision's
vgg16_bn): not in VGG-Face, whose weights then no longer fit, but it lets a small network learn from
scratch. Parameter names: ``features.<i>`` (as torchvision's VGG), ``fc6``, ``fc7``, ``fc8`` (the head).
"""

from __future__ import annotations

from torch import Tensor, nn

from . import register_model
from .parts import PixelNorm, he_init_convolutions, scale_width

VGG16_LAYERS = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
VGG_FACE_MEAN = (129.1863, 104.7624, 93.5940)


class VGGFace(nn.Module):
    """VGG-16 on one frame: ``forward(batch)`` maps ``batch["rgb"]`` (B, 3, S, S) to (B, num_classes)
    logits; :meth:`extract` gives fc6 (B, fc_width)."""

    fields = ("rgb",)
    head = "fc8"

    def __init__(self, num_classes: int, input_size: int = 224, width_multiplier: float = 1.0,
                 fc_width: int = 4096, batch_norm: bool = False, dropout: float = 0.5):
        super().__init__()
        pools = VGG16_LAYERS.count("M")
        if input_size < 2 ** pools:
            raise ValueError(f"VGG-16 pools {pools} times: input_size must be at least {2 ** pools}, got {input_size}")
        self.input_norm = PixelNorm(VGG_FACE_MEAN)
        layers: list[nn.Module] = []
        channels, spatial = 3, input_size
        for item in VGG16_LAYERS:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
                spatial //= 2
                continue
            width = scale_width(item, width_multiplier)
            layers.append(nn.Conv2d(channels, width, 3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.ReLU(inplace=True))
            channels = width
        self.features = nn.Sequential(*layers)
        self.fc6 = nn.Linear(channels * spatial * spatial, fc_width)
        self.fc7 = nn.Linear(fc_width, fc_width)
        self.fc8 = nn.Linear(fc_width, num_classes)
        self.drop = nn.Dropout(dropout)
        self.relu = nn.ReLU()
        self.input_size = input_size
        he_init_convolutions(self)

    def extract(self, x: Tensor) -> Tensor:
        """fc6 (before its ReLU) of frames (B, 3, S, S): the frame feature."""
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            raise ValueError(f"this VGG-16 is built for {self.input_size} x {self.input_size} inputs "
                             f"(fc6's size depends on it), got {tuple(x.shape[-2:])}")
        return self.fc6(self.features(self.input_norm(x)).flatten(1))

    def forward(self, batch) -> Tensor:
        fc7 = self.fc7(self.drop(self.relu(self.extract(batch["rgb"]))))
        return self.fc8(self.drop(self.relu(fc7)))


@register_model
def vgg_face(num_classes: int, **sizes) -> VGGFace:
    """VGG-FACE: VGG-16, fc6 frame features (Parkhi et al. 2015)"""
    return VGGFace(num_classes, **sizes)
