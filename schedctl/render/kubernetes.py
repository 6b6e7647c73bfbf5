"""Kubernetes: a CronJob per job whose container runs `schedctl run JOB`."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from schedctl.models import Job
from schedctl.render import KILL_GRACE, STOP_GRACE


def k8s_name(job_name: str) -> str:
    """Return a CronJob name (DNS label, at most 52 characters) for a job name."""
    base = "schedctl-" + "".join(c if c.isalnum() else "-" for c in job_name).strip("-")
    if len(base) <= 52 and "--" not in base:  # job names are lower case already
        return base
    digest = hashlib.sha256(job_name.encode()).hexdigest()[:8]
    return f"{base[:43].rstrip('-')}-{digest}"


def render_kubernetes(jobs: Sequence[Job], image: str, secret: str, key: str = "url") -> str:
    """Return CronJob manifests (YAML; strings JSON-quoted, which YAML reads as they are)."""
    q = json.dumps
    docs: list[str] = []
    for job in sorted(jobs, key=lambda j: j.name):
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
            f"  name: {k8s_name(job.name)}\n"
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
