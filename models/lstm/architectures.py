"""Every global model the trainer can train, by its ``Architecture``: the tournament's entrants.

>>> from models.lstm.network import LSTMConfig
>>> type(build(LSTMConfig(arch=Architecture.VAE_LSTM))).__name__
'VAELSTM'
>>> sorted(a.value for a in MODELS) == sorted(a.value for a in Architecture)
True
"""

from __future__ import annotations

from collections.abc import Callable

from models.lstm.fusion import FusionLSTM
from models.lstm.kinds import Architecture
from models.lstm.network import GlobalLSTM, GlobalModel, LSTMConfig
from models.lstm.trees import GradientBoostedTrees
from models.lstm.vae import VAELSTM

__all__ = ["MODELS", "build"]

MODELS: dict[Architecture, Callable[[LSTMConfig], GlobalModel]] = {
    Architecture.LSTM: GlobalLSTM,
    Architecture.CNN_LSTM: FusionLSTM,
    Architecture.VAE_LSTM: VAELSTM,
    Architecture.LIGHTGBM: GradientBoostedTrees,
}


def build(cfg: LSTMConfig) -> GlobalModel:
    """An untrained model of ``cfg.arch`` with ``cfg``'s sizes and seed."""
    return MODELS[cfg.arch](cfg)
