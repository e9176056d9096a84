"""Reading config values: a YAML mapping from a file (a key given twice is an error), and one YAML/CLI value
coerced to its field's declared type (``"8/255"``, ``"true"``, ``off``)."""
from __future__ import annotations

import dataclasses
import enum
import math
import typing
from pathlib import Path
from typing import Any

import yaml

from ..errors import UserError, choice, read_text_file
from .vocab import COMPILE_ALIASES, Compile, parse_fraction


def load_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML mapping from ``path``; UserError for a missing or unreadable file, text that is not UTF-8,
    bad YAML, a key given twice (YAML keeps the last silently) or a document that is not a mapping."""
    class _UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen: dict[Any, Any] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if isinstance(key, typing.Hashable) and key in seen:
                    raise UserError(f"{path}: key {key!r} is given twice (line {seen[key] + 1} and line "
                                    f"{key_node.start_mark.line + 1}); keep one")
                if isinstance(key, typing.Hashable):
                    seen[key] = key_node.start_mark.line
            return super().construct_mapping(node, deep=deep)

    path = Path(path)
    if not path.is_file():
        raise UserError(f"config file not found: {path}")
    text = read_text_file(path, "YAML")
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"cannot parse YAML {path}: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"config {path} must be a mapping of keys to values, got {type(data).__name__}")
    return data



TYPE_HINTS: dict[str, Any] = {}  # TrainConfig's resolved field types (get_type_hints is slow: cache it)


def coerce(config_cls: type, key: str, f: dataclasses.Field, value: Any) -> Any:
    """Coerce a YAML/CLI value to the field's declared type in ``config_cls`` (TrainConfig), with a one-line error."""
    hint = (TYPE_HINTS or TYPE_HINTS.update(typing.get_type_hints(config_cls)) or TYPE_HINTS)[f.name]
    args = typing.get_args(hint)
    optional = type(None) in args
    if typing.get_origin(hint) is list:  # log_to: a YAML list, or "a,b" from the command line
        if value is None:
            return []
        items = value.split(",") if isinstance(value, str) else value if isinstance(value, (list, tuple)) else None
        if items is None:
            raise UserError(f"invalid {key} {value!r}; expected a list like [wandb, mlflow] or wandb,mlflow")
        return [str(v).strip() for v in items if str(v).strip()]
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    if value is None or (optional and isinstance(value, str) and value.strip().lower() in ("none", "null", "")):
        if optional:
            return None
        raise UserError(f"invalid {key} {value!r}: a value is required")
    if base is Compile and str(value).strip().lower() in COMPILE_ALIASES:
        value = COMPILE_ALIASES[str(value).strip().lower()]
    if isinstance(base, type) and issubclass(base, enum.Enum):
        if isinstance(value, bool):  # YAML 1.1 reads a bare `off` / `on` as a boolean
            value = "on" if value else "off"
        return choice(base, value, what=key)
    if base is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off"):
            return False
        raise UserError(f"invalid {key} {value!r}; expected true or false")
    if base is float:
        number = parse_fraction(value, what=key)
        if not math.isfinite(number):
            raise UserError(f"invalid {key} {value!r}: must be a finite number")
        return number
    if base is int:
        try:
            number = parse_fraction(value, what=key)
        except UserError:
            raise UserError(f"invalid {key} {value!r}; expected an integer") from None
        if number != int(number):
            raise UserError(f"invalid {key} {value!r}; expected an integer")
        return int(number)
    if base is str:
        return str(value)
    return value
