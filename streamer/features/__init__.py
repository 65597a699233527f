"""The Redis feature store: keys, scripts and the batched reads and writes of a partition."""

__all__ = []
