"""User-facing errors: one line, exit code 2, no traceback."""
from __future__ import annotations

import contextlib
import enum
import errno
import tempfile
from pathlib import Path
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


# OSErrors on a path the user chose that the user can fix (another path, permissions, space).
USER_PATH_ERRNOS = (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.ENOENT,
                    errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG)


def path_error(exc: OSError, path, what: str, hint: str = "choose another path") -> UserError:
    """The one-line UserError for ``exc`` raised while writing ``path`` (the user's ``what``, e.g. ``-o``)."""
    reason = exc.strerror or type(exc).__name__
    return UserError(f"cannot write {what} {path}: {reason}; {hint}")


@contextlib.contextmanager
def writing(path, what: str, hint: str = "choose another path"):
    """Turn a user-fixable OSError while writing the user's ``path`` into a UserError; others pass through."""
    try:
        yield
    except OSError as exc:
        if exc.errno in USER_PATH_ERRNOS:
            raise path_error(exc, path, what, hint) from None
        raise


def check_writable_dir(path, what: str, hint: str = "choose a writable folder", create: bool = True) -> Path:
    """Prove ``path`` writable (a temp file, removed at once) before any work is spent; ``create``
    makes it first, else the test write goes to its nearest existing parent and nothing is left behind.

    Root ignores permission bits, so only a real write tells (a read-only mount, a full disk).
    """
    path = Path(path).expanduser()
    with writing(path, what, hint):
        if create:
            path.mkdir(parents=True, exist_ok=True)
        probe = path
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if not probe.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, "Not a directory", str(probe))
        with tempfile.NamedTemporaryFile(dir=probe, prefix=".write-test-"):
            pass
    return path
