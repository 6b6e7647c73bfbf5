"""Results that could not be written to the database, kept in local files until they can."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

from schedctl.models import RunStatus
from schedctl.store.rundb import RunDB, RunResult


def _encode(result: RunResult) -> dict[str, Any]:
    data = result._asdict()
    data["status"] = result.status.value
    for key in ("started_at", "finished_at"):
        value = data[key]
        data[key] = value.isoformat() if value is not None else None
    return data


def _decode(data: dict[str, Any]) -> RunResult:
    for key in ("started_at", "finished_at"):
        if data[key] is not None:
            data[key] = datetime.fromisoformat(data[key])
    data["status"] = RunStatus(data["status"])
    return RunResult(**data)


def write(spool_dir: Path, run_id: int, result: RunResult) -> Path:
    """Store `result` for run `run_id` atomically in a private file; return its path."""
    spool_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = spool_dir / f"run-{run_id}.json"
    tmp = spool_dir / f".run-{run_id}.json.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({"run_id": run_id, "result": _encode(result)}, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def pending(spool_dir: Path) -> list[Path]:
    """Return the spooled results, oldest run first."""
    if not spool_dir.is_dir():
        return []
    return sorted(spool_dir.glob("run-*.json"), key=lambda p: int(p.stem.split("-")[1]))


def flush(spool_dir: Path, db: RunDB) -> int:
    """Write every spooled result to the database, deleting each file once stored."""
    done = 0
    for path in pending(spool_dir):
        data = json.loads(path.read_text(encoding="utf-8"))
        db.finish(int(data["run_id"]), _decode(data["result"]))
        path.unlink()
        done += 1
    return done
