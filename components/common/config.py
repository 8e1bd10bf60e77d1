"""Typed settings from a component's `custom_config` (a JSON round trip of a dataclass)."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

Settings = TypeVar("Settings")


def settings_from_config(cls: type[Settings], custom_config: dict[str, Any] | None) -> Settings:
    """`cls(**custom_config)`, naming unknown and missing keys; lists become tuples where the
    field's default is a tuple (JSON has no tuples)."""
    config = dict(custom_config or {})
    fields = {field.name: field for field in dataclasses.fields(cls)}
    unknown = sorted(set(config) - set(fields))
    if unknown:
        raise ValueError(f"custom_config of {cls.__name__} has unknown keys {unknown}; "
                         f"allowed: {sorted(fields)}")
    missing = sorted(
        name for name, field in fields.items()
        if field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        and name not in config
    )
    if missing:
        raise ValueError(f"custom_config of {cls.__name__} lacks required keys {missing}")
    for name, value in config.items():
        if isinstance(value, list) and isinstance(fields[name].default, tuple):
            config[name] = tuple(value)
    return cls(**config)
