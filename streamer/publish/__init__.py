"""Output messages: forecasts, low-stock alerts and dead letters, formatted in batches."""

__all__ = []
