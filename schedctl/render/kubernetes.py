"""Kubernetes: a CronJob per job whose container runs `schedctl run JOB`."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Sequence

from schedctl.errors import ConfigError, ValidationError
from schedctl.models import Job
from schedctl.render import KILL_GRACE, STOP_GRACE

PREFIX = "schedctl-"
MAX_NAME = 52  # a CronJob's name: the controller appends 11 characters for its Jobs
# Job names that are DNS labels as they are: no `.` or `_`, no `--`, no trailing `-`.
_PLAIN = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
_HASH_CHARS = 10  # base32: 50 bits


def k8s_name(job_name: str) -> str:
    """Return the CronJob name for a job: a DNS-1123 label of at most 52 characters.

    A job name that is already a label short enough is kept (`schedctl-NAME`). Any other is
    mapped lossily (`.` and `_` become `-`, long names are cut), so it gets `--` and a hash of
    the exact name: `a.b` and `a_b` differ, and no kept name has `--`, so none can equal it.
    """
    plain = PREFIX + job_name
    if _PLAIN.fullmatch(job_name) and len(plain) <= MAX_NAME:
        return plain
    digest = hashlib.sha256(job_name.encode()).digest()
    tag = base64.b32encode(digest).decode().lower()[:_HASH_CHARS]
    stem = re.sub(r"[^a-z0-9]+", "-", job_name).strip("-")
    room = MAX_NAME - len(PREFIX) - 2 - _HASH_CHARS
    stem = stem[:room].rstrip("-")
    return f"{PREFIX}{stem}--{tag}" if stem else f"{PREFIX}-{tag}"


# What the API server accepts: a Secret's name is a DNS-1123 subdomain, its key a config key.
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_SECRET_KEY = re.compile(r"[-._a-zA-Z0-9]+")


def _check_refs(image: str, secret: str, key: str) -> None:
    """Refuse an image, Secret name or key the cluster would reject when applied."""
    if not image or image != image.strip() or any(c.isspace() or ord(c) < 32 for c in image):
        raise ValidationError(
            f"--image {image!r} is not an image reference: give one like registry/schedctl:0.1"
        )
    if len(secret) > 253 or not _SUBDOMAIN.fullmatch(secret):
        raise ValidationError(
            f"--secret {secret!r} is not a Kubernetes Secret name: use lower-case letters, "
            f"digits, '-' and '.' (at most 253), e.g. schedctl-db"
        )
    if len(key) > 253 or not _SECRET_KEY.fullmatch(key):
        raise ValidationError(f"Secret key {key!r} may hold only letters, digits, '-', '_', '.'")


def render_kubernetes(jobs: Sequence[Job], image: str, secret: str, key: str = "url") -> str:
    """Return CronJob manifests (YAML; strings JSON-quoted, which YAML reads as they are)."""
    _check_refs(image, secret, key)
    q = json.dumps
    docs: list[str] = []
    seen: dict[str, str] = {}
    for job in sorted(jobs, key=lambda j: j.name):
        name = k8s_name(job.name)
        if name in seen:  # a 50-bit hash collision: never seen, but never rendered silently
            raise ConfigError(
                f"jobs {seen[name]} and {job.name} map to the same CronJob name {name}: "
                f"rename one of them"
            )
        seen[name] = job.name
        spec = job.spec
        deadline = ""
        if spec.timeout_seconds:
            deadline = (
                f"      activeDeadlineSeconds: {spec.timeout_seconds + KILL_GRACE + STOP_GRACE}\n"
            )
        args = ", ".join(q(a) for a in ["run", "--trigger", "cron", job.name])
        docs.append(
            "apiVersion: batch/v1\n"
            "kind: CronJob\n"
            "metadata:\n"
            f"  name: {name}\n"
            "  labels:\n"
            "    app.kubernetes.io/managed-by: schedctl\n"
            f"  annotations:\n    schedctl/job: {q(job.name)}\n"
            "spec:\n"
            f"  schedule: {q(spec.schedule)}\n"
            f"  timeZone: {q(spec.timezone)}\n"
            "  concurrencyPolicy: Forbid\n"
            f"  suspend: {'false' if spec.enabled else 'true'}\n"
            "  startingDeadlineSeconds: 300\n"
            "  jobTemplate:\n"
            "    spec:\n"
            "      backoffLimit: 0\n"  # schedctl run does the retries, each one recorded
            f"{deadline}"
            "      template:\n"
            "        spec:\n"
            "          restartPolicy: Never\n"
            "          containers:\n"
            "            - name: schedctl\n"
            f"              image: {q(image)}\n"
            f"              command: [{q('schedctl')}]\n"
            f"              args: [{args}]\n"
            "              env:\n"
            "                - name: SCHEDCTL_DATABASE_URL\n"
            "                  valueFrom:\n"
            "                    secretKeyRef:\n"
            f"                      name: {q(secret)}\n"
            f"                      key: {q(key)}\n"
            "                - name: SCHEDCTL_HOST\n"
            "                  valueFrom:\n"
            "                    fieldRef:\n"
            "                      fieldPath: metadata.name\n"
        )
    return "---\n".join(docs)
