"""Settings: database URL, data directory and default time zone, from flags, env and file."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple
from urllib.parse import quote

from schedctl import redact
from schedctl.errors import ConfigError

SYSTEM_CONFIG = Path("/etc/schedctl/schedctl.env")
SYSTEM_DATA_DIR = Path("/var/lib/schedctl")
URL_VAR = "SCHEDCTL_DATABASE_URL"
_PG_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")
SECRET_KEYWORDS = ("password", "sslpassword")  # libpq keywords never shown


@dataclass(frozen=True)
class DatabaseURL:
    """A validated database URL; `str()` and `repr()` never show the password.

    A PostgreSQL URL is parsed once, by libpq itself (PQconninfoParse): `params` are the
    keywords it yields, and they are what every connection uses and every message shows.
    """

    raw: str = field(repr=False)
    backend: str  # "postgresql" or "sqlite"
    sqlite_path: Path | None = None
    params: tuple[tuple[str, str], ...] = ()  # libpq keywords (PostgreSQL)
    # A password file libpq would refuse (config.refused_passfile): not to be read at all.
    skip_passfile: bool = False

    def __str__(self) -> str:
        if self.backend == "sqlite":
            return self.raw
        return display_url(dict(self.params))

    def __repr__(self) -> str:
        return f"DatabaseURL({str(self)!r})"

    @property
    def password(self) -> str | None:
        """Return the password, for scrubbing it from messages."""
        return dict(self.params).get("password")

    def libpq_params(self) -> dict[str, str]:
        """Return the libpq connection keywords the URL sets (nothing from the environment)."""
        return dict(self.params)


def display_url(params: Mapping[str, str]) -> str:
    """Write libpq keywords back as a URL for messages, secrets shown as ***."""
    rest = dict(params)
    user, password = rest.pop("user", ""), rest.pop("password", None)
    # Empty entries stay: libpq reads an empty host as its default (the Unix socket) and an
    # empty port as 5432, so dropping one would show another list of servers.
    hosts = rest.pop("host").split(",") if "host" in rest else []
    ports = rest.pop("port").split(",") if "port" in rest else []
    dbname = rest.pop("dbname", "")
    query: list[tuple[str, str]] = []
    netloc = ""
    if hosts and not any(h.startswith(("/", "@")) for h in hosts):  # no Unix socket paths
        names = [f"[{h}]" if ":" in h else quote(h, safe="") for h in hosts]
        if len(ports) == len(hosts):
            names = [f"{h}:{p}" if p else h for h, p in zip(names, ports, strict=True)]
        elif ports:
            query.append(("port", ",".join(ports)))
        netloc = ",".join(names)
    else:
        query += [("host", ",".join(hosts))] if hosts else []
        query += [("port", ",".join(ports))] if ports else []
    userinfo = quote(user, safe="") + (":***" if password is not None else "")
    query += [(k, "***" if k in SECRET_KEYWORDS else v) for k, v in rest.items()]
    text = "postgresql://" + (f"{userinfo}@" if userinfo else "") + netloc
    text += "/" + quote(dbname, safe="")
    if query:
        text += "?" + "&".join(f"{k}={quote(v, safe='/:,')}" for k, v in query)
    return text


def mask_url(url: str) -> str:
    """Return `url` as messages show it: parsed, the password as ***; unparseable, hidden."""
    try:
        return str(parse_database_url(url))
    except ConfigError:
        return url.split("://", 1)[0] + "://***" if "://" in url else "***"


def _where(source: str | None) -> str:
    """Return ` given with --db`, ` in $VAR` or ` in FILE` for messages, or nothing."""
    if not source:
        return ""
    return {"--db": " given with --db", URL_VAR: f" in ${URL_VAR}"}.get(source, f" in {source}")


def _credentials_end(rest: str) -> int:
    """Return where libpq ends the user:password part of a URI (after `scheme://`), or -1.

    libpq takes the first `@` as its end, unless a `/` comes before it (fe-connect.c,
    conninfo_uri_parse_options).
    """
    cut = next((i for i, c in enumerate(rest) if c in "@/"), -1)
    return cut if cut >= 0 and rest[cut] == "@" else -1


def _parse_postgresql(raw: str, source: str | None) -> DatabaseURL:
    uri = "postgresql://" + raw.split("://", 1)[1]
    rest = uri.split("://", 1)[1]
    end = _credentials_end(rest)
    # The password as written, percent-escapes and all (the form a traceback would show), and
    # what the user may have meant by it when libpq reads the URL otherwise.
    redact.remember(rest[:end].partition(":")[2] if end >= 0 else None)
    redact.remember(rest.rpartition("@")[0].partition(":")[2])
    where = _where(source)
    hint = (
        "percent-encode special characters in the user name and password (@ as %40, / as "
        "%2F, : as %3A, ? as %3F, # as %23, % as %25, space as %20)"
    )
    if "@" in rest[end + 1 :].split("?", 1)[0]:
        # libpq would take part of the password for the host, port or database name, and
        # print it in every connection error.
        raise ConfigError(f"the database URL{where} has an '@' after the user and password: {hint}")
    from schedctl.db import libpq

    try:
        params = libpq.conninfo_parse(uri)
    except libpq.LibpqMissingError as e:
        raise ConfigError(e.advice()) from None
    except libpq.PgError as e:
        unknown = re.fullmatch(r'invalid URI query parameter: "([A-Za-z0-9_]+)"', str(e))
        if unknown:
            raise ConfigError(_unknown_parameter(uri, unknown[1], where)) from None
        # libpq quotes the offending part of the URL, which may be the password (itself
        # perhaps holding a quote): keep only what comes before the first quote.
        head, quoted, _ = str(e).partition('"')
        reason = (head + ('"…"' if quoted else "")).strip() or "not a libpq URI"
        raise ConfigError(f"cannot read the database URL{where} ({reason}): {hint}") from None
    redact.remember(*(params.get(k) for k in SECRET_KEYWORDS))
    if not all(re.fullmatch(r"[0-9]*", p) for p in params.get("port", "").split(",")):
        raise ConfigError(f"the database URL{where} has a port that is not a number: {hint}")
    attrs = params.get("target_session_attrs")
    if attrs and attrs not in TARGET_SESSION_ATTRS:
        # libpq refuses it only when connecting, which reads as an outage worth retrying.
        raise ConfigError(
            f"the database URL{where} has target_session_attrs={attrs!r}, which libpq does not "
            f"know: use read-write (schedctl needs a server that accepts writes); libpq also "
            f"takes {', '.join(v for v in TARGET_SESSION_ATTRS if v != 'read-write')}"
        )
    return DatabaseURL(raw=raw, backend="postgresql", params=tuple(params.items()))


# libpq's values (PostgreSQL 14 and later).
TARGET_SESSION_ATTRS = ("any", "read-write", "read-only", "primary", "standby", "prefer-standby")


def _unknown_parameter(uri: str, name: str, where: str) -> str:
    """Name a query parameter libpq does not know, and the keyword it may stand for."""
    from schedctl.db import libpq

    lower = name.lower()
    if lower != name:
        head, _, query = uri.partition("?")
        fixed = "&".join(
            lower + part[len(name) :] if part.split("=", 1)[0] == name else part
            for part in query.split("&")
        )
        try:
            libpq.conninfo_parse(f"{head}?{fixed}")
        except libpq.PgError:
            pass
        else:
            return (
                f"the database URL{where} has the parameter {name!r}, which libpq does not know: "
                f"its parameter names are lower case, write {lower!r}"
            )
    return (
        f"the database URL{where} has the parameter {name!r}, which libpq does not know: fix "
        f"or remove it (libpq's documentation lists its parameter key words)"
    )


def parse_database_url(raw: str, source: str | None = None) -> DatabaseURL:
    """Validate `raw` as a PostgreSQL or SQLite URL; `source` (where it came from) is for messages."""
    scheme = raw.split("://", 1)[0].lower() if "://" in raw else ""
    if scheme in _PG_SCHEMES:
        return _parse_postgresql(raw, source)
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
    # The rest is not shown: an unknown kind of URL may still hold a password.
    raise ConfigError(
        f"unsupported database URL kind {kind!r}{_where(source)}: use "
        f"postgresql://USER:PASSWORD@HOST/DB or sqlite:////PATH/TO/FILE.db"
    )


def db_flag_warning(settings: Settings) -> str | None:
    """Return a warning when the password came on the command line, where `ps` shows it."""
    if settings.source != "--db" or not settings.database.password:
        return None
    return (
        "--db puts the database password on the command line, where every user on this host "
        f"(and every job) can read it with ps: set ${URL_VAR} or write it to {SYSTEM_CONFIG} "
        "(0600) instead"
    )


def data_dir(env: Mapping[str, str]) -> Path:
    """Return where schedctl keeps local state (the SQLite default, spool files)."""
    if env.get("SCHEDCTL_DATA_DIR"):
        return Path(env["SCHEDCTL_DATA_DIR"])
    if os.geteuid() == 0:
        return SYSTEM_DATA_DIR
    base = env.get("XDG_DATA_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".local/share")
    return Path(base) / "schedctl"


SYSTEM_SECRETS_DIR = Path("/etc/schedctl/secrets")


def secrets_dir(env: Mapping[str, str]) -> Path:
    """Return where this host keeps the files of `file:` secrets (SCHEDCTL_SECRETS_DIR).

    The configuration file wins over the environment; the default is /etc/schedctl/secrets
    for root, the user's configuration directory's `schedctl/secrets` otherwise.
    """
    chosen = file_values(env).get("SCHEDCTL_SECRETS_DIR") or env.get("SCHEDCTL_SECRETS_DIR")
    if chosen:
        return Path(chosen)
    if os.geteuid() == 0:
        return SYSTEM_SECRETS_DIR
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".config")
    return Path(base) / "schedctl" / "secrets"


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
    """Read `KEY=VALUE` lines (systemd EnvironmentFile subset: comments, optional quotes).

    Run as root, a file another user owns or can write is refused: it names the database and
    what this host trusts.
    """
    from schedctl.datadir import root_trusts

    root_trusts(path, "config file", "set SCHEDCTL_CONFIG to a file root owns")
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


def file_values(env: Mapping[str, str]) -> dict[str, str]:
    """Return the configuration file's settings, or none when no file applies."""
    path = config_file(env)
    return {} if path is None else read_env_file(path)


