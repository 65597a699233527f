"""Settings: read from the environment in one place, typed, frozen."""

__all__ = []
