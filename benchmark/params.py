"""Declared parameter domains: the one mechanism that checks a value before any work is done.

Every registry entry that takes parameters (a test-time remedy, a style, a loss, a miner) declares
each one as a ``Param`` (type, default, valid range or choices), and every config key with a range
declares it in its field's metadata. ``Param.check`` is what a config's resolution calls, so a bad
value fails with one line naming the key, the value and the valid domain, in every command, before
an image is read or a file written. A leaf module: config, registries and the CLI all import it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


class ConfigError(ValueError):
    """A config key or value that cannot be used; the message names the key and the fix."""


@dataclass(frozen=True)
class Param:
    """One parameter's domain. ``kind``: int | float | bool | str | list (``length`` numbers; any number of
    them when ``length`` is None) | object
    (any value: a library parameter whose domain is the library's own);
    ``low``/``high``: inclusive bounds unless ``open_low``/``open_high``; ``choices``: the valid
    strings; ``odd``: an odd integer (OpenCV block sizes); ``nullable``: null is valid."""

    kind: type
    default: object = None
    low: float = -math.inf
    high: float = math.inf
    open_low: bool = False
    open_high: bool = False
    choices: tuple = ()
    length: int | None = None
    odd: bool = False
    nullable: bool = False
    doc: str = ""

    def domain(self) -> str:
        """The valid values in words, e.g. ``an integer in [1, inf)``, ``a number in (0, 1)``."""
        if self.kind is object:
            return "any value (checked by the library that takes it)"
        if self.choices:
            text = f"one of: {', '.join(map(str, self.choices))}"
        elif self.kind is bool:
            text = "true or false"
        elif self.kind is str:
            text = "a string"
        else:
            numbers = "numbers" if self.length is None else f"{self.length} numbers"
            what = {int: "an odd integer" if self.odd else "an integer", float: "a number",
                    list: f"a list of {numbers}, each"}[self.kind]
            text = f"{what} in {self._interval()}"
        return text + (", or null" if self.nullable else "")

    def _interval(self) -> str:
        lo, hi = (str(int(v)) if math.isfinite(v) and float(v).is_integer() else f"{v:g}" for v in (self.low, self.high))
        left = "(" if self.open_low or math.isinf(self.low) else "["
        return f"{left}{lo}, {hi}{')' if self.open_high or math.isinf(self.high) else ']'}"

    def _in_range(self, v) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return False
        if isinstance(v, float) and not math.isfinite(v):
            return False
        above = v > self.low if self.open_low else v >= self.low
        below = v < self.high if self.open_high else v <= self.high
        return above and below

    def valid(self, value) -> bool:
        if self.kind is object:
            return True
        if value is None:
            return self.nullable
        if self.choices:
            return value in self.choices
        if self.kind is bool:
            return isinstance(value, bool)
        if self.kind is str:
            return isinstance(value, str)
        if self.kind is int:
            integral = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
            return integral and self._in_range(value) and (not self.odd or int(value) % 2 == 1)
        if self.kind is list:
            return isinstance(value, (list, tuple)) and self.length in (None, len(value)) \
                and all(map(self._in_range, value))
        return self._in_range(value)

    def check(self, key: str, value):
        """``value`` if it is in the domain (an integral 3.0 read as 3, a numeric string such as YAML's
        ``1e2`` as its number), else one ConfigError naming ``key``, the value and the domain."""
        if isinstance(value, str) and self.kind in (int, float) and not self.choices:
            try:
                value = float(value)
            except ValueError:
                pass
        if not self.valid(value):
            shown = list(value) if isinstance(value, tuple) else value  # as YAML writes a list
            if self.choices:
                raise ConfigError(f"{key}={shown!r} is not valid; choose one of: {', '.join(map(str, self.choices))}")
            raise ConfigError(f"{key}={shown!r} is not valid: must be {self.domain()}")
        if self.kind is int and isinstance(value, float):
            return int(value)
        return list(value) if self.kind is list else value


def defaults(params: dict[str, Param]) -> dict:
    return {name: p.default for name, p in params.items()}


def describe(params: dict[str, Param]) -> str:
    """``k=2 (an integer in [1, inf)), alpha=3 (...)``: the listing and error text of a registry entry."""
    return ", ".join(f"{name}={p.default} ({p.domain()})" for name, p in params.items()) or "none"


def check_args(key: str, owner: str, params: dict[str, Param], args) -> dict:
    """``args`` (a mapping given under config key ``key`` for the entry ``owner``) checked against
    ``params``: unknown names and invalid values are one ConfigError each, naming ``key.name`` (a
    command-line ``key`` ending in a space: ``--style-arg name``), the value and the domain. Returns
    the full parameter set, defaults filled in."""
    if not isinstance(args, dict) or not all(isinstance(k, str) for k in args):
        raise ConfigError(f"{key}={args!r} must be a mapping of parameter names to values; {owner} takes: "
                          f"{describe(params)}")
    unknown = sorted(set(args) - set(params))
    if unknown:
        raise ConfigError(f"{key}: {owner} has no parameter(s) {', '.join(unknown)}; its parameters: "
                          f"{describe(params)}")
    prefix = key if key.endswith(" ") else f"{key}."
    return {**defaults(params), **{name: params[name].check(f"{prefix}{name}", v) for name, v in args.items()}}
