"""The worker's composition root: the Faust app, its agents, start-up checks and HTTP endpoints."""

__all__ = []
