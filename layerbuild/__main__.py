"""`python -m layerbuild` runs the command line."""

from layerbuild.cli.launch import entry

entry()
