"""Conventional and Enhanced ConvLSTM, and the stream that stacks them.

Miyoshi, Nagata, Hashimoto, "Facial-Expression Recognition from Video Using Enhanced Convolutional LSTM"
(eNTERFACE'05), and its longer Japanese version "改良型 ConvLSTM を用いた動画からの表情認識手法の提案".
The conventional cell is Shi et al. 2015 (the paper's ref. [28]) as the paper writes it (eq. 1); the
Enhanced cell adds a temporal skip from h_{t-2} and a convolutional ("spatial") skip from x_t, then group
normalisation (eq. 2). A stream stacks four cells with 5x5, 5x5, 3x3, 3x3 kernels and 2x2 max pooling
after each (section III-A; 3.1 in Japanese), and summarises a clip by its last step.

``*`` is a 'same'-padded convolution, ``∘`` the Hadamard product. The peephole weights W_ci, W_cf, W_co
multiply c elementwise, so, as in Shi et al., they are one weight per channel and pixel (shape C, H, W):
a cell is built for one spatial size, given at construction (``spatial_size``); the stream derives each
layer's size from its ``input_size``.
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import torch
from torch import Tensor, nn
from torch.nn.modules.utils import _pair

CELL_TYPES = ("conventional", "enhanced")


class CellState(NamedTuple):
    """What a cell carries from step t-1 to step t."""

    h: Tensor                    # h_{t-1}
    c: Tensor                    # c_{t-1}
    h_prev: Tensor | None = None  # h_{t-2}: the Enhanced cell's temporal skip; None for the conventional cell


class ConvLSTMCell(nn.Module):
    """Conventional ConvLSTM cell, eq. 1 of the paper::

        i_t = σ(W_xi * x_t + W_hi * h_{t-1} + W_ci ∘ c_{t-1} + b_i)
        f_t = σ(W_xf * x_t + W_hf * h_{t-1} + W_cf ∘ c_{t-1} + b_f)
        c_t = f_t ∘ c_{t-1} + i_t ∘ tanh(W_xc * x_t + W_hc * h_{t-1} + b_c)
        o_t = σ(W_xo * x_t + W_ho * h_{t-1} + W_co ∘ c_{t-1} + b_o)
        h_t = o_t ∘ tanh(c_t)

    The output gate's peephole reads c_{t-1}, as eq. 1 and eq. 2 print it in both versions of the paper
    (Shi et al. use c_t there); it also lets all three peepholes act before c_t is known.

    ``conv_x`` holds W_x{i,f,o,c} and the biases b, ``conv_h`` holds W_h{i,f,o,c} (in that order of output
    channel blocks: the three peepholed gates first); ``peephole`` stacks W_ci, W_cf, W_co, each
    (hidden_channels, H, W) for the ``spatial_size`` (H, W) the cell is built for.
    Peepholes start at zero, so training starts from the plain gates; the forget bias starts at 1
    (Jozefowicz et al. 2015) so that early in training the memory is kept rather than wiped.

    A step is split in two so a layer can apply the input convolutions to all time steps in one call:
    ``input_terms(x)`` (no recurrence) then ``step(terms, state)``; ``forward(x_t, state)`` does both.
    """

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int,
                 spatial_size: int | tuple[int, int]):
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd so the 'same' padding keeps H x W, got {kernel_size}")
        self.in_channels = in_channels
        self.hidden_channels = hidden_channels
        self.kernel_size = kernel_size
        self.spatial_size = _pair(spatial_size)
        padding = kernel_size // 2
        self.conv_x = nn.Conv2d(in_channels, 4 * hidden_channels, kernel_size, padding=padding)
        self.conv_h = nn.Conv2d(hidden_channels, 4 * hidden_channels, kernel_size, padding=padding, bias=False)
        self.peephole = nn.Parameter(torch.zeros(3, hidden_channels, *self.spatial_size))
        with torch.no_grad():
            self.conv_x.bias[hidden_channels:2 * hidden_channels].fill_(1.0)

    def initial_state(self, x: Tensor) -> CellState:
        """Zero h_{-1} and c_{-1} for a batch shaped like ``x`` (B, C_in, H, W)."""
        if tuple(x.shape[-2:]) != self.spatial_size:
            raise ValueError(f"this cell's peepholes are {self.spatial_size[0]}x{self.spatial_size[1]}, the input "
                             f"is {x.shape[-2]}x{x.shape[-1]}: build the cell (or stream) for that input_size")
        zeros = x.new_zeros(x.shape[0], self.hidden_channels, *self.spatial_size)
        return CellState(zeros, zeros)

    def input_terms(self, x: Tensor) -> Tensor:
        """W_x{i,f,o,c} * x + b for any number of inputs stacked on dim 0: (N, C_in, H, W) -> (N, 4C, H, W)."""
        return self.conv_x(x)

    def _memory(self, terms: Tensor, state: CellState) -> tuple[Tensor, Tensor]:
        """The gates and memory of eq. 1 from the gates' input terms (B, 4C, H, W): (o_t ∘ tanh(c_t), c_t)."""
        g_ifo, g_c = (terms + self.conv_h(state.h)).split([3 * self.hidden_channels, self.hidden_channels], 1)
        # i, f and o in one broadcast product and one sigmoid: a training step is thousands of small
        # operations on CPU, so their count, not their arithmetic, sets its time.
        i, f, o = torch.sigmoid(g_ifo.unflatten(1, (3, -1)) + self.peephole * state.c.unsqueeze(1)).unbind(1)
        c = torch.addcmul(f * state.c, i, torch.tanh(g_c))
        return o * torch.tanh(c), c

    def step(self, terms: Tensor, state: CellState) -> tuple[Tensor, CellState]:
        """One time step from precomputed ``input_terms``: returns h_t and the state for step t+1."""
        h, c = self._memory(terms, state)
        return h, CellState(h, c)

    def forward(self, x: Tensor, state: CellState | None = None) -> tuple[Tensor, CellState]:
        """One time step on x_t (B, C_in, H, W); ``state`` None means t = 0 (zero h and c)."""
        if state is None:
            state = self.initial_state(x)
        return self.step(self.input_terms(x), state)


