"""Settings: database URL, data directory and default time zone, from flags, env and file."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from schedctl.errors import ConfigError

SYSTEM_CONFIG = Path("/etc/schedctl/schedctl.env")
SYSTEM_DATA_DIR = Path("/var/lib/schedctl")
URL_VAR = "SCHEDCTL_DATABASE_URL"
_PG_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")


@dataclass(frozen=True)
class DatabaseURL:
    """A validated database URL; `str()` and `repr()` never show the password."""

    raw: str
    backend: str  # "postgresql" or "sqlite"
    sqlite_path: Path | None = None

    def __str__(self) -> str:
        return mask_url(self.raw)

    def __repr__(self) -> str:
        return f"DatabaseURL({mask_url(self.raw)!r})"

    @property
    def password(self) -> str | None:
        """Return the password, for scrubbing it from messages."""
        if self.backend != "postgresql":
            return None
        pw = urlsplit(self.raw).password
        return unquote(pw) if pw else None

    @property
    def sqlalchemy_url(self) -> str:
        """Return the URL in the dialect+driver form SQLAlchemy wants."""
        if self.backend == "sqlite":
            return f"sqlite:///{self.sqlite_path}"  # sqlite_path is absolute: 4 slashes
        parts = urlsplit(self.raw)
        return urlunsplit(parts._replace(scheme="postgresql+psycopg"))


def mask_url(url: str) -> str:
    """Return `url` with any password replaced by `***`."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = quote(unquote(parts.username or ""), safe="")
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        port = f":{parts.port}" if parts.port else ""
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}{port}"))
    except ValueError:
        # Unparseable: hide everything between "://" and "@" rather than risk a leak.
        return re.sub(r"://[^@/]*@", "://***@", url)


def parse_database_url(raw: str) -> DatabaseURL:
    """Validate `raw` as a PostgreSQL or SQLite URL."""
    scheme = raw.split("://", 1)[0].lower() if "://" in raw else ""
    if scheme in _PG_SCHEMES:
        try:
            parts = urlsplit(raw)
            _ = parts.port
        except ValueError:
            raise ConfigError(
                f"malformed database URL {mask_url(raw)}: use "
                f"postgresql://USER:PASSWORD@HOST:PORT/DBNAME"
            ) from None
        return DatabaseURL(raw=raw, backend="postgresql")
    if scheme == "sqlite":
        path = raw.split("://", 1)[1]
        # SQLAlchemy's convention: sqlite:////abs/path (four slashes) is absolute.
        if not path.startswith("//") or len(path) < 3:
            raise ConfigError(
                f"SQLite URL {raw!r} needs an absolute file path: write sqlite:////var/lib/x.db "
                f"(four slashes)"
            )
        return DatabaseURL(raw=raw, backend="sqlite", sqlite_path=Path(path[1:]))
    kind = scheme or "without a scheme"
    raise ConfigError(
        f"unsupported database URL kind {kind!r} ({mask_url(raw)}): use "
        f"postgresql://USER:PASSWORD@HOST/DB or sqlite:////PATH/TO/FILE.db"
    )


def data_dir(env: Mapping[str, str]) -> Path:
    """Return where schedctl keeps local state (the SQLite default, spool files)."""
    if env.get("SCHEDCTL_DATA_DIR"):
        return Path(env["SCHEDCTL_DATA_DIR"])
    if os.geteuid() == 0:
        return SYSTEM_DATA_DIR
    base = env.get("XDG_DATA_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".local/share")
    return Path(base) / "schedctl"


def config_file(env: Mapping[str, str]) -> Path | None:
    """Return the environment file to read, if one applies."""
    if env.get("SCHEDCTL_CONFIG"):
        return Path(env["SCHEDCTL_CONFIG"])
    if SYSTEM_CONFIG.is_file() and os.access(SYSTEM_CONFIG, os.R_OK):
        return SYSTEM_CONFIG
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".config")
    user = Path(base) / "schedctl" / "schedctl.env"
    return user if user.is_file() else None


def read_env_file(path: Path) -> dict[str, str]:
    """Read `KEY=VALUE` lines (systemd EnvironmentFile subset: comments, optional quotes)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"cannot read config file {path}: {exc.strerror}; fix its permissions or set "
            f"SCHEDCTL_CONFIG to another file"
        ) from None
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{path}:{number}: expected KEY=VALUE; fix or remove that line")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


class Settings(NamedTuple):
    """Resolved settings for one schedctl invocation."""

    database: DatabaseURL
    source: str
    data_dir: Path


def resolve(env: Mapping[str, str], db_flag: str | None = None) -> Settings:
    """Resolve settings: `--db`, then $SCHEDCTL_DATABASE_URL, then the config file, then SQLite."""
    ddir = data_dir(env)
    if db_flag:
        return Settings(parse_database_url(db_flag), "--db", ddir)
    if env.get(URL_VAR):
        return Settings(parse_database_url(env[URL_VAR]), URL_VAR, ddir)
    path = config_file(env)
    if path is not None:
        url = read_env_file(path).get(URL_VAR)
        if url:
            return Settings(parse_database_url(url), str(path), ddir)
    default = DatabaseURL(
        raw=f"sqlite:///{ddir / 'schedctl.db'}", backend="sqlite", sqlite_path=ddir / "schedctl.db"
    )
    return Settings(default, "default", ddir)


def default_timezone(env: Mapping[str, str]) -> str:
    """Return the host's configured IANA zone name, or UTC if it cannot be told."""
    tz = env.get("TZ", "").lstrip(":")
    if tz and not tz.startswith("/"):
        return tz
    try:
        name = Path("/etc/timezone").read_text(encoding="utf-8").strip()
        if name:
            return name
    except OSError:
        pass
    try:
        target = os.readlink("/etc/localtime")
        if "zoneinfo/" in target:
            return target.split("zoneinfo/", 1)[1]
    except OSError:
        pass
    return "UTC"


def host_name(env: Mapping[str, str]) -> str:
    """Return the host name recorded on runs; $SCHEDCTL_HOST overrides it (containers, tests)."""
    # uname's nodename is what gethostname() returns on Linux, without loading socket.
    return env.get("SCHEDCTL_HOST") or os.uname().nodename
