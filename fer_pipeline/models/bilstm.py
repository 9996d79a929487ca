"""The residual bidirectional LSTM of Xu et al. (EmotiW 2017) over a video's VGG-Face fc6 frame features.

"We adopt the LSTM units with bidirectional and residual structures [Wu et al. 2016 (GNMT); Chevalier,
LSTMs for human activity recognition]"; the input is "the fc6 layer output of the fine-tuned VGG-Face
network" for 128 frames, the hidden size 28 ("the number of hidden layers to 28": 28 is the hidden size of
Chevalier's residual bidirectional model), and "the last time-step output of SoftMax" is the video's
prediction. After Chevalier's model: a ReLU projection to the hidden size, then stacked bidirectional
layers whose two directions are summed, each added to its input (the residual connection)::

    h^0_t = ReLU(W_in · LayerNorm(x_t) + b_in)
    h^l_t = h^{l-1}_t + drop(fwd^l_t + bwd^l_t),  (fwd^l, bwd^l) = BiLSTM_l(h^{l-1}),  l = 1..L-1
    z     = h^{L-1}_T + drop(fwd^L_T + bwd^L_1)
    logits = W_out · z + b_out              (its softmax is the prediction)

"The last time step" of the top layer is, for each direction, the step it ends on: frame T for the forward
LSTM, frame 1 for the backward one (PyTorch's h_n); each has then read all the frames. (The backward
output at frame T has read one frame only, and its recurrent weights would never learn.) The layer norm
(not in the sources) puts fc6 vectors of any network and scale on one footing before the projection. The
paper gives neither the depth L nor dropout: config does.
"""

from __future__ import annotations

from torch import Tensor, nn

from . import register_model


class ResidualBiLSTM(nn.Module):
    """``forward(batch)`` maps ``batch["features"]`` (B, T, input_dim) to (B, num_classes) logits of the
    last step."""

    fields = ("features",)
    head = "out"

    def __init__(self, num_classes: int, input_dim: int, hidden: int = 28, layers: int = 2, dropout: float = 0.0):
        super().__init__()
        if layers < 1:
            raise ValueError(f"a residual BiLSTM needs at least one layer, got {layers}")
        self.norm = nn.LayerNorm(input_dim)
        self.inp = nn.Linear(input_dim, hidden)
        self.lstms = nn.ModuleList(nn.LSTM(hidden, hidden, batch_first=True, bidirectional=True)
                                   for _ in range(layers))
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, num_classes)
        self.hidden = hidden

    def forward(self, batch) -> Tensor:
        h = self.inp(self.norm(batch["features"])).relu()
        for lstm in self.lstms[:-1]:
            both, _ = lstm(h)  # (B, T, 2H): forward then backward direction
            h = h + self.drop(both[..., :self.hidden] + both[..., self.hidden:])
        _, (last, _) = self.lstms[-1](h)  # (2, B, H): forward at frame T, backward at frame 1
        return self.out(h[:, -1] + self.drop(last[0] + last[1]))


@register_model
def bilstm(num_classes: int, **sizes) -> ResidualBiLSTM:
    """LSTM: residual bidirectional LSTM over VGG-Face fc6 features, last-step softmax"""
    return ResidualBiLSTM(num_classes, **sizes)
