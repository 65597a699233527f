"""Reorder points and the low-stock alert state, from forecasts and their errors."""

__all__ = []