def notify_defaults(env: Mapping[str, str]) -> tuple[tuple[str, ...], tuple[str, ...] | None]:
    """Return the default targets and events for new jobs ($SCHEDCTL_NOTIFY, _NOTIFY_ON).

    The environment wins over the configuration file. Both are comma-separated lists.
    """
    values = {**file_values(env), **env}

    def items(key: str) -> list[str]:
        return [t.strip() for t in values.get(key, "").split(",") if t.strip()]

    events = items("SCHEDCTL_NOTIFY_ON")
    return tuple(items("SCHEDCTL_NOTIFY")), tuple(events) if events else None


class Settings(NamedTuple):
    """Resolved settings for one schedctl invocation."""

    database: DatabaseURL
    source: str
    data_dir: Path
    passfile_warning: str | None = None
    # Why the embedded SQLite database is used where a shared one was probably meant.
    default_reason: str | None = None

    def personal_database_note(self) -> str | None:
        """Say which database is used and why, when a system install's URL was unreadable."""
        if self.default_reason is None:
            return None
        return (
            f"using your own SQLite database {self.database.sqlite_path}: {self.default_reason}; "
            f"to use the system's database run as root, or set ${URL_VAR}"
        )


def refused_passfile(params: Mapping[str, str], env: Mapping[str, str]) -> tuple[str, str] | None:
    """Return (path, why) when libpq would read a password file for `params` and refuse it.

    libpq's rules (fe-connect.c): with no password in the URL or $PGPASSWORD, it reads
    `passfile`, else $PGPASSFILE, else ~/.pgpass ($HOME first); a file that is not a plain
    file, or that the group or others may access, it ignores with a warning of its own.
    """
    if params.get("password") or env.get("PGPASSWORD"):
        return None
    path = params.get("passfile") or env.get("PGPASSFILE")
    if not path:
        home = env.get("HOME") or os.path.expanduser("~")
        if not home or home == "~":
            return None
        path = os.path.join(home, ".pgpass")
    try:
        st = os.stat(path)
    except OSError:  # libpq too passes over a file it cannot see
        return None
    if not stat.S_ISREG(st.st_mode):
        return path, "is not a plain file"
    if st.st_mode & 0o077:
        return path, f"has group or world access (mode {stat.S_IMODE(st.st_mode):04o})"
    return None


