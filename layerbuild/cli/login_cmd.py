"""`layerbuild login [-u USER] [-p PASS | --password-stdin] [REGISTRY]`: check credentials against the
registry, then keep them as docker does (its config.json, or the configured credential helper)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from layerbuild.errors import UsageError


def register(sub: Any) -> tuple[str, Any]:
    p = sub.add_parser("login", help="log in to a registry (default: Docker Hub)")
    p.add_argument("server", nargs="?", metavar="REGISTRY", help="HOST[:PORT] (default: docker.io)")
    p.add_argument("-u", "--username", metavar="USER")
    p.add_argument("-p", "--password", metavar="PASS", help="the password (insecure: prefer --password-stdin)")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    return "login", run


def run(args: argparse.Namespace) -> int:
    from layerbuild.reference import registry_host
    from layerbuild.registry.client import RegistryClient
    from layerbuild.registry.credentials import Credentials, DockerConfig, NoCredentials

    host = registry_host(args.server)
    username, password = args.username, args.password
    if args.password_stdin:
        if password is not None:
            raise UsageError("--password and --password-stdin are mutually exclusive", hint="use --password-stdin")
        if not username:
            raise UsageError("--password-stdin needs --username", hint="layerbuild login -u USER --password-stdin")
        password = sys.stdin.read().removesuffix("\n").removesuffix("\r")
    elif password is not None:
        print("WARNING! Using --password via the CLI is insecure. Use --password-stdin.", file=sys.stderr)
    if not username or password is None:
        username, password = _prompt(username, password)
    if not username:
        raise UsageError("a user name is needed to log in", hint="layerbuild login -u USER REGISTRY")
    if not password:
        raise UsageError("a password is needed to log in", hint="layerbuild login -u USER --password-stdin REGISTRY")
    creds = Credentials(username=username, password=password)
    with RegistryClient(credentials=NoCredentials()) as client:
        client.check_login(host, creds)
    config = DockerConfig()
    where = config.store(host, creds)
    if where == str(config.path):
        print(f"WARNING! Your password will be stored unencrypted in {where}.", file=sys.stderr)
    print("Login Succeeded")
    return 0


def _prompt(username: str | None, password: str | None) -> tuple[str, str]:
    """Ask on the terminal for what the flags did not give, as docker does."""
    import getpass

    if not sys.stdin.isatty():
        raise UsageError("cannot ask for credentials: standard input is not a terminal",
                         hint="layerbuild login -u USER --password-stdin REGISTRY < password-file")
    if not username:
        username = input("Username: ").strip()
    if password is None:
        password = getpass.getpass("Password: ")
    return username, password
