"""Typed options: frozen dataclasses whose fields declare their type and range, checked once.

A class of options is a frozen dataclass whose fields are made with :func:`option`; ``parse(cls, mapping)``
is the one place where user values (``--option KEY=VALUE`` on the command line, ``**options`` in Python)
become an instance: an unknown key is an :class:`~dpmot_bench.errors.InputError` naming it and listing the
valid keys, a mistyped or out-of-range value one naming the key, the value and what is expected. Code that
receives an instance trusts it and checks nothing again. ``check_fields(self)`` in ``__post_init__`` applies
the same checks to instances built directly (``Cls(...)`` or ``dataclasses.replace``).

Types: ``float`` (finite; ints accepted), ``int`` (no bools, no floats), ``bool`` (only true / false),
``str`` (with ``choices``), ``dict`` (a JSON object, copied); a float or int field with ``choices`` also
takes one of those names (e.g. ``sigma_star``: a number or the rule ``"spacing"``).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from .errors import InputError


@dataclass(frozen=True)
class Spec:
    kind: type
    low: float | None = None  # inclusive lower bound
    high: float | None = None  # inclusive upper bound
    above: float | None = None  # exclusive lower bound
    choices: tuple[str, ...] = ()
    optional: bool = False  # None allowed (means "the default rule")
    help: str = ""

    def expects(self) -> str:
        if self.kind is bool:
            text = "true or false"
        elif self.kind is dict:
            text = "a JSON object"
        elif self.kind is str:
            text = "one of " + ", ".join(self.choices) if self.choices else "a text"
        else:
            text = "an integer" if self.kind is int else "a finite number"
            bounds = [f">= {self.low:g}" if self.low is not None else "", f"> {self.above:g}" if self.above is not None else "",
                      f"<= {self.high:g}" if self.high is not None else ""]
            bounds = [b for b in bounds if b]
            if bounds:
                text += " " + " and ".join(bounds)
            if self.choices:
                text += " or one of " + ", ".join(self.choices)
        return text + (" (or null for the default)" if self.optional else "")


def option(default: Any, kind: type, *, low: float | None = None, high: float | None = None,
           above: float | None = None, choices: tuple[str, ...] = (), optional: bool = False, help: str = ""):
    """A dataclass field with its :class:`Spec` (dict defaults are copied per instance)."""
    spec = Spec(kind, low, high, above, tuple(choices), optional, help)
    if isinstance(default, dict):
        return field(default_factory=lambda: dict(default), metadata={"spec": spec})
    return field(default=default, metadata={"spec": spec})


def check_value(name: str, value: Any, spec: Spec) -> Any:
    """``value`` as the field's type, or an InputError naming ``name`` and what it expects."""
    given = value

    def bad():
        return InputError(f"option {name} must be {spec.expects()}, got {given!r}")

    if value is None:
        if spec.optional:
            return None
        raise bad()
    if spec.kind is bool:
        if not isinstance(value, bool):
            raise bad()
        return value
    if spec.kind is dict:
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise bad()
        return dict(value)
    if isinstance(value, str):
        if value in spec.choices:
            return value
        raise bad()
    if spec.kind is str:
        raise bad()
    if isinstance(value, bool) or not isinstance(value, (int, float)) and not hasattr(value, "__index__"):
        raise bad()
    if spec.kind is int:
        if isinstance(value, float) or not hasattr(value, "__index__"):
            raise bad()
        value = int(value)
    else:
        value = float(value)
        if not math.isfinite(value):
            raise bad()
    if ((spec.low is not None and value < spec.low) or (spec.high is not None and value > spec.high)
            or (spec.above is not None and value <= spec.above)):
        raise bad()
    return value


def specs(cls) -> dict[str, Spec]:
    """The checked fields of an options class, by name (fields without a Spec are not user options)."""
    return {f.name: f.metadata["spec"] for f in dataclasses.fields(cls) if "spec" in f.metadata}


def check_fields(instance) -> None:
    """Check (and normalise: ints to floats, dict copies) every field of a frozen options instance."""
    for name, spec in specs(type(instance)).items():
        object.__setattr__(instance, name, check_value(name, getattr(instance, name), spec))


def unknown_keys(keys, valid, what: str) -> None:
    unknown = sorted(set(keys) - set(valid))
    if unknown:
        raise InputError(f"{what} has no option {', '.join(unknown)}; its options: {', '.join(sorted(valid)) or 'none'}")


def parse(cls, values: Mapping[str, Any], *, what: str, base=None, allowed=None):
    """An instance of ``cls`` from ``values`` (over ``base``'s values, else the defaults); keys outside
    ``allowed`` (default: every checked field) are refused, listing the valid ones."""
    valid = specs(cls) if allowed is None else {k: v for k, v in specs(cls).items() if k in allowed}
    unknown_keys(values, valid, what)
    checked = {key: check_value(key, value, valid[key]) for key, value in values.items()}
    return dataclasses.replace(base, **checked) if base is not None else cls(**checked)


def describe(cls, allowed=None) -> str:
    """``key (expects): help`` lines of an options class, for help texts."""
    return "\n".join(f"{name}: {spec.expects()}{'; ' + spec.help if spec.help else ''}"
                     for name, spec in specs(cls).items() if allowed is None or name in allowed)