class EnhancedConvLSTMCell(ConvLSTMCell):
    """Enhanced ConvLSTM cell, eq. 2 of the paper (Japanese version, 式 2)::

        i_t, f_t, c_t, o_t as in eq. 1
        h_t = g(o_t ∘ tanh(c_t) + h_{t-2} + W_xs * x_t)

    "ここで、g は、Group Normalization [30] を示す" — g is group normalisation; "W_xs * x_t によって空間的
    skip connection、h_{t-2} によって時間的 skip connection が実現される" — W_xs * x_t is the spatial skip,
    h_{t-2} the temporal skip. Both skips and the gated output are summed *inside* g, and h_{t-2} is the
    previous normalised output h, the same h the gates read as h_{t-1} one step earlier. h_{t-2} is zero
    for t < 2.

    The paper gives neither W_xs's kernel nor a bias for it: W_xs has the cell's kernel size (it is
    written with the same ``*`` as the gates' input convolutions) and no bias (eq. 2 has no b_s, and g's
    shift follows it). The number of groups is not given either: ``norm_groups`` defaults to 32 (Wu & He's
    default) and the cell uses gcd(norm_groups, hidden_channels) groups, so that they divide the width; a
    cell narrower than 32 (or of odd width) thus normalises each channel on its own.
    """

    def __init__(self, in_channels: int, hidden_channels: int, kernel_size: int,
                 spatial_size: int | tuple[int, int], norm_groups: int = 32):
        super().__init__(in_channels, hidden_channels, kernel_size, spatial_size)
        self.conv_skip = nn.Conv2d(in_channels, hidden_channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.norm = nn.GroupNorm(math.gcd(norm_groups, hidden_channels), hidden_channels)

    def initial_state(self, x: Tensor) -> CellState:
        """Zero h_{-1}, c_{-1} and h_{-2}."""
        h, c = super().initial_state(x)[:2]
        return CellState(h, c, h)

    def input_terms(self, x: Tensor) -> Tensor:
        """The gates' W_x * x + b and the skip's W_xs * x, stacked on channels: (N, 5C, H, W)."""
        return torch.cat([self.conv_x(x), self.conv_skip(x)], dim=1)

    def step(self, terms: Tensor, state: CellState) -> tuple[Tensor, CellState]:
        gate_terms, skip = terms.split([4 * self.hidden_channels, self.hidden_channels], dim=1)
        gated, c = self._memory(gate_terms, state)
        h = self.norm(gated + state.h_prev + skip)
        return h, CellState(h, c, state.h)


def make_cell(cell: str, in_channels: int, hidden_channels: int, kernel_size: int,
              spatial_size: int | tuple[int, int], norm_groups: int = 32) -> ConvLSTMCell:
    """A cell of type ``cell``: "conventional" (eq. 1) or "enhanced" (eq. 2)."""
    if cell == "conventional":
        return ConvLSTMCell(in_channels, hidden_channels, kernel_size, spatial_size)
    if cell == "enhanced":
        return EnhancedConvLSTMCell(in_channels, hidden_channels, kernel_size, spatial_size, norm_groups)
    raise ValueError(f"unknown ConvLSTM cell '{cell}'; choose from {CELL_TYPES}")


class ConvLSTMStream(nn.Module):
    """An (Enhanced) ConvLSTM stream (section III-A, Fig. 2): a sequence (B, T, C, H, W) to a
    feature vector (B, feature_dim).

    Layer l runs its cell over the whole sequence and 2x2 max pooling follows every step's h, so layer
    l+1 sees a sequence at half the resolution; the kernels are 5x5, 5x5, 3x3, 3x3 ("1, 2 層目: 5×5,
    3, 4 層目: 3×3"). The clip's feature is the last layer's last step h_T, max pooled, then averaged over
    space (global average pooling) and, when the last width is not ``feature_dim``, linearly projected so
    that every stream of a multi-stream network yields vectors of one size.

    The paper does not give the hidden widths: the default (16, 32, 64, 128) doubles the width as the
    resolution halves and ends at 128, the width of the ResNet streams' output (Table 1), so no projection
    is needed at the defaults. ``input_size`` (H = W of the input) fixes each layer's peephole size.

    The input is standardised per channel first (batch normalisation over batch, time and space): the
    paper does not say how inputs are scaled, and flow in pixels per frame (~0.1-1) and RGB in [0, 1]
    would otherwise reach the gates at very different scales.
    """

    def __init__(self, in_channels: int, hidden: Sequence[int] = (16, 32, 64, 128),
                 kernels: Sequence[int] = (5, 5, 3, 3), input_size: int = 112, feature_dim: int = 128,
                 cell: str = "enhanced", norm_groups: int = 32):
        super().__init__()
        hidden, kernels = tuple(hidden), tuple(kernels)
        if len(hidden) != len(kernels):
            raise ValueError(f"one kernel per layer: {len(hidden)} hidden widths but {len(kernels)} kernels")
        if input_size >> len(hidden) < 1:
            raise ValueError(f"input_size {input_size} cannot be halved {len(hidden)} times")
        cells, channels, size = [], in_channels, input_size
        for width, kernel in zip(hidden, kernels):
            cells.append(make_cell(cell, channels, width, kernel, size, norm_groups))
            channels, size = width, size // 2
        self.input_norm = nn.BatchNorm2d(in_channels)
        self.cells = nn.ModuleList(cells)
        self.pool = nn.MaxPool2d(2)
        self.proj = nn.Identity() if hidden[-1] == feature_dim else nn.Linear(hidden[-1], feature_dim)

    @staticmethod
    def _run(cell: ConvLSTMCell, seq: Tensor) -> list[Tensor]:
        """h_0 .. h_{T-1} of one layer over seq (B, T, C, H, W)."""
        batch, steps = seq.shape[:2]
        terms = cell.input_terms(seq.flatten(0, 1)).unflatten(0, (batch, steps))
        state = cell.initial_state(seq[:, 0])
        outputs = []
        # unbind, not terms[:, t]: the backward of T slices would zero-fill T full-size gradients.
        for step_terms in terms.unbind(1):
            h, state = cell.step(step_terms, state)
            outputs.append(h)
        return outputs

    def forward(self, x: Tensor) -> Tensor:
        seq = self.input_norm(x.flatten(0, 1)).unflatten(0, x.shape[:2])
        for cell in self.cells[:-1]:
            h = torch.stack(self._run(cell, seq), dim=1)
            seq = self.pool(h.flatten(0, 1)).unflatten(0, h.shape[:2])
        # The last layer feeds nothing but the clip feature, which is its last step only.
        last = self.pool(self._run(self.cells[-1], seq)[-1])
        return self.proj(last.mean(dim=(2, 3)))
