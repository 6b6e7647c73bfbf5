"""Settings resolution and password hygiene."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from schedctl.config import mask_url, parse_database_url, read_env_file, resolve
from schedctl.errors import ConfigError


def test_mask_url_hides_password() -> None:
    assert mask_url("postgresql://u:s3cret@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert mask_url("postgresql://u@h/db") == "postgresql://u@h/db"
    assert "p%40ss" not in mask_url("postgresql://u:p%40ss@h/db")


def test_database_url_repr_and_str_never_show_password() -> None:
    url = parse_database_url("postgresql://u:s3cret@h/db")
    assert "s3cret" not in str(url)
    assert "s3cret" not in repr(url)
    assert url.password == "s3cret"
    assert url.libpq_params() == {"user": "u", "password": "s3cret", "host": "h", "dbname": "db"}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("mysql://u:pw@h/db", "unsupported database URL kind 'mysql'"),
        ("just-a-path.db", "unsupported database URL kind 'without a scheme'"),
        ("sqlite:///relative.db", "absolute file path"),
        ("postgresql://u:pw@h:notaport/db", "has a port that is not a number"),
    ],
)
def test_bad_urls(raw: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_database_url(raw)
    assert ":pw@" not in str(info.value)


def test_resolution_order(tmp_path: Path) -> None:
    cfg = tmp_path / "schedctl.env"
    cfg.write_text('# comment\nSCHEDCTL_DATABASE_URL="postgresql://f@h/fromfile"\n')
    env = {"SCHEDCTL_DATA_DIR": str(tmp_path), "SCHEDCTL_CONFIG": str(cfg)}
    assert resolve(env).source == str(cfg)
    assert resolve(env).database.raw == "postgresql://f@h/fromfile"
    env["SCHEDCTL_DATABASE_URL"] = "postgresql://e@h/fromenv"
    assert resolve(env).source == "SCHEDCTL_DATABASE_URL"
    assert resolve(env, "sqlite:////x/flag.db").database.sqlite_path == Path("/x/flag.db")
    empty = tmp_path / "empty.env"
    empty.write_text("")
    default = resolve({"SCHEDCTL_DATA_DIR": str(tmp_path), "SCHEDCTL_CONFIG": str(empty)})
    assert default.source == "default"
    assert default.database.sqlite_path == tmp_path / "schedctl.db"


def test_bad_env_file_line(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.env"
    cfg.write_text("NOT A SETTING\n")
    with pytest.raises(ConfigError, match=re.escape("bad.env:1: expected KEY=VALUE")):
        read_env_file(cfg)


def test_named_config_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        resolve({"SCHEDCTL_DATA_DIR": str(tmp_path), "SCHEDCTL_CONFIG": str(tmp_path / "none")})


def test_an_empty_host_stays_in_the_shown_url() -> None:
    # libpq tries the default socket for the empty host: the list shown is the list tried.
    assert str(parse_database_url("postgres://u:pw@,127.0.0.1:5433/sched")) == (
        "postgresql://u:***@,127.0.0.1:5433/sched"
    )
    assert str(parse_database_url("postgresql://u@h1:1,h2/db")) == "postgresql://u@h1:1,h2/db"


@pytest.mark.parametrize("value", ["bogus", "READ-WRITE"])
def test_an_unknown_target_session_attrs_is_a_settings_error(value: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_database_url(f"postgresql://u:pw@h/db?target_session_attrs={value}")
    assert f"target_session_attrs={value!r}" in str(e.value)
    assert "use read-write" in str(e.value)
    assert "prefer-standby" in str(e.value)


@pytest.mark.parametrize("value", ["read-write", "primary", "any", "read-only"])
def test_known_target_session_attrs_are_taken(value: str) -> None:
    url = parse_database_url(f"postgresql://u:pw@h/db?target_session_attrs={value}")
    assert url.libpq_params()["target_session_attrs"] == value


def test_a_parameter_in_upper_case_is_named() -> None:
    with pytest.raises(ConfigError) as e:
        parse_database_url("postgresql://u:pw@h/db?TARGET_SESSION_ATTRS=any")
    assert "'TARGET_SESSION_ATTRS'" in str(e.value)
    assert "lower case, write 'target_session_attrs'" in str(e.value)
    assert "percent-encode" not in str(e.value)
    with pytest.raises(ConfigError) as e:
        parse_database_url("postgresql://u:pw@h/db?no_such_thing=1")
    assert "'no_such_thing', which libpq does not know" in str(e.value)
