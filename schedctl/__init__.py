"""schedctl: run periodic jobs on a fleet of Linux hosts, exactly once per scheduled slot."""

__version__ = "0.1.0"
