"""The LSTM trainer process: refreshes the global model from Redis on an event-time schedule."""

__all__ = []
