"""Database URLs are read once, by libpq's own rules, for connecting, masking and messages.

psycopg's binding of PQconninfoParse is the oracle for the parse; the server itself says who
and where a connection really went.
"""

from __future__ import annotations

from urllib.parse import quote

import psycopg
import pytest
from pgserver import PgServer
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from schedctl.clock import SystemClock
from schedctl.config import parse_database_url
from schedctl.db.connector import PgConnector
from schedctl.db.repository import open_repository
from schedctl.db.schema import make_engine
from schedctl.errors import ConfigError

pytestmark = pytest.mark.postgres

# Each URL as libpq reads it (the scheme written as libpq spells it, for the oracle).
TRICKY = [
    "postgresql://u:p%40ss@h/db",
    "postgresql://u:p#ss@h:5433/db",
    "postgresql://u:p?ss@h/db?sslmode=disable",
    "postgresql://u:p?s=s@h/db",
    "postgres://u%3Aa:pw@[::1]:5433/d%2Fb",
    "postgresql+psycopg://u:pw@h1:1,h2:2/db",
    "postgresql://u@/db?host=/run/pg&port=5",
    "postgresql:///db?host=h&user=u&password=x%26y%3D",
    "postgresql://h/db?sslpassword=k3yp4ss&application_name=a%20b",
    "postgresql://u:%2Fp%3Fw%23d%20x%25@h/db",
    "postgresql://u%40corp:pw@h",
    "postgresql://",
]
# Written so that libpq would take part of the password for the host, port or database name,
# or cannot read it at all: refused, without a piece of the password in the message.
REFUSED = [
    ("postgresql://u:Qz8@Kx9@h/db", "'@' after the user and password"),
    ("postgresql://u:Qz8/Kx9@h/db", "'@' after the user and password"),
    ("postgresql://u:Qz8@Kx9/x@h/db", "'@' after the user and password"),
    ("postgresql://u:Qz8Kx9@h:Vw1/db", "port that is not a number"),
    ("postgresql://u:Qz8Kx9", "port that is not a number"),
    ("postgresql://u:Qz8%Kx9@h/db", "invalid percent-encoded token"),
    ("postgresql://u:Qz8?Kx9/Vw1@h/db", "cannot read the database URL"),
]


def oracle(url: str) -> dict[str, str]:
    return {
        k: str(v) for k, v in conninfo_to_dict("postgresql://" + url.split("://", 1)[1]).items()
    }


@pytest.mark.parametrize("url", TRICKY)
def test_schedctl_reads_urls_as_libpq_does(url: str) -> None:
    want = oracle(url)
    parsed = parse_database_url(url)
    assert parsed.password == want.get("password")
    assert parsed.libpq_params() == want
    # What messages show is a URL libpq reads back to the same place, secrets as ***.
    shown = oracle(str(parsed))
    masked = {k: ("***" if k in ("password", "sslpassword") else v) for k, v in want.items()}
    assert shown == masked
    for secret in (want.get("password"), want.get("sslpassword")):
        if secret:
            assert secret not in str(parsed) and secret not in repr(parsed)


@pytest.mark.parametrize(("url", "reason"), REFUSED)
def test_urls_libpq_would_misread_are_refused_without_the_password(url: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason) as info:
        parse_database_url(url, "SCHEDCTL_DATABASE_URL")
    message = str(info.value)
    assert "in $SCHEDCTL_DATABASE_URL" in message and "percent-encode" in message
    for piece in ("Qz8", "Kx9", "Vw1", "8@K", "8/K", "8%K"):
        assert piece not in message


def test_connections_go_where_libpq_reads_the_url(pg: PgServer) -> None:
    user, password, dbname = "we@ird:us/er", "p@ss/w:rd?#% x", "d b?#/%"
    with pg.admin() as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
            sql.Identifier(user), sql.Literal(password)))  # fmt: skip
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    enc = {k: quote(v, safe="") for k, v in (("u", user), ("p", password), ("d", dbname))}
    urls = [
        f"postgresql://{enc['u']}:{enc['p']}@127.0.0.1:{pg.port}/{enc['d']}",
        f"postgres://{enc['u']}:{enc['p']}@127.0.0.1:{pg.port}/{enc['d']}",
        f"postgresql+psycopg://{enc['u']}:{enc['p']}@127.0.0.1:{pg.port}/{enc['d']}",
        f"postgresql:///{enc['d']}?host=127.0.0.1&port={pg.port}&user={enc['u']}"
        f"&password={enc['p']}",
    ]
    query = "SELECT current_user::text, current_database()::text, inet_server_port()"
    want = (user, dbname, pg.port)
    for raw in urls:
        url = parse_database_url(raw)
        # psycopg hands the URL to libpq as it is: the reference.
        with psycopg.connect(raw.replace("postgresql+psycopg://", "postgresql://", 1)) as theirs:
            assert theirs.execute(query).fetchone() == want
        run_db = open_repository(url, SystemClock(), "schedctl run")  # the run path, on libpq
        assert isinstance(run_db.conn, PgConnector)
        try:
            assert run_db.conn.session.execute(query, ()).fetchone() == want
        finally:
            run_db.close()
        # `db upgrade`, the one command on SQLAlchemy and psycopg
        with make_engine(url).connect() as conn:
            assert tuple(conn.exec_driver_sql(query).one()) == want
        assert password not in str(url) and quote(password, safe="") not in str(url)


def test_a_urls_own_options_are_kept_beside_schedctls(pg: PgServer, pg_url: str) -> None:
    with pg.admin() as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS elsewhere")
    raw = pg_url + "?options=" + quote("-csearch_path=elsewhere -cstatement_timeout=4567")
    query = (
        "SELECT current_setting('search_path'), current_setting('statement_timeout'),"
        " current_setting('TimeZone'), current_setting('tcp_keepalives_idle')"
    )
    want = ("elsewhere", "4567ms", "UTC", "20")
    repo = open_repository(parse_database_url(raw), SystemClock())
    assert isinstance(repo.conn, PgConnector)
    try:
        assert repo.conn.session.execute(query, ()).fetchone() == want
    finally:
        repo.close()
    engine = make_engine(parse_database_url(raw))
    try:
        with engine.connect() as conn:
            assert tuple(conn.exec_driver_sql(query).one()) == want
    finally:
        engine.dispose()


def test_no_libpq_environment_variable_reaches_a_job() -> None:
    # libpq's own list of the variables it reads (PQconndefaults) is the oracle for the rule.
    from psycopg import pq

    from schedctl.services import inherited_env

    names = {o.envvar.decode() for o in pq.Conninfo.get_defaults() if o.envvar}
    assert {"PGPASSWORD", "PGPASSFILE", "PGSERVICE", "PGHOST", "PGUSER"} <= names
    # Read outside that list: where service files are.
    names |= {"PGSERVICEFILE", "PGSYSCONFDIR"}
    env = {name: "x" for name in names} | {"SCHEDCTL_DATABASE_URL": "x"}
    assert inherited_env(env | {"HOME": "/root"}) == {"HOME": "/root"}
