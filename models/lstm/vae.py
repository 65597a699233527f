"""VAE + LSTM: a variational code of the recent window feeds the forecaster.

An encoder reads the scaled window (demand and closed flags) and gives the mean and log
variance of a ``LATENT``-dimensional code; a decoder rebuilds the scaled demand of the open
buckets from it. The code (a draw while training, its mean when forecasting) joins the LSTM's
last state in the head, so the forecaster sees a compact, noise-robust summary of the window's
shape beside the recurrence. Training adds ``BETA`` x (reconstruction error + KL divergence to
the unit normal) to the pinball loss: the code must describe the window, not only help the
head.

>>> import numpy as np
>>> from models.lstm.kinds import Architecture
>>> from models.lstm.network import LSTMConfig, Panel, predict
>>> cfg = LSTMConfig(seq_len=14, hidden=4, epochs=1, arch=Architecture.VAE_LSTM)
>>> rng = np.random.default_rng(0)
>>> panel = Panel(["a@UK", "b@UK"], rng.poisson(3, (2, 30)).astype(np.float32),
...               np.full((2, 30), 1.5, np.float32), np.zeros(30, bool), np.arange(30) % 7, 100)
>>> predict(VAELSTM(cfg), panel, at_bucket=120).shape
(2, 7, 3)
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from models.lstm.network import GlobalLSTM

__all__ = ["BETA", "LATENT", "VAELSTM"]

LATENT = 4  # code dimensions
BETA = 0.1  # weight of the VAE's own loss against the pinball loss


class VAELSTM(GlobalLSTM):
    """``GlobalLSTM`` whose head also reads the window's variational code (module docstring)."""

    EXTRA_HEAD: ClassVar[int] = LATENT

    def build_extras(self) -> None:
        length, width = self.cfg.seq_len, self.cfg.hidden
        self.encoder = nn.Sequential(nn.Linear(2 * length, width), nn.ReLU())
        self.to_code = nn.Linear(width, 2 * LATENT)
        self.decoder = nn.Sequential(nn.Linear(LATENT, width), nn.ReLU(), nn.Linear(width, length))
        self._vae_loss: torch.Tensor | float = 0.0

    def head_extras(self, scaled: torch.Tensor, is_open: torch.Tensor) -> torch.Tensor:
        # log1p: a window's one big order must not saturate the encoder
        x = torch.log1p(scaled) * is_open
        mu, log_var = self.to_code(self.encoder(torch.cat([x, is_open.float()], 1))).chunk(2, 1)
        log_var = log_var.clamp(-8.0, 8.0)
        if not self.training:
            return mu
        code = mu + torch.randn_like(mu) * torch.exp(0.5 * log_var)
        rebuilt = self.decoder(code)
        opened = is_open.sum(1).clamp(min=1)
        recon = (((rebuilt - x) ** 2) * is_open).sum(1) / opened
        kl = -0.5 * (1 + log_var - mu**2 - log_var.exp()).sum(1)
        self._vae_loss = BETA * (recon + kl).mean()
        return code

    def regularizer(self) -> torch.Tensor | float:
        return self._vae_loss
