"""Fixtures of the remote tests: a real sshd on loopback (tests/remote/sshd.py)."""

from tests.remote.sshd import machine, ssh_host  # noqa: F401
