"""Multi-stream network of the Enhanced ConvLSTM paper: streams, summed, then fully connected layers.

Miyoshi, Nagata, Hashimoto, "Facial-Expression Recognition from Video Using Enhanced Convolutional LSTM",
section III (3 in Japanese) and Fig. 2: "the feature maps obtained from the four streams are totaled and
inputted to the fully connected layers" — three of them ("3層の全結合層"). As in pytorchvideo's
``MultiPathWayWithFuse``, the streams and the fusion are separate modules, so one network class serves
every row of the ablation (Table I): a variant is a choice of streams.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor, nn


class SumFusionHead(nn.Module):
    """Sum of the streams' features, then fully connected layers to class logits::

        z = Σ_s f_s
        logits = W_3 · drop(ReLU(W_2 · drop(ReLU(W_1 · z + b_1)) + b_2)) + b_3

    with one hidden layer per entry of ``hidden`` (two entries: the paper's three FC layers). The paper
    gives neither the hidden sizes nor the dropout; both come from the caller.
    """

    def __init__(self, feature_dim: int, num_classes: int, hidden: Sequence[int] = (128, 64),
                 dropout: float = 0.5):
        super().__init__()
        layers: list[nn.Module] = []
        width = feature_dim
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, num_classes))
        self.mlp = nn.Sequential(*layers)

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        return self.mlp(torch.stack(list(features)).sum(dim=0))


class MultiStreamNet(nn.Module):
    """Streams keyed by the batch field they read, and one :class:`SumFusionHead`.

    Each stream maps ``batch[field]`` to a (B, feature_dim) vector: a ConvLSTM stream reads "rgb"
    (B, L, 3, S, S) or "flow" (B, L-1, 2, S, S), a ResNet stream "dyn_rgb" (B, 3, S, S) or "dyn_flow"
    (B, 2, S, S) (see ``fer_pipeline.windows``). ``forward(batch)`` returns (B, num_classes) logits;
    ``fields`` names the batch fields the network reads, so a loader can read only those.
    """

    def __init__(self, streams: Mapping[str, nn.Module], num_classes: int, feature_dim: int,
                 hidden: Sequence[int] = (128, 64), dropout: float = 0.5):
        super().__init__()
        if not streams:
            raise ValueError("a MultiStreamNet needs at least one stream")
        self.streams = nn.ModuleDict(dict(streams))
        self.fusion = SumFusionHead(feature_dim, num_classes, hidden, dropout)

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(self.streams.keys())

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        missing = [field for field in self.fields if field not in batch]
        if missing:
            raise KeyError(f"the batch lacks {missing}: this network reads {list(self.fields)}; "
                           f"build its dataset with fields=model.fields")
        return self.fusion([stream(batch[field]) for field, stream in self.streams.items()])
