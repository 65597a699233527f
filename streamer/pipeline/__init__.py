"""The stream processor without Faust: batches of records applied, buckets closed."""

__all__ = []