def _with_passfile_checked(settings: Settings, env: Mapping[str, str]) -> Settings:
    """Say in one line that a password file is refused, and keep libpq from reading it.

    libpq would ignore the file anyway, but print its own warning on stderr in a form no
    monitoring expects (exit-codes.md: notices libpq would print are not printed).
    """
    url = settings.database
    refused = refused_passfile(url.libpq_params(), env) if url.backend == "postgresql" else None
    if refused is None:
        return settings
    path, why = refused
    warning = (
        f"password file {path} {why}, so it is not read: make it the connecting user's own "
        f"with `chmod 0600 {path}`, or give the password another way"
    )
    return settings._replace(database=replace(url, skip_passfile=True), passfile_warning=warning)


def resolve(env: Mapping[str, str], db_flag: str | None = None) -> Settings:
    """Resolve settings: `--db`, then $SCHEDCTL_DATABASE_URL, then the config file, then SQLite."""
    return _with_passfile_checked(_resolve(env, db_flag), env)


def _resolve(env: Mapping[str, str], db_flag: str | None) -> Settings:
    ddir = data_dir(env)
    if db_flag:
        return Settings(parse_database_url(db_flag, "--db"), "--db", ddir)
    if env.get(URL_VAR):
        return Settings(parse_database_url(env[URL_VAR], URL_VAR), URL_VAR, ddir)
    path = config_file(env)
    if path is not None:
        url = read_env_file(path).get(URL_VAR)
        if url:
            return Settings(parse_database_url(url, str(path)), str(path), ddir)
    default = DatabaseURL(
        raw=f"sqlite:///{ddir / 'schedctl.db'}", backend="sqlite", sqlite_path=ddir / "schedctl.db"
    )
    reason = None
    if not env.get("SCHEDCTL_CONFIG") and SYSTEM_CONFIG.is_file() and os.geteuid() != 0:
        # A system install keeps the shared URL root's (0600): others fall through to here.
        reason = f"{SYSTEM_CONFIG}, the system install's settings, is not readable by this user"
    return Settings(default, "default", ddir, default_reason=reason)


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


