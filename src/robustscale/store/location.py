"""Where the results store lives: a SQLite file by default, PostgreSQL by URL.

Resolution order (first that is set wins): an explicit ``--store`` / ``store=`` value,
``TrainConfig.store``, ``$ROBUSTSCALE_STORE``, then ``<output_dir>/runs.db``. A value is either
a SQLAlchemy URL (``sqlite:///path/runs.db``, ``postgresql://user@host:5432/db``) or a path
(a ``.db`` file, or a folder that holds ``runs.db``). ``none`` disables recording.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import UserError

ENV_VAR = "ROBUSTSCALE_STORE"
DEFAULT_FILE = "runs.db"
DISABLED = ("none", "off", "false", "0")
SCHEMES = ("sqlite", "postgresql")
VALID_FORMS = "sqlite:///PATH, postgresql://USER@HOST:PORT/DB, a path to a .db file, or a folder holding runs.db"


def resolve_store_url(store: str | os.PathLike | None = None, output_dir: str | os.PathLike | None = None,
                      *, use_env: bool = True) -> str | None:
    """The SQLAlchemy URL of the store to use, or None when recording is disabled (``none``)."""
    value = None if store is None else str(store).strip()
    if not value and use_env:
        value = os.environ.get(ENV_VAR, "").strip() or None
    if not value:
        return sqlite_url(Path(output_dir or "runs") / DEFAULT_FILE)
    if value.lower() in DISABLED:
        return None
    if "://" in value:
        return normalize_url(value)
    path = Path(value).expanduser()
    if path.is_dir():
        path = path / DEFAULT_FILE
    return sqlite_url(path)


def sqlite_url(path: str | os.PathLike) -> str:
    return f"sqlite:///{Path(path).expanduser().resolve()}"


def normalize_url(url: str) -> str:
    """Check the scheme and pick an installed PostgreSQL driver (psycopg 3 or psycopg2)."""
    scheme, _, rest = url.partition("://")
    base, _, driver = scheme.lower().partition("+")
    if base == "postgres":  # the libpq / Heroku spelling
        base = "postgresql"
    if base not in SCHEMES:
        raise UserError(f"unsupported store URL scheme {scheme!r} in {mask_url(url)}; valid: {VALID_FORMS}")
    if base == "postgresql" and not driver:
        driver = _postgres_driver()
    return f"{base}{'+' + driver if driver else ''}://{rest}"


def _postgres_driver() -> str:
    import importlib.util

    for module, driver in (("psycopg", "psycopg"), ("psycopg2", "psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return driver
    raise UserError("a postgresql:// store needs a PostgreSQL driver; install one with: pip install 'psycopg[binary]'")


def mask_url(url: str) -> str:
    """The URL with its password replaced by ``***`` (for messages and tables)."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001  (an unparsable URL is shown as given, minus anything after ':' in userinfo)
        head, at, tail = url.rpartition("@")
        if not at:
            return url
        scheme, sep, user = head.partition("://")
        return f"{scheme}{sep}{user.split(':')[0]}:***@{tail}"


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL (None for other URLs or an in-memory database)."""
    if not url.startswith("sqlite"):
        return None
    path = url.partition(":///")[2]
    return Path(path) if path and path != ":memory:" else None


def is_store_location(source: str | os.PathLike) -> bool:
    """True for what ``fit`` / ``report`` should read through the store: a URL or a ``.db`` file."""
    text = str(source)
    if "://" in text:
        return text.split("://")[0].split("+")[0].lower() in SCHEMES + ("postgres",)
    return text.endswith(".db") or (Path(text).is_dir() and (Path(text) / DEFAULT_FILE).is_file())
