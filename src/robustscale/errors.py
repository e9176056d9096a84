"""User-facing errors: one line, exit code 2, no traceback."""
from __future__ import annotations

import contextlib
import enum
import errno
import os
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


def check_keys(mapping, valid: Iterable[str], where: str) -> None:
    """Refuse the first key of ``mapping`` not in ``valid``: ``unknown key 'x' in <where>; valid: a, b``."""
    valid = list(valid)
    for key in mapping:
        if key not in valid:
            raise UserError(f"unknown key {key!r} in {where}; valid: {', '.join(str(v) for v in valid)}")


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


def read_text_file(path, what: str = "text") -> str:
    """The UTF-8 text of a file the user named; UserError (naming the file) when it cannot be read or is not
    UTF-8 text (a binary file, UTF-16 ...), instead of a UnicodeDecodeError traceback."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UserError(f"{path} is not UTF-8 {what} (undecodable byte 0x{data[exc.start]:02x} at offset "
                        f"{exc.start}); save it as UTF-8 text") from None


def check_free_space(path, need_bytes: int, what: str, hint: str) -> None:
    """UserError when the filesystem of ``path`` (or its nearest existing parent) has less than
    ``need_bytes`` free: a run that would fill the disk at its first checkpoint stops before spending compute."""
    import shutil

    probe = Path(path).expanduser()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return  # unknown: the write itself will tell
    if free < need_bytes:
        raise UserError(f"not enough free space for {what} at {path}: {_size(free)} free, about {_size(need_bytes)} "
                        f"needed; {hint}")


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} TB"


# A full disk, an exceeded quota or a read-only filesystem: the user frees space or picks another place.
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)
# How libraries that do not raise OSError report a full disk (safetensors: Rust's io::Error; torch.save: its
# stream writer).
_DISK_FULL_TEXT = ("no space left on device", "os error 28", "disk quota exceeded", "os error 122",
                   "read-only file system", "os error 30", "file write failed")


def as_disk_error(exc: BaseException, path) -> OSError | None:
    """``exc`` (raised while writing ``path``) as an OSError naming ``path`` when the disk is full, over quota
    or read-only; None for any other error."""
    if isinstance(exc, UserError):  # already one line for the user
        return None
    if isinstance(exc, OSError):
        if exc.errno not in DISK_ERRNOS:
            return None
        return OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(exc.filename or path))
    text = str(exc).lower()
    if not any(s in text for s in _DISK_FULL_TEXT):
        return None
    code = errno.EROFS if ("read-only" in text or "os error 30" in text) else \
        errno.EDQUOT if ("quota" in text or "os error 122" in text) else errno.ENOSPC
    return OSError(code, os.strerror(code), str(path))


def disk_error(exc: OSError, resume_hint: str | None = None) -> UserError:
    """The one line for a full / read-only disk met while writing: the path, the reason and how to go on."""
    then = f"; free space (or choose another folder), then {resume_hint}" if resume_hint else \
        "; free space or choose another folder"
    return UserError(f"cannot write {exc.filename}: {exc.strerror}{then}")
