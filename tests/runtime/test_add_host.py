"""`--add-host` entries read as docker reads them, written as BuildKit and docker write them (pure logic;
the real /etc/hosts of RUN steps and containers is checked in tests/cli/test_labels_and_hosts.py)."""

from __future__ import annotations

import pytest

from layerbuild.errors import UsageError
from layerbuild.runtime.network import GUEST_ADDRESS, canonical_ip, hosts_file, parse_add_host


@pytest.mark.parametrize(("entry", "parsed"), [
    ("db:10.0.0.5", ("db", "10.0.0.5")),
    ("db=10.0.0.5", ("db", "10.0.0.5")),
    ("v6:::1", ("v6", "::1")),  # cut at the first ':', as docker cuts it
    ("v6=::1", ("v6", "::1")),
    ("v6:[2001:DB8::1]", ("v6", "2001:DB8::1")),  # brackets go, the spelling stays (docker run)
    ("v4:[10.0.0.1]", ("v4", "10.0.0.1")),
    ("x.y-z: 1.2.3.4 ", ("x.y-z", "1.2.3.4")),  # docker trims the address before it parses it
    ("gw:host-gateway", ("gw", "host-gateway")),
])
def test_add_host_spellings(entry: str, parsed: tuple[str, str]) -> None:
    assert parse_add_host(entry) == parsed


@pytest.mark.parametrize("entry", ["a=b:c", "h:01.2.3.4", "h:::1%lo", "h:", "a\nb:1.2.3.4", "a#b:1.2.3.4"])
def test_add_host_refusals(entry: str) -> None:
    with pytest.raises(UsageError, match="add-host"):
        parse_add_host(entry)


def test_add_host_canonical_form_as_buildkit_writes_it() -> None:
    assert canonical_ip("2001:DB8:0:0::1") == "2001:db8::1"
    assert canonical_ip("::ffff:1.2.3.4") == "1.2.3.4"  # Go prints an IPv4-mapped address as IPv4
    assert canonical_ip("10.0.0.5") == "10.0.0.5"


def test_extra_hosts_come_before_the_container_s_own_name() -> None:
    text = hosts_file("default", "box", [("db", "10.0.0.5")])
    assert text.splitlines()[-2:] == ["10.0.0.5\tdb", f"{GUEST_ADDRESS}\tbox"]
    assert hosts_file("none", "box").splitlines()[-1] == "127.0.1.1\tbox"
