"""Versioned checkpoints of the global models, and which one is the champion.

A directory holds, per version ``n``::

    v{n:06d}.pt     torch.save(model.state_dict()) of a network, or
    v{n:06d}.trees.json  the trees' LightGBM text models (``models.lstm.trees``)
    v{n:06d}.json   metadata: version, created, config, data range, validation errors
                    (candidate, champion, seasonal naive), device, training seconds, the
                    sha256 of the weights file and the promotion decision with its reason
    CHAMPION        {"version": n, "since": ...}: the version the workers serve

Every file is written to a temporary file and renamed into place, so a reader sees the old
or the new file, never half of one; a version exists once its metadata does (written last).
One trainer writes a directory; any number of workers read it.

Loading verifies the checksum before reading anything, then loads a network with
``torch.load(..., weights_only=True)``, so a checkpoint can at worst be refused, never run
code. Any reason to refuse (missing file, checksum mismatch, unreadable weights, another
architecture or config) is a ``CheckpointError`` naming the file.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from models.lstm.architectures import build
from models.lstm.network import ARCH, GlobalModel, LSTMConfig

__all__ = ["FORMAT", "POINTER", "CheckpointError", "Registry", "write_atomic"]

FORMAT = 1
POINTER = "CHAMPION"


class CheckpointError(Exception):
    """A checkpoint or the champion pointer that must not be served."""


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` in one rename, durable once this returns."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Registry:
    """Checkpoints in ``root``; models are loaded onto ``map_location``."""

    def __init__(self, root: Path | str, map_location: str | torch.device = "cpu") -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.map_location = torch.device(map_location)
        self._served: tuple[int, GlobalModel] | None = None

    def weights_path(self, version: int, suffix: str | None = None) -> Path:
        """The weights file of ``version``: as its metadata names it once saved."""
        if suffix is None:
            try:
                return self.root / str(self.metadata(version)["weights"])
            except (CheckpointError, KeyError):
                suffix = ".pt"
        return self.root / f"v{version:06d}{suffix}"

    def metadata_path(self, version: int) -> Path:
        return self.root / f"v{version:06d}.json"

    def versions(self) -> list[int]:
        """Saved versions, oldest first."""
        names = (p.name for p in self.root.glob("v[0-9]*.json"))
        return sorted(int(n[1:-5]) for n in names if n[1:-5].isdigit())  # not v*.trees.json

    def save(self, model: GlobalModel, **meta: Any) -> int:
        """Save ``model`` as the next version, with ``meta`` (data range, validation,
        device, training seconds, decision, ...) added to its metadata; returns the version.
        """
        version = max(self.versions(), default=0) + 1
        weights = model.weights()
        path = self.weights_path(version, model.suffix)
        write_atomic(path, weights)
        record = {
            "format": FORMAT,
            "arch": ARCH,
            "version": version,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "config": model.cfg.to_dict(),
            "weights": path.name,
            "sha256": hashlib.sha256(weights).hexdigest(),
            **meta,
        }
        write_atomic(self.metadata_path(version), json.dumps(record, indent=2).encode())
        return version

    def metadata(self, version: int) -> dict[str, Any]:
        path = self.metadata_path(version)
        try:
            meta = json.loads(path.read_bytes())
        except FileNotFoundError:
            raise CheckpointError(f"{path}: missing") from None
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: unreadable metadata: {exc}") from exc
        if not isinstance(meta, dict):
            raise CheckpointError(f"{path}: unreadable metadata: not an object")
        return meta

    def load(self, version: int) -> GlobalModel:
        """The model of ``version``, verified, in eval mode on ``map_location``."""
        meta = self.metadata(version)
        meta_path = self.metadata_path(version)
        if meta.get("format") != FORMAT or meta.get("arch") != ARCH:
            raise CheckpointError(
                f"{meta_path}: incompatible: format {meta.get('format')} arch "
                f"{meta.get('arch')}, this code reads format {FORMAT} arch {ARCH}"
            )
        try:
            cfg = LSTMConfig.from_dict(meta["config"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{meta_path}: incompatible config: {exc}") from exc
        path = self.weights_path(version)
        try:
            weights = path.read_bytes()
        except FileNotFoundError:
            raise CheckpointError(f"{path}: missing") from None
        digest = hashlib.sha256(weights).hexdigest()
        if digest != meta.get("sha256"):
            raise CheckpointError(
                f"{path}: checksum mismatch: sha256 {digest}, metadata says {meta.get('sha256')}"
            )
        # the very bytes that were verified, not a second read of the file
        model = build(cfg)
        try:
            model.load_weights(weights, self.map_location)
        except ValueError as exc:
            raise CheckpointError(f"{path}: {exc}") from exc
        return model.place(self.map_location)

    def champion(self) -> int | None:
        """The champion version, None before any promotion."""
        path = self.root / POINTER
        try:
            version = json.loads(path.read_bytes())["version"]
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{path}: unreadable champion pointer: {exc}") from exc
        if not isinstance(version, int):
            raise CheckpointError(f"{path}: unreadable champion pointer: version {version!r}")
        return version

    def promote(self, version: int) -> None:
        """Make ``version`` the champion, once it loads: a checkpoint that would be refused
        never becomes the champion (``CheckpointError``, and the pointer stays)."""
        self.load(version)
        record = {"version": version, "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        write_atomic(self.root / POINTER, json.dumps(record).encode())

    def latest_champion(self) -> tuple[int, GlobalModel] | None:
        """The champion to serve, reloaded only when the pointer has moved: cheap enough to
        call at every bucket close. Raises ``CheckpointError`` when the new champion cannot
        be loaded: the caller keeps serving its previous model, and the next call tries
        again."""
        version = self.champion()
        if version is None:
            return None
        if self._served is None or self._served[0] != version:
            self._served = (version, self.load(version))
        return self._served
