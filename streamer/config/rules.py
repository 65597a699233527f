"""How a setting is read from its environment variable, and the values it accepts."""

from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ALL_WINDOWS", "FALSE", "LOG_LEVELS", "RULE", "TRUE", "Rule", "SettingsError", "setting"]

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
TRUE = ("1", "true", "yes", "on")
FALSE = ("0", "false", "no", "off")
ALL_WINDOWS = -1  # SHELFCAST_LSTM_WINDOWS_PER_EPOCH=all: below every number the rule accepts


class SettingsError(ValueError):
    """One or more bad settings; the message names each variable and its accepted range."""


@dataclass(frozen=True)
class Rule:
    """The variable behind a field, how to read it, and the values it accepts."""

    var: str
    kind: type
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # the bound itself is refused
    high_open: bool = False
    choices: tuple[str, ...] = ()
    words: tuple[tuple[str, object], ...] = ()  # spelled-out values, e.g. ("all", ALL_WINDOWS)
    optional: bool = False  # None is a value: the setting is left to its consumer's default

    def accepted(self) -> str:
        said = "".join(f" or {word}" for word, _ in self.words)
        return self._accepted() + said

    def _accepted(self) -> str:
        if self.kind is bool:
            return f"one of {', '.join(TRUE)} / {', '.join(FALSE)}"
        if self.kind is tuple:
            return f"a comma-separated list of {', '.join(self.choices)}"
        if self.choices:
            return f"one of {', '.join(self.choices)}"
        noun = "an integer" if self.kind is int else "a number"
        if self.low is None and self.high is None:
            return noun
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {self.low:g}")
        if self.high is not None:
            parts.append(f"{'<' if self.high_open else '<='} {self.high:g}")
        return f"{noun} {' and '.join(parts)}"

    def parse(self, raw: str) -> object:
        text = raw.strip()
        for word, value in self.words:
            if text.lower() == word:
                return value
        if self.kind is bool:
            if text.lower() in TRUE:
                return True
            if text.lower() in FALSE:
                return False
            raise ValueError(text)
        if self.kind is int:
            return int(text)
        if self.kind is float:
            return float(text)
        if self.kind is Path:
            return Path(text).expanduser()
        if self.kind is tuple:
            return tuple(word.strip().lower() for word in text.split(",") if word.strip())
        return text.lower() if self.choices else text

    def problem(self, value: object) -> str | None:
        """None when ``value`` is accepted, else what is wrong with it."""
        if self.kind is tuple:
            listed = isinstance(value, tuple) and value and set(value) <= set(self.choices)
            return None if listed else self.accepted()
        if self.choices:
            return None if value in self.choices else self.accepted()
        if value is None:
            return None if self.optional else self.accepted()
        if any(value == said for _, said in self.words):
            return None
        if self.kind in (int, float) and not isinstance(value, bool):
            return self.accepted() if self._out_of_range(float(value)) else None  # type: ignore[arg-type]
        return None

    def _out_of_range(self, number: float) -> bool:
        if math.isnan(number) or math.isinf(number):
            return True
        too_low = self.low is not None and (
            number < self.low or (self.low_open and number == self.low)
        )
        too_high = self.high is not None and (
            number > self.high or (self.high_open and number == self.high)
        )
        return too_low or too_high


RULE = "rule"  # the metadata key of a settings field's Rule


def setting(
    var: str,
    kind: type,
    *,
    default: Any = MISSING,
    default_factory: Any = MISSING,
    repr: bool = True,
    **limits: Any,
) -> Any:
    """A settings field read from the variable ``var`` as ``kind``, accepting what ``limits``
    (``Rule``'s bounds, choices and words) allow."""
    metadata = {RULE: Rule(var, kind, optional=default is None, **limits)}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, repr=repr, metadata=metadata)
    return field(default=default, repr=repr, metadata=metadata)
