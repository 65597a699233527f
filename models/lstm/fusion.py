"""CNN + LSTM: a convolution across a SKU's locations before the recurrence.

A SKU sold in several countries often moves in all of them at once (a new design, a
season); a series that sells rarely in one country can read the pulse of the same SKU in
the others. Each window carries the demand of up to ``LOCATIONS`` other locations of its SKU
(``Panel.siblings``: those that sold most within the window). Each sibling's window is scaled
by its own mean and, with the log of its level against the window's own, goes through one
causal temporal convolution shared by all locations; the results are pooled over the
locations (mean and max: the set of locations has no order and its size varies) and fed to
the LSTM beside the plain model's inputs at every step, with the share of locations present.

>>> import numpy as np
>>> from models.lstm.kinds import Architecture
>>> from models.lstm.network import LSTMConfig, Panel, predict
>>> cfg = LSTMConfig(seq_len=14, hidden=4, epochs=1, arch=Architecture.CNN_LSTM)
>>> rng = np.random.default_rng(0)
>>> panel = Panel(["a@UK", "a@FR", "b@UK"], rng.poisson(3, (3, 30)).astype(np.float32),
...               np.full((3, 30), 1.5, np.float32), np.zeros(30, bool), np.arange(30) % 7, 100)
>>> predict(FusionLSTM(cfg), panel, at_bucket=120).shape
(3, 7, 3)
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from models.lstm.network import GlobalLSTM, window_scale

__all__ = ["CHANNELS", "KERNEL", "LOCATIONS", "FusionLSTM"]

# siblings read per window, the busiest: 80% of the real data's SKUs sell in 8 countries or fewer
LOCATIONS = 8
CHANNELS = 8  # of the convolution, pooled twice (mean and max)
KERNEL = 3  # buckets the convolution sees, the current one and two before


class FusionLSTM(GlobalLSTM):
    """``GlobalLSTM`` whose steps also carry the pooled convolution of the SKU's other
    locations (module docstring)."""

    locations: ClassVar[int] = LOCATIONS
    EXTRA_STEPS: ClassVar[int] = 2 * CHANNELS + 1

    def build_extras(self) -> None:
        self.conv = nn.Conv1d(2, CHANNELS, KERNEL)

    def step_extras(
        self,
        scaled: torch.Tensor,
        is_open: torch.Tensor,
        scale: torch.Tensor,
        siblings: torch.Tensor,
    ) -> torch.Tensor:
        b, k, length = siblings.shape
        present = ~torch.isnan(siblings[..., 0])  # [B, K]
        sib = siblings.nan_to_num(0.0) * is_open[:, None, :]
        sib_scale = window_scale(sib, is_open[:, None, :])
        relative = torch.log(sib_scale / scale[:, None])
        x = torch.stack([sib / sib_scale[..., None], relative[..., None].expand(b, k, length)], 2)
        # causal: a step sees its own bucket and the KERNEL - 1 before it, never a later one
        conv = F.relu(self.conv(F.pad(x.view(b * k, 2, length), (KERNEL - 1, 0))))
        conv = conv.view(b, k, CHANNELS, length) * present[..., None, None]
        count = present.sum(1).clamp(min=1)[:, None, None]
        pooled = torch.cat([conv.sum(1) / count, conv.amax(1)], 1)  # [B, 2C, L]; ReLU: max >= 0
        share = (present.float().mean(1) if k else scaled.new_zeros(b))[:, None, None]
        return torch.cat([pooled, share.expand(b, 1, length)], 1).transpose(1, 2)
