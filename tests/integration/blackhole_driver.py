"""Black-hole a live run session and time a blocking statement on it; run in its own netns.

Usage (as root): unshare --net python blackhole_driver.py. Starts a PostgreSQL server on this
namespace's loopback, connects as `run` does, then takes loopback down: packets vanish
without an error, as on a partitioned network. Prints {"elapsed", "outcome"} as JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pgserver import destroy, start_server

from schedctl.config import parse_database_url
from schedctl.db import libpq
from schedctl.db.connector import PgConnector

GIVE_UP = 60.0  # far beyond the bound under test: without it, the kernel retries for minutes


def loopback(state: str) -> None:
    subprocess.run(["ip", "link", "set", "lo", state], check=True)


loopback("up")
server = start_server()
outcome: list[str] = []
try:
    conn = PgConnector(parse_database_url(server.url()), "schedctl run")
    conn.session.execute("SELECT 1")
    loopback("down")

    def blocking_call() -> None:
        try:
            conn.session.execute("SELECT 1")  # no timeout: as any statement inside the tick
            outcome.append("answered")
        except libpq.PgOperationalError as e:
            outcome.append(f"PgOperationalError: {e}")

    started = time.monotonic()
    worker = threading.Thread(target=blocking_call, daemon=True)
    worker.start()
    worker.join(GIVE_UP)
    elapsed = time.monotonic() - started
    loopback("up")
finally:
    destroy(server)
print(json.dumps({"elapsed": elapsed, "outcome": outcome[0] if outcome else "still blocked"}))
sys.stdout.flush()
