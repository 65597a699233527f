"""The bank's forecasters: baselines, intermittent demand, the regression, the LSTM's seat."""

__all__ = []
