"""The champion LSTM inside a worker: hot-swapped from the registry, batched per close."""

__all__ = []
