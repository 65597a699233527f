"""The global LSTM: the network, its trainer and the registry of its checkpoints."""

__all__ = []
