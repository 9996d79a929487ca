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

        z = Σ_s m_s f_s / (1 - p),   m_s ~ Bernoulli(1 - p) per sample in training, m_s = 1 - p in evaluation
        logits = W_3 · drop(ReLU(W_2 · drop(ReLU(W_1 · z + b_1)) + b_2)) + b_3

    with one hidden layer per entry of ``hidden`` (two entries: the paper's three FC layers). The paper
    gives neither the hidden sizes nor the dropout; both come from the caller.

    ``stream_dropout`` p (0 in the paper, whose sum has no mask) drops each stream's whole feature vector
    for a sample with probability p during training, ModDrop (Neverova, Wolf, Taylor, Nebout, "ModDrop:
    adaptive multi-modal gesture recognition", TPAMI 2016). Why: a stream that can fit the training
    subjects by their looks (the RGB ConvLSTM on a few identities) otherwise carries the training loss, and
    on a new face its part of the sum is noise that the other streams were never made to outweigh; with
    its feature missing on a fraction p of the samples, every stream must learn to classify on its own.
    """

    def __init__(self, feature_dim: int, num_classes: int, hidden: Sequence[int] = (128, 64),
                 dropout: float = 0.5, stream_dropout: float = 0.0):
        super().__init__()
        if not 0.0 <= stream_dropout < 1.0:
            raise ValueError(f"stream_dropout is a probability below 1, got {stream_dropout}")
        self.stream_dropout = stream_dropout
        layers: list[nn.Module] = []
        width = feature_dim
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            width = size
        layers.append(nn.Linear(width, num_classes))
        self.mlp = nn.Sequential(*layers)

    def forward(self, features: Sequence[Tensor]) -> Tensor:
        stacked = torch.stack(list(features))                  # (S, B, D)
        if self.training and self.stream_dropout > 0:
            keep = torch.rand(stacked.shape[:2], device=stacked.device) >= self.stream_dropout
            stacked = stacked * keep.unsqueeze(-1).to(stacked.dtype) / (1.0 - self.stream_dropout)
        return self.mlp(stacked.sum(dim=0))


class MultiStreamNet(nn.Module):
    """Streams keyed by the batch field they read, and one :class:`SumFusionHead`.

    Each stream maps ``batch[field]`` to a (B, feature_dim) vector: a ConvLSTM stream reads "rgb"
    (B, L, 3, S, S) or "flow" (B, L-1, 2, S, S), a ResNet stream "dyn_rgb" (B, 3, S, S) or "dyn_flow"
    (B, 2, S, S) (see ``fer_pipeline.windows``). ``forward(batch)`` returns (B, num_classes) logits;
    ``fields`` names the batch fields the network reads, so a loader can read only those.
    """

    def __init__(self, streams: Mapping[str, nn.Module], num_classes: int, feature_dim: int,
                 hidden: Sequence[int] = (128, 64), dropout: float = 0.5, stream_dropout: float = 0.0):
        super().__init__()
        if not streams:
            raise ValueError("a MultiStreamNet needs at least one stream")
        self.streams = nn.ModuleDict(dict(streams))
        self.fusion = SumFusionHead(feature_dim, num_classes, hidden, dropout, stream_dropout)

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(self.streams.keys())

    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        missing = [field for field in self.fields if field not in batch]
        if missing:
            raise KeyError(f"the batch lacks {missing}: this network reads {list(self.fields)}; "
                           f"build its dataset with fields=model.fields")
        return self.fusion([stream(batch[field]) for field, stream in self.streams.items()])