LABELS_VAR = "SCHEDCTL_HOST_LABELS"


def host_labels(env: Mapping[str, str]) -> dict[str, str]:
    """Return this host's labels: the config file's, then $SCHEDCTL_HOST_LABELS's per key.

    The variable adds to the file's labels and wins where both set a key; `host=NAME` is
    always there. A bad label is a ConfigError naming where it came from.
    """
    from schedctl.errors import ValidationError
    from schedctl.placement import parse_labels, with_host

    labels: dict[str, str] = {}
    try:
        path = config_file(env)
        if path is not None:
            text = read_env_file(path).get(LABELS_VAR)
            if text:
                labels.update(parse_labels(text, f"{LABELS_VAR} in {path}"))
        if env.get(LABELS_VAR):
            labels.update(parse_labels(env[LABELS_VAR], f"${LABELS_VAR}"))
    except ValidationError as e:
        raise ConfigError(str(e)) from None
    return with_host(labels, host_name(env))


HOST_VAR = "SCHEDCTL_HOST"
MAX_HOST_NAME = 255
# What a stored string may not hold (validate.py): C0 but tab, DEL, C1, U+2028/2029, and lone
# surrogates (bytes that are not UTF-8, which no database can store).
_BAD_HOST = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def host_name(env: Mapping[str, str]) -> str:
    """Return the host name recorded on runs; $SCHEDCTL_HOST overrides it (containers, tests).

    A name a stored string may not be (a control character, a line separator, bytes that are
    not UTF-8, more than 255 characters) is a ConfigError naming where it came from.
    """
    # uname's nodename is what gethostname() returns on Linux, without loading socket.
    given = env.get(HOST_VAR)
    name = given or os.uname().nodename
    where = f"${HOST_VAR}" if given else "this host's name (uname -n)"
    fix = f"fix ${HOST_VAR}" if given else f"set {HOST_VAR} to a plain name"
    bad = _BAD_HOST.search(name)
    if bad:
        char = bad.group()
        what = "bytes that are not UTF-8" if "\ud800" <= char <= "\udfff" else f"{char!r}"
        raise ConfigError(
            f"{where} contains {what}, which no stored name may hold (control characters, "
            f"line separators): {fix}"
        )
    if len(name) > MAX_HOST_NAME:
        raise ConfigError(f"{where} is longer than {MAX_HOST_NAME} characters: {fix}")
    return name


