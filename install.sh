#!/usr/bin/env bash
# Install or upgrade schedctl from this checkout. Safe to re-run: it upgrades in place.
#
#   ./install.sh                 user install: ~/.local/share/schedctl/venv, ~/.local/bin/schedctl
#   ./install.sh --system        /opt/schedctl/venv, /usr/local/bin/schedctl, /etc/schedctl (root)
#   ./install.sh --dev           also install the test and lint tooling
#   ./install.sh --system --db postgresql://...   write the URL to /etc/schedctl/schedctl.env
#   ./install.sh --python PATH   use this interpreter (3.11+) for the virtualenv
#   SCHEDCTL_VENV=DIR            user install into DIR, linked nowhere unless SCHEDCTL_BIN_DIR is set
#   SCHEDCTL_BIN_DIR=DIR         link DIR/schedctl to the install (instead of the default link)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
mode=user dev=0 db="" py=""

say() { printf 'install.sh: %s\n' "$*"; }
die() { printf 'install.sh: error: %s\n' "$*" >&2; exit 1; }
usage() { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
  case "$1" in
    --system) mode=system ;;
    --user) mode=user ;;
    --dev) dev=1 ;;
    --db) [ $# -ge 2 ] || die "--db needs a URL"; db=$2; shift ;;
    --db=*) db=${1#--db=} ;;
    --python) [ $# -ge 2 ] || die "--python needs a path"; py=$2; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown option $1 (see ./install.sh --help)" ;;
  esac
  shift
done

is_root() { [ "$(id -u)" -eq 0 ]; }

if [ "$mode" = system ]; then
  is_root || die "--system needs root: run it with sudo, or drop --system for a user install"
  venv=/opt/schedctl/venv
  link=/usr/local/bin/schedctl
else
  default_venv=$HOME/.local/share/schedctl/venv
  venv=${SCHEDCTL_VENV:-$default_venv}
  link=$HOME/.local/bin/schedctl
  # A virtualenv of its own is a second copy (a test venv, a version tried beside the one in
  # use): the `schedctl` already on PATH keeps pointing where it did.
  [ "$venv" = "$default_venv" ] || link=""
fi
[ -z "${SCHEDCTL_BIN_DIR:-}" ] || link=$SCHEDCTL_BIN_DIR/schedctl
[ -z "$db" ] || [ "$mode" = system ] || die "--db goes with --system; for a user install export SCHEDCTL_DATABASE_URL instead"

# Debian's own interpreter first: it is world-readable, so jobs running as other users
# (User=nobody) can execute the virtualenv built from it.
ok_python() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; }
if [ -z "$py" ]; then
  for candidate in /usr/bin/python3.11 /usr/bin/python3 python3.11 python3; do
    p=$(command -v "$candidate" 2>/dev/null) || continue
    if ok_python "$p"; then py=$p; break; fi
  done
fi
[ -n "$py" ] || die "no Python 3.11+ found: install it (apt-get install python3 python3-venv) or pass --python PATH"
ok_python "$py" || die "$py is not Python 3.11+: pass --python PATH to a newer interpreter"
runuser=$(command -v runuser || echo /usr/sbin/runuser)
if [ "$mode" = system ] && [ -x "$runuser" ] && ! "$runuser" -u nobody -- "$py" -c pass 2>/dev/null; then
  die "$py cannot be run by other users (jobs may use User=nobody): pass --python /usr/bin/python3"
fi

make_venv() {
  mkdir -p "$(dirname "$venv")"
  if ! "$py" -m venv --clear "$venv" >/dev/null 2>&1; then
    if is_root && command -v apt-get >/dev/null; then
      say "installing python3-venv (Debian splits venv support out of python3)"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
      "$py" -m venv --clear "$venv" || die "could not create a virtualenv at $venv"
    else
      die "could not create a virtualenv with $py: install python3-venv (sudo apt-get install python3-venv)"
    fi
  fi
}

# Reuse the virtualenv only if it works and was built from the same interpreter.
want_home=$(dirname "$(readlink -f "$py")")
have_home=$(sed -n 's/^home = //p' "$venv/pyvenv.cfg" 2>/dev/null || true)
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c pass 2>/dev/null && [ "$(readlink -f "$have_home")" = "$want_home" ]; then
  action=upgraded
