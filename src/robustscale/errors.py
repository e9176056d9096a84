"""User-facing errors: one line, exit code 2, no traceback."""
from __future__ import annotations

import enum
from typing import Iterable, TypeVar

E = TypeVar("E", bound=enum.Enum)


class UserError(Exception):
    """A mistake in the user's input (bad value, missing file, ...).

    The CLI prints ``error: <message>`` on one line and exits with code 2.
    The message must name the bad value and, where there is a closed set, the valid ones.
    """

    exit_code = 2


def choice(enum_cls: type[E], value, what: str | None = None) -> E:
    """Parse ``value`` into ``enum_cls`` (by value, case-insensitive) or raise UserError.

    >>> choice(Norm, "linf")
    """
    if isinstance(value, enum_cls):
        return value
    what = what or enum_cls.__name__.lower()
    text = str(value).strip().lower()
    for member in enum_cls:
        if str(member.value).lower() == text:
            return member
    raise UserError(f"unknown {what} {value!r}; valid: {', '.join(str(m.value) for m in enum_cls)}")


def one_of(value, valid: Iterable[str], what: str) -> str:
    """Check that ``value`` is in ``valid`` or raise UserError listing them."""
    valid = list(valid)
    if value not in valid:
        shown = ", ".join(valid[:40]) + (f", ... ({len(valid)} in all)" if len(valid) > 40 else "")
        raise UserError(f"unknown {what} {value!r}; valid: {shown}")
    return value
