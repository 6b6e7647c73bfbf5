"""What verifying signed definitions and host policy adds to `schedctl run` (on demand): a table.

    .venv/bin/python bench/verify_bench.py [--repeat N]

On the embedded SQLite database in a temporary directory, with the installed schedctl next to
the interpreter and a fresh ed25519 key: the whole-process time of `schedctl run JOB --now`
(command `/bin/true`, signed) on a host without trust settings, on one that requires
signatures, and on one with a user and command-directory policy only, timed round-robin so a
change in the machine's speed affects all alike; and `ssh-keygen -Y verify` alone, in-process.
Medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PY = sys.executable


def timed(args: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(args, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return (time.perf_counter() - start) * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=21)
    opts = parser.parse_args()
    from schedctl.models import JobSpec, Seal
    from schedctl.signing import canonical, sign, verify

    with tempfile.TemporaryDirectory() as tmp:
        key = Path(tmp) / "key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        signers = Path(tmp) / "allowed"
        signers.write_text(f"bench@example.com {Path(f'{key}.pub').read_text()}")
        env = {"PATH": "/usr/bin:/bin", "HOME": tmp, "SCHEDCTL_DATA_DIR": f"{tmp}/data",
               "SCHEDCTL_CONFIG": os.devnull}  # fmt: skip
        schedctl = str(Path(PY).parent / "schedctl")
        subprocess.run([schedctl, "add", "quick", "-s", "@daily", "--", "/bin/true"],
                       env={**env, "SCHEDCTL_SIGNING_KEY": str(key),
                            "SCHEDCTL_SIGNER": "bench@example.com"},
                       check=True, stdout=subprocess.DEVNULL)  # fmt: skip
        variants = {
            "run --now, no trust settings": env,
            "run --now, signature required": {**env, "SCHEDCTL_REQUIRE_SIGNATURE": "1",
                                              "SCHEDCTL_ALLOWED_SIGNERS": str(signers)},
            "run --now, user + command-dir policy": {**env, "SCHEDCTL_ALLOWED_USERS": "root",
                                                     "SCHEDCTL_COMMAND_DIRS": "/bin,/usr/bin"},
        }  # fmt: skip
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(opts.repeat):
            for name, vars_ in variants.items():
                times[name].append(timed([schedctl, "run", "quick", "--now"], vars_))
        spec = JobSpec(name="quick", schedule="@daily", timezone="UTC", command=("/bin/true",))
        data = canonical(spec, 1)
        seal: Seal = sign(data, key, "bench@example.com")
        alone = []
        for _ in range(opts.repeat):
            start = time.perf_counter()
            assert verify(data, seal, signers) is None
            alone.append((time.perf_counter() - start) * 1000)
    base = statistics.median(times["run --now, no trust settings"])
    print(f"{'what':<40}  {'median ms':>9}  {'min ms':>6}  {'added ms':>8}")
    print(f"{'-' * 40}  {'-' * 9}  {'-' * 6}  {'-' * 8}")
    for name, found in times.items():
        median = statistics.median(found)
        print(f"{name:<40}  {median:>9.1f}  {min(found):>6.1f}  {median - base:>8.1f}")
    print(f"{'ssh-keygen -Y verify (in-process call)':<40}  {statistics.median(alone):>9.1f}  "
          f"{min(alone):>6.1f}  {'-':>8}")  # fmt: skip


if __name__ == "__main__":
    main()
