"""`compose config` output: the resolved model as YAML (block style, docker compose's layout) or JSON.

Strings are written as docker compose's YAML encoder writes them: multi-line ones as literal blocks,
ones YAML would read as something else (`"80"`, `"3.12"`, `"true"`, and YAML 1.1's `"no"`, `"on"`
and base-60 `"1:30"`) double-quoted, the rest plain where YAML allows it.
"""

from __future__ import annotations

import io
import json
import re
from typing import Any

_OLD_BOOLS = {"y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "on", "On", "ON", "off", "Off", "OFF"}
_BASE_60 = re.compile(r"^[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+(?:\.[0-9_]*)?$")


def to_yaml(model: dict[str, Any]) -> str:
    from ruamel.yaml import YAML
    from ruamel.yaml.nodes import ScalarNode
    from ruamel.yaml.representer import SafeRepresenter

    yaml = YAML(typ="safe", pure=True)
    yaml.default_flow_style = False
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 1 << 20
    resolver = yaml.resolver

    def represent_str(representer: SafeRepresenter, value: str) -> ScalarNode:
        if "\n" in value:
            return representer.represent_scalar("tag:yaml.org,2002:str", value, style="|")
        plain_tag = resolver.resolve(ScalarNode, value, (True, False))
        needs_quotes = (plain_tag != "tag:yaml.org,2002:str" or value in _OLD_BOOLS or bool(_BASE_60.match(value))
                        or value == "" or value != value.strip())
        return representer.represent_scalar("tag:yaml.org,2002:str", value, style='"' if needs_quotes else None)

    yaml.representer.add_representer(str, represent_str)
    yaml.representer.sort_base_mapping_type_on_output = False
    out = io.StringIO()
    yaml.dump(model, out)
    return out.getvalue()


def to_json(model: dict[str, Any]) -> str:
    return json.dumps(model, indent=2, ensure_ascii=False) + "\n"
