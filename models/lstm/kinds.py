"""The names of the global models, apart from the models themselves: settings check them
without importing torch."""

from __future__ import annotations

import enum

__all__ = ["Architecture"]


class Architecture(enum.StrEnum):
    """The global models the trainer can train (docs/lstm.md, "The tournament")."""

    LSTM = "lstm"
    CNN_LSTM = "cnn_lstm"  # convolves across a SKU's locations before the recurrence
    VAE_LSTM = "vae_lstm"  # a variational code of the recent window feeds the forecaster
    LIGHTGBM = "lightgbm"  # gradient-boosted trees, Tweedie objective
