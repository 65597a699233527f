"""Event time: buckets, per-partition watermarks and the trading calendar."""

__all__ = []
