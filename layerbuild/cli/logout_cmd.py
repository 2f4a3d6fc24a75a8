"""`layerbuild logout [REGISTRY]`: forget a registry's credentials (config.json's and the helper's)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> tuple[str, Any]:
    p = sub.add_parser("logout", help="log out from a registry (default: Docker Hub)")
    p.add_argument("server", nargs="?", metavar="REGISTRY", help="HOST[:PORT] (default: docker.io)")
    return "logout", run


def run(args: argparse.Namespace) -> int:
    from layerbuild.reference import registry_host
    from layerbuild.registry.credentials import DockerConfig, config_key

    host = registry_host(args.server)
    if DockerConfig().erase(host):
        print(f"Removing login credentials for {config_key(host)}")
    else:
        print(f"Not logged in to {config_key(host)}")
    return 0
