"""schedctl: run periodic jobs on a fleet of Linux hosts, exactly once per scheduled slot."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"
__all__ = ["__version__", "advisory_lock", "single_instance"]

if TYPE_CHECKING:
    from schedctl.guard import advisory_lock as advisory_lock
    from schedctl.guard import single_instance as single_instance


def __getattr__(name: str) -> Any:
    # Loaded on first use: `schedctl run` imports this package and must stay light.
    if name in ("advisory_lock", "single_instance"):
        from schedctl import guard

        return getattr(guard, name)
    raise AttributeError(f"module 'schedctl' has no attribute {name!r}")
