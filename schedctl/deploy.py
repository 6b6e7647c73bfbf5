"""Use cases that bring a host in line with the database: render and sync units and crontabs."""

from __future__ import annotations

import os
import pwd
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from schedctl import hostfiles
from schedctl.clock import Clock
from schedctl.errors import ConfigError, NotFoundError, ValidationError
from schedctl.hostfiles import FileChange
from schedctl.models import Job
from schedctl.placement import selector_of
from schedctl.render import MANAGED_MARK, Target
from schedctl.render.crontab import crontab_block, replace_block
from schedctl.render.kubernetes import render_kubernetes
from schedctl.render.systemd import UNIT_PREFIX, render_systemd
from schedctl.validate import validate_spec

if TYPE_CHECKING:
    from schedctl.db.repository import Repository
    from schedctl.trust import HostTrust

_RELOAD_HINT = "check `journalctl -xe`, or pass --no-reload to only write the files"
_USER_RELOAD_HINT = (
    "is your user manager running? It runs while you are logged in, or always after "
    "`loginctl enable-linger $USER`; check `journalctl --user -xe`, or pass --no-reload to "
    "only write the files"
)
_CRONTAB_HINT = "is Debian's cron package installed (apt-get install cron)?"


@dataclass
class SyncReport:
    """What a sync changed (or, dry, would change)."""

    changes: list[FileChange]
    unchanged: int
    commands: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def diff(self) -> str:
        """Return all changes as one unified diff."""
        return "".join(c.diff() for c in self.changes)


class HostIdentity(NamedTuple):
    """Who syncs: the host's name, its labels (`host=NAME` included) and schedctl version."""

    name: str
    labels: Mapping[str, str]
    version: str


def select_jobs(
    store: Repository, names: Sequence[str], labels: Mapping[str, str] | None = None
) -> list[Job]:
    """Return the named jobs (all must exist), or every enabled job when none are named.

    With `labels`, every enabled job is narrowed to those placed on a host with those labels;
    jobs named explicitly are returned as asked.
    """
    if not names:
        enabled = [j for j in store.list_jobs() if j.spec.enabled]
        return enabled if labels is None else placed(renderable(enabled), labels)
    jobs = {j.name: j for j in store.list_jobs()}
    missing = [n for n in names if n not in jobs]
    if missing:
        if missing[0] in store.malformed:
            raise store.malformed[missing[0]]
        raise NotFoundError(f"no job named {missing[0]!r}: see `schedctl list`")
    return [jobs[n] for n in dict.fromkeys(names)]


def screen(
    store: Repository,
    jobs: list[Job],
    host: str,
    trust: HostTrust | None,
    dry_run: bool,
    env: Mapping[str, str],
) -> tuple[list[Job], list[str]]:
    """Return the jobs this host agrees to run, and a note on each one it refuses.

    Refusals are recorded (so `check` shows them) and a refusal this host no longer makes is
    cleared, unless `dry_run`.
    """
    if trust is None or not trust.active:
        return jobs, []
    from schedctl.trust import fix_for, judge

    kept: list[Job] = []
    notes: list[str] = []
    for job in jobs:
        refusal = judge(job, trust, env)
        if refusal is None:
            kept.append(job)
            continue
        notes.append(
            f"job {job.name} not installed: this host refuses it ({refusal.kind}: "
            f"{refusal.reason}); {fix_for(refusal.kind, job.name)}"
        )
        if not dry_run:
            store.record_refusal(job, host, refusal, None)
    if not dry_run:
        store.clear_refusals(host, [j.id for j in kept])
    return kept, notes


def placed(jobs: Sequence[Job], labels: Mapping[str, str]) -> list[Job]:
    """Return the jobs whose selector matches a host with `labels`."""
    return [j for j in jobs if selector_of(j.spec.placement).matches(labels)]


def renderable(jobs: Sequence[Job]) -> Sequence[Job]:
    """Return `jobs`, or raise naming the first one that today's validation refuses.

    A definition stored by an older schedctl, or written into the database by hand, may hold
    what a unit or crontab line cannot carry; one bad crontab line silences every other line.
    """
    for job in jobs:
        try:
            validate_spec(job.spec)
        except ValidationError as e:
            raise ConfigError(
                f"job {job.name} cannot be rendered: {e}; fix it (`schedctl edit {job.name}`) "
                f"or disable it (`schedctl disable {job.name}`); nothing was written"
            ) from None
    return jobs


