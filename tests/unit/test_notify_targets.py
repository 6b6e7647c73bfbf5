"""Notification targets as shown and validated, the document's output tail, and settings."""

from __future__ import annotations

import pytest

from schedctl import redact
from schedctl.errors import ConfigError, ValidationError
from schedctl.models import mask_target, webhook_secret
from schedctl.notify import NotifySettings, last_bytes, settings_from
from schedctl.validate import check_events, check_target


@pytest.mark.parametrize(
    ("target", "shown"),
    [
        (
            "webhook:https://hooks.slack.com/services/T0/B0/XX",
            "webhook:https://hooks.slack.com/***",
        ),
        (
            "webhook:https://user:pw@example.com:8443/h?token=s",
            "webhook:https://example.com:8443/***",
        ),
        ("webhook:https://example.com?token=s", "webhook:https://example.com/***"),
        ("webhook:not a url", "webhook:***"),
        ("mailto:ops@example.com", "mailto:ops@example.com"),
        ("exec:/usr/local/bin/page", "exec:/usr/local/bin/page"),
    ],
)
def test_only_a_webhooks_scheme_and_host_are_ever_shown(target: str, shown: str) -> None:
    assert mask_target(target) == shown


def test_the_hidden_part_of_a_webhook_is_scrubbed_from_messages() -> None:
    target = "webhook:https://hooks.example.com/T0/very-secret-token?x=1"
    assert webhook_secret(target) == "/T0/very-secret-token?x=1"
    redact.remember(webhook_secret(target))
    assert "very-secret" not in redact.scrub(f"failed to send to {target}")


@pytest.mark.parametrize(
    "bad",
    ["webhook:ftp://x/y", "webhook:https:///nohost", "webhook:https://h:port/x", "mailto:",
     "mailto:-oQ/tmp", "mailto:a@b c", "exec:relative", "slack:#ops", "webhook",
     "webhook:https://h/a\nb"],
)  # fmt: skip
def test_unusable_targets_are_refused(bad: str) -> None:
    with pytest.raises(ValidationError):
        check_target(bad)


def test_events_come_back_in_their_canonical_order() -> None:
    assert check_events(("missed", "failure")) == ("failure", "missed")
    with pytest.raises(ValidationError):
        check_events(())


def test_the_tail_is_the_last_4_kib_and_cuts_no_character() -> None:
    text = "é" * 3000  # two bytes each
    tail = last_bytes(text)
    assert len(tail.encode()) <= 4096 and tail == "é" * 2048
    assert last_bytes("short") == "short" and last_bytes(None) == ""
    odd = "x" + "é" * 3000
    assert len(last_bytes(odd).encode()) == 4096


def test_settings_come_from_the_environment_and_are_checked() -> None:
    assert settings_from({}) == NotifySettings()
    found = settings_from({"SCHEDCTL_NOTIFY_BACKOFF": "0.5", "SCHEDCTL_NOTIFY_ATTEMPTS": "3"})
    assert (found.backoff, found.attempts) == (0.5, 3)
    assert [found.delay(n) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]
    assert NotifySettings().delay(20) == 3600.0
    for bad in ({"SCHEDCTL_NOTIFY_TIMEOUT": "0"}, {"SCHEDCTL_NOTIFY_ATTEMPTS": "1.5"},
                {"SCHEDCTL_NOTIFY_BUDGET": "nan"}):  # fmt: skip
        with pytest.raises(ConfigError):
            settings_from(bad)
