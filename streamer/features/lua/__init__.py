"""The Redis scripts of the feature store, shipped as package data (streamer/features/store.py)."""

__all__ = []
