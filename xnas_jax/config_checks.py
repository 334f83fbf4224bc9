"""Range checks of config values, one line naming the first bad one.

A rule is ``(key, kind)`` with a dotted key (``"augment.pad"``) and one of
the kinds in ``KINDS``; ``check`` raises ``ValueError`` (the callers' own
``ConfigError`` subclasses it) with the key, the expectation and the value.
Types are already enforced by ``ml_collections`` (a locked config refuses a
string where an int was), so the rules are about ranges.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Sequence


def _number(v: Any) -> bool:
  return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int(v: Any) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


KINDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "positive": (lambda v: _number(v) and v > 0, "a positive number"),
    "nonnegative": (lambda v: _number(v) and v >= 0, "a number >= 0"),
    "positive_int": (lambda v: _int(v) and v > 0, "a positive integer"),
    "nonnegative_int": (lambda v: _int(v) and v >= 0, "an integer >= 0"),
    "unit_open": (lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "unit_closed": (lambda v: _number(v) and 0 < v <= 1, "a number in (0, 1]"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "optional_bool": (lambda v: v is None or isinstance(v, bool), "true, false or None"),
    "optional_positive": (lambda v: v is None or (_number(v) and v > 0),
                          "a positive number or None"),
    "optional_nonnegative_int": (lambda v: v is None or (_int(v) and v >= 0),
                                 "an integer >= 0 or None"),
}


class ConfigError(ValueError):
  """A bad configuration value (reported in one line)."""


def get(config: Any, key: str) -> Any:
  for part in key.split("."):
    config = config[part]
  return config


def check(config: Any, rules: Iterable[tuple[str, str]], error: type = ConfigError) -> None:
  """Raises ``error`` naming the first key whose value breaks its rule."""
  for key, kind in rules:
    ok, expected = KINDS[kind]
    value = get(config, key)
    if not ok(value):
      raise error(f"{key} must be {expected}, got {value!r}")


def check_choice(config: Any, key: str, choices: Sequence[str],
                 error: type = ConfigError) -> None:
  value = get(config, key)
  if value not in choices:
    raise error(f"unknown {key} {value!r}; expected one of {list(choices)}")
