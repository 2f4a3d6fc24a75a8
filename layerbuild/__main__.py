"""`python -m layerbuild` runs the command line."""

from layerbuild.cli.main import entry

entry()
