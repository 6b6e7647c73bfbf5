"""The floor for `schedctl run` in Python: the whole run path with psycopg alone.

Connect, claim the slot row, take the advisory lock, run the command, record, unlock. No
validation, no spooling, no supervision beyond waiting: what remains is the driver's cost.
Usage: python prototype_run.py URL JOB_ID COMMAND...
"""

import gc
import os
import subprocess
import sys

gc.disable()
import psycopg  # noqa: E402

url, job_id, argv = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
conn = psycopg.connect(url, autocommit=True)
row = conn.execute(
    "INSERT INTO runs (job_id, job_name, slot, trigger, attempt, status, host, claimed_at, "
    "output_bytes, output_truncated, schedctl_version) VALUES (%s, 'proto', NULL, 'manual', 1, "
    "'running', 'bench', clock_timestamp(), 0, false, 'proto') RETURNING id",
    (job_id,),
).fetchone()
assert row is not None
conn.execute("SELECT pg_try_advisory_lock(96792833, %s)", (job_id,))
code = subprocess.call(argv)
conn.execute(
    "UPDATE runs SET status = %s, exit_code = %s, finished_at = clock_timestamp() WHERE id = %s",
    ("succeeded" if code == 0 else "failed", code, row[0]),
)
conn.execute("SELECT pg_advisory_unlock(96792833, %s)", (job_id,))
sys.stdout.flush()
os._exit(code)
