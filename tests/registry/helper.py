"""A docker-credential helper for the tests, speaking docker-credential-helpers' protocol: it keeps
its store in the JSON file $LBTEST_HELPER_STORE and logs each action (never a secret) beside it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

HELPER = '''#!{python}
import json, os, sys
from pathlib import Path
store = Path(os.environ["LBTEST_HELPER_STORE"])
data = json.loads(store.read_text()) if store.exists() else {{}}
action = sys.argv[1]
text = sys.stdin.read()
with open(str(store) + ".log", "a") as log:
    log.write(action + " " + (json.loads(text)["ServerURL"] if action == "store" else text.strip()) + "\\n")
if action == "get":
    entry = data.get(text.strip())
    if entry is None:
        print("credentials not found in native keychain")
        sys.exit(1)
    print(json.dumps({{"ServerURL": text.strip(), "Username": entry[0], "Secret": entry[1]}}))
elif action == "store":
    req = json.loads(text)
    data[req["ServerURL"]] = [req["Username"], req["Secret"]]
    store.write_text(json.dumps(data))
elif action == "erase":
    if data.pop(text.strip(), None) is None:
        print("credentials not found in native keychain")
        sys.exit(1)
    store.write_text(json.dumps(data))
else:
    sys.exit(2)
'''


def install_helper(bin_dir: Path, name: str = "lbtest") -> Path:
    """`docker-credential-<name>` in `bin_dir` (put it on PATH); returns its path."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / f"docker-credential-{name}"
    path.write_text(HELPER.format(python=sys.executable))
    path.chmod(0o755)
    return path


def helper_store(store: Path) -> dict[str, list[str]]:
    return json.loads(store.read_text()) if store.exists() else {}


def helper_log(store: Path) -> list[str]:
    log = Path(str(store) + ".log")
    return log.read_text().splitlines() if log.exists() else []

