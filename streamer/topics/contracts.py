"""The versioned contracts of shelfcast's topics: the JSON Schemas in ``schemas/``.

Every output message carries ``schema_version`` ("MAJOR.MINOR"); each schema's ``$id`` holds
the major version. Within a major version fields are only added (the minor grows), and the
schemas accept fields they do not list, so a consumer built for 1.0 reads every 1.x message.
The policy: docs/topics.md, "Versions and compatibility".

>>> compatible("1.3"), compatible("2.0"), compatible("one")
(True, False, False)
>>> schema("forecasts")["$id"]
'https://shelfcast.dev/schemas/v1/forecasts.schema.json'
"""

from __future__ import annotations

import json
from importlib.resources import files
from typing import Any

__all__ = ["SCHEMA_MAJOR", "SCHEMA_VERSION", "compatible", "schema"]

SCHEMA_MAJOR = 1
# 1.2: alerts carry the inventory position and an order; 1.3: and their service measure
SCHEMA_VERSION = f"{SCHEMA_MAJOR}.3"


def schema(topic: str) -> dict[str, Any]:
    """The JSON Schema of ``topic`` (its default name, e.g. ``forecasts``), from the package,
    so an installed wheel has it too."""
    text = files("streamer.schemas").joinpath(f"{topic}.schema.json").read_text("utf-8")
    return json.loads(text)


def compatible(version: object, major: int = SCHEMA_MAJOR) -> bool:
    """Whether a message's ``schema_version`` is one a consumer of ``major`` can read."""
    if not isinstance(version, str):
        return False
    head, _, minor = version.partition(".")
    return head == str(major) and minor.isdigit()
