"""The topics' contracts: input events parsed and validated, output schemas versioned."""

__all__ = []