def user_exists(name: str) -> bool:
    """Return whether this host knows the Unix user `name`."""
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def render_crontab(
    jobs: Sequence[Job], target: Target, daemon_zone: str, clock: Clock, user: str | None
) -> tuple[str, list[str]]:
    """Return the managed crontab block for the jobs and notes on jobs left out."""
    return crontab_block(renderable(jobs), target, daemon_zone, clock.now(), user)


def render_kubernetes_manifests(jobs: Sequence[Job], image: str, secret: str) -> str:
    """Return CronJob manifests for the jobs."""
    return render_kubernetes(renderable(jobs), image, secret)


def write_units(out_dir: Path, files: dict[str, str]) -> None:
    """Write rendered unit files into `out_dir` (created if missing)."""
    hostfiles.ensure_dir(out_dir)
    for name, text in files.items():
        hostfiles.atomic_write(out_dir / name, text)


def user_unit_jobs(jobs: Sequence[Job], owner: str) -> tuple[list[Job], list[str]]:
    """Return the jobs a user's own manager may run, and notes on those left out.

    As in a user crontab: schedctl would run as `owner` too, so a job with --user is left out
    (its own user could read the database password; another user cannot be switched to).
    """
    kept: list[Job] = []
    notes: list[str] = []
    for job in jobs:
        runs_as = job.spec.run_as_user
        if runs_as is None:
            kept.append(job)
        elif runs_as == owner:
            notes.append(
                f"job {job.name} runs as {runs_as}: left out of {owner}'s user units, where "
                f"schedctl would run as {owner} too and the job could read its database "
                f"password; install it as root instead (sudo schedctl sync systemd)"
            )
        else:
            notes.append(f"job {job.name} runs as {runs_as}: not in {owner}'s user units")
    return kept, notes


def render_systemd_files(
    jobs: Sequence[Job], target: Target, clock: Clock, user: bool = False
) -> dict[str, str]:
    """Return {unit file name: content} for the jobs (for a user's manager with `user`)."""
    now = clock.now()
    files: dict[str, str] = {}
    for job in renderable(jobs):
        files.update(render_systemd(job, target, now, user))
    return files


def user_unit_dir(env: Mapping[str, str]) -> Path:
    """Return where a user's own systemd manager reads units: $XDG_CONFIG_HOME/systemd/user."""
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".config")
    return Path(base) / "systemd" / "user"


def sync_systemd(
    store: Repository,
    clock: Clock,
    target: Target,
    unit_dir: Path,
    dry_run: bool,
    reload: bool,
    host: HostIdentity,
    systemctl: str = "systemctl",
    user: bool = False,
    trust: HostTrust | None = None,
) -> SyncReport:
    """Make `unit_dir` hold exactly the units of the enabled jobs placed on this host.

    Then reload and (re)arm, and record the host as synced. With `user`, the units are the
    current user's, managed with `systemctl --user`.
    """
    jobs, notes = screen(store, select_jobs(store, [], host.labels), host.name, trust, dry_run,
                         os.environ)  # fmt: skip
    if user:
        jobs, more = user_unit_jobs(jobs, current_user())
        notes += more
    desired = render_systemd_files(jobs, target, clock, user)
    existing = hostfiles.managed_files(unit_dir, UNIT_PREFIX, MANAGED_MARK)
    report = SyncReport([], 0, notes=notes)
    for name, text in sorted(desired.items()):
        path = unit_dir / name
        old = existing.get(name)
        if old is None and path.exists():
            report.notes.append(
                f"{path} exists but schedctl did not write it: left alone; remove it to let sync "
                f"manage it"
            )
        elif old == text:
            report.unchanged += 1
        else:
            report.changes.append(FileChange(path, old, text))
    report.changes += [
        FileChange(unit_dir / name, existing[name], None)
        for name in sorted(set(existing) - set(desired))
    ]
    timers = [c for c in report.changes if c.path.suffix == ".timer"]
    removed = [c.path.name for c in timers if c.new is None]
    added = [c.path.name for c in timers if c.old is None]
    changed = [c.path.name for c in timers if c.old is not None and c.new is not None]
    before: list[list[str]] = []
    after: list[list[str]] = []
    ctl = [systemctl, "--user"] if user else [systemctl]
    hint = _USER_RELOAD_HINT if user else _RELOAD_HINT
    if reload and report.changes:
        # Disable first, while the unit file still exists to name its [Install] links.
        before = [[*ctl, "disable", "--now", t] for t in removed]
        after = [[*ctl, "daemon-reload"]]
        if added:
            after.append([*ctl, "enable", "--now", *added])
        if changed:
            after.append([*ctl, "restart", *changed])  # re-arm with the new calendar
        report.commands = before + after
    if dry_run:
        return report
    if user and reload:
        # Without a running user manager the files would be written and never enabled, and
        # the next sync would find them unchanged: ask the manager first.
        hostfiles.check(hostfiles.command([*ctl, "show-environment"], hint), hint)
    hostfiles.ensure_dir(unit_dir)
    for argv in before:
        hostfiles.check(hostfiles.command(argv, hint), hint)
    hostfiles.apply(report.changes)
    for argv in after:
        hostfiles.check(hostfiles.command(argv, hint), hint)
    register(store, host, "systemd")
    return report


