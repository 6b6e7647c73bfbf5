"""Command-line interface: the only layer that prints, reads options and env, and exits."""
