"""Where user units go: the user's systemd configuration directory."""

from __future__ import annotations

from pathlib import Path

from schedctl.deploy import user_unit_dir


def test_user_unit_dir_follows_xdg_config_home() -> None:
    assert user_unit_dir({"HOME": "/home/a"}) == Path("/home/a/.config/systemd/user")
    assert user_unit_dir({"HOME": "/home/a", "XDG_CONFIG_HOME": "/c"}) == Path("/c/systemd/user")