def register(store: Repository, host: HostIdentity, scheduler: str) -> None:
    """Record that `host` synced just now, with its labels (a sync's last step)."""
    store.register_host(host.name, host.labels, host.version, scheduler, synced=True)


def cron_d_path_problem(path: Path) -> str | None:
    """Return why cron would ignore `path` as an /etc/cron.d file, if it would."""
    if path.parent.name == "cron.d" and ("." in path.name or not path.name):
        return (
            f"cron ignores files in {path.parent} whose names contain a dot: use a name like "
            f"{path.parent / 'schedctl'}"
        )
    return None


def current_user() -> str:
    """Return the name of the user running this process."""
    return pwd.getpwuid(os.geteuid()).pw_name


def sync_crontab(
    store: Repository,
    clock: Clock,
    target: Target,
    daemon_zone: str,
    file: Path | None,
    user: str | None,
    dry_run: bool,
    host: HostIdentity,
    crontab: str = "crontab",
    trust: HostTrust | None = None,
) -> SyncReport:
    """Replace the managed block in a cron.d file (`file`) or in `user`'s crontab.

    The block holds the enabled jobs placed on this host; the host is recorded as synced.
    """
    if file is not None:
        problem = cron_d_path_problem(file)
        if problem:
            raise ValidationError(problem)
    jobs, refused = screen(store, select_jobs(store, [], host.labels), host.name, trust,
                           dry_run, os.environ)  # fmt: skip
    owner = user or current_user()
    block, notes = crontab_block(
        renderable(jobs), target, daemon_zone, clock.now(), None if file else owner, user_exists
    )
    notes = refused + notes
    if file is not None:
        old = hostfiles.read_text(file)
        label = file
    else:
        listed = hostfiles.command([crontab, "-u", owner, "-l"], _CRONTAB_HINT)
        if listed.returncode != 0 and "no crontab" not in listed.stderr:
            hostfiles.check(listed, _CRONTAB_HINT)
        old = listed.stdout if listed.returncode == 0 else None
        label = Path(f"crontab:{owner}")
    try:
        new = replace_block(old or "", block)
    except ValueError as exc:
        raise ConfigError(f"{label}: {exc}") from None
    report = SyncReport([], 0, notes=notes)
    if new == old:
        report.unchanged = 1
        if not dry_run:
            register(store, host, "cron")
        return report
    report.changes.append(FileChange(label, old, new))
    if dry_run:
        return report
    if file is not None:
        hostfiles.atomic_write(file, new, 0o644)  # cron skips group/other-writable files
    else:
        argv = [crontab, "-u", owner, "-"]
        report.commands.append(argv)
        hostfiles.check(hostfiles.command(argv, _CRONTAB_HINT, stdin=new), _CRONTAB_HINT)
    register(store, host, "cron")
    return report