else
  [ -d "$venv" ] && say "rebuilding $venv (built from another interpreter or broken)"
  make_venv
  action=installed
fi

pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
say "installing pinned dependencies into $venv"
"${pip[@]}" install -r "$here/requirements.lock"
if [ "$dev" = 1 ]; then
  say "installing test and lint tooling (requirements-dev.lock)"
  "${pip[@]}" install -r "$here/requirements-dev.lock"
fi
# A regular (not editable) install, so what is tested is what users run.
build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT
cp -r "$here/pyproject.toml" "$here/README.md" "$here/schedctl" "$build/"
"${pip[@]}" install --no-deps --no-build-isolation --force-reinstall "$build"

if [ -n "$link" ]; then
  mkdir -p "$(dirname "$link")"
  ln -sfn "$venv/bin/schedctl" "$link"
fi

if [ "$mode" = system ]; then
  install -d -m 0755 /etc/schedctl
  install -d -m 0755 /var/lib/schedctl
  envfile=/etc/schedctl/schedctl.env
  if [ -n "$db" ]; then
    # Try the URL before writing it: every timer and job on this host would read it.
    # Through the environment, not the command line, where `ps` would show a password.
    rc=0
    out=$(env SCHEDCTL_DATABASE_URL="$db" SCHEDCTL_CONFIG=/dev/null "$venv/bin/schedctl" db status 2>&1 >/dev/null) || rc=$?
    # 0: current schema; 5: reachable, the schema still to create (`schedctl db upgrade`).
    if [ "$rc" -ne 0 ] && [ "$rc" -ne 5 ]; then
      die "--db does not work, nothing written to $envfile: $(printf '%s' "$out" | tail -n 1 | sed 's/^schedctl: error: //')"
    fi
    umask 077
    tmp=$(mktemp /etc/schedctl/.schedctl.env.XXXXXX)
    printf '# schedctl settings, read by schedctl itself (as root; keep this file 0600).\nSCHEDCTL_DATABASE_URL=%s\n' "$db" >"$tmp"
    chmod 0600 "$tmp"
    mv -f "$tmp" "$envfile"
    say "wrote the database URL to $envfile (mode 0600)"
  elif [ ! -e "$envfile" ]; then
    umask 077
    printf '# schedctl settings, read by schedctl itself (as root; keep this file 0600).\n# SCHEDCTL_DATABASE_URL=postgresql://schedctl:PASSWORD@db.example:5432/schedctl\n' >"$envfile"
    chmod 0600 "$envfile"
    say "created $envfile (mode 0600); put SCHEDCTL_DATABASE_URL there for a shared PostgreSQL"
  fi
  # The sync timer keeps this host's job timers in line with the database, the notify timer
  # delivers notifications, the prune timer applies retention once a day.
  unitdir=${SCHEDCTL_UNIT_DIR:-/etc/systemd/system}
  if [ -d "$unitdir" ]; then
    for unit in "$here"/units/*.service "$here"/units/*.timer; do
      [ -e "$unit" ] && install -m 0644 "$unit" "$unitdir/"
    done
    if [ -d /run/systemd/system ] && [ -z "${SCHEDCTL_UNIT_DIR:-}" ]; then
      systemctl daemon-reload
      systemctl enable --now schedctl-sync.timer schedctl-prune.timer schedctl-notify.timer
      say "enabled schedctl-sync.timer (\`schedctl sync systemd\` every minute), schedctl-notify.timer (\`schedctl notify\` every minute) and schedctl-prune.timer (daily \`schedctl prune\`)"
    else
      say "installed units to $unitdir; where systemd runs: systemctl enable --now schedctl-sync.timer schedctl-prune.timer schedctl-notify.timer"
    fi
  fi
fi

version=$("$venv/bin/schedctl" --version)
if [ -n "$link" ]; then
  say "$action $version: $link -> $venv/bin/schedctl"
  case ":$PATH:" in
    *":$(dirname "$link"):"*) ;;
    *) say "note: $(dirname "$link") is not on your PATH; add it, or run $link" ;;
  esac
else
  say "$action $version: run it as $venv/bin/schedctl (SCHEDCTL_VENV is set, so no link was made; set SCHEDCTL_BIN_DIR=DIR to link DIR/schedctl to it)"
fi
if [ "$dev" = 1 ]; then
  say "run the tests with: $venv/bin/pytest"
fi