HEARTBEAT_VAR = "SCHEDCTL_HEARTBEAT"


CONNECT_RETRY_VAR = "SCHEDCTL_CONNECT_RETRY"
# `run` reads the host's clock once connected: a minutely job's firing must still name its own
# slot (the latest at or before that clock plus 5 s) after the longest wait, and a connection
# timeout or two on top.
MAX_CONNECT_RETRY = 45.0


_DECIMAL = re.compile(r"[0-9]+(\.[0-9]*)?|\.[0-9]+", re.ASCII)


def _seconds(env: Mapping[str, str], var: str, low: float, high: float, default: float) -> float:
    """Return $var as seconds in [low, high], `default` when unset; else a ConfigError."""
    text = env.get(var)
    if not text:
        return default
    # Plain ASCII decimals only: float() also takes "1_0", other scripts' digits and "1e-320".
    value = float(text) if _DECIMAL.fullmatch(text) else float("nan")
    if not low <= value <= high:  # NaN fails both comparisons; infinity the upper one
        raise ConfigError(
            f"${var} is {text[:40]!r}: give a number of seconds from {low:g} to {high:g} "
            f"(default {default:g}), or unset it"
        )
    return value


def connect_retry_seconds(env: Mapping[str, str], default: float) -> float:
    """Return $SCHEDCTL_CONNECT_RETRY: how long to retry a server refusing connections as full."""
    return _seconds(env, CONNECT_RETRY_VAR, 0, MAX_CONNECT_RETRY, default)


def heartbeat_seconds(env: Mapping[str, str]) -> float:
    """Return $SCHEDCTL_HEARTBEAT in seconds; a value that is no number in range is a ConfigError.

    Checked before `run` claims anything: the interval sets the fence every other host waits
    out, so infinity, NaN or zero must never reach a run row.
    """
    from schedctl.models import (
        DEFAULT_HEARTBEAT_SECONDS,
        MAX_HEARTBEAT_SECONDS,
        MIN_HEARTBEAT_SECONDS,
    )

    return _seconds(
        env, HEARTBEAT_VAR, MIN_HEARTBEAT_SECONDS, MAX_HEARTBEAT_SECONDS, DEFAULT_HEARTBEAT_SECONDS
    )
