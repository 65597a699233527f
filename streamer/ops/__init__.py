"""Tooling beside the worker: backtest, benchmarks, report, replay, simulation, embedded."""

__all__ = []
