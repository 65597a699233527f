"""Forecasting models for shelfcast: baselines, river online models, quantile wrappers."""
