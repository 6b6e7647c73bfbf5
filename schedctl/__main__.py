"""`python -m schedctl`."""

from schedctl.entry import run

run()
