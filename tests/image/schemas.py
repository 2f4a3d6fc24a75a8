"""JSON schemas of the documents layerbuild writes, written here from the specifications' text:
the OCI image spec (v1.1: descriptor.md, manifest.md, image-index.md, config.md) and Docker's image
manifest V2 schema 2 (manifest and manifest list). No PyPI package ships them; these follow the
prose, MUST by MUST, and are checked with `jsonschema` (Draft 2020-12)."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema

# RFC 6838 section 4.2: type "/" subtype, each a restricted name of 1 to 127 characters.
_NAME = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
MEDIA_TYPE = {"type": "string", "pattern": f"^{_NAME}/{_NAME}$"}
# descriptor.md, "Digests": algorithm ":" encoded; sha256 is 64 lowercase hex digits.
DIGEST = {"type": "string", "pattern": r"^[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$"}
SHA256 = {"type": "string", "pattern": r"^sha256:[a-f0-9]{64}$"}
INT64 = {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}
ANNOTATIONS = {"type": "object", "additionalProperties": {"type": "string"}}
STRINGS = {"type": "array", "items": {"type": "string"}}

# image-index.md, "platform": architecture and os REQUIRED, the rest OPTIONAL.
PLATFORM = {
    "type": "object",
    "required": ["architecture", "os"],
    "properties": {
        "architecture": {"type": "string"},
        "os": {"type": "string"},
        "os.version": {"type": "string"},
        "os.features": STRINGS,
        "variant": {"type": "string"},
        "features": STRINGS,
    },
}

# descriptor.md: mediaType, digest, size REQUIRED; urls, annotations, data, artifactType OPTIONAL.
DESCRIPTOR = {
    "type": "object",
    "required": ["mediaType", "digest", "size"],
    "properties": {
        "mediaType": MEDIA_TYPE,
        "digest": DIGEST,
        "size": INT64,
        "urls": {"type": "array", "items": {"type": "string", "format": "uri"}},
        "annotations": ANNOTATIONS,
        "data": {"type": "string", "contentEncoding": "base64"},
        "artifactType": MEDIA_TYPE,
        "platform": PLATFORM,
    },
}

OCI_MANIFEST_TYPE = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG_TYPE = "application/vnd.oci.image.config.v1+json"

# manifest.md: schemaVersion MUST be 2; mediaType SHOULD be used and MUST then be the manifest's;
# config and layers REQUIRED; layers' entries are descriptors (base layer first).
OCI_MANIFEST = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["schemaVersion", "config", "layers"],
    "properties": {
        "schemaVersion": {"const": 2},
        "mediaType": {"const": OCI_MANIFEST_TYPE},
        "artifactType": MEDIA_TYPE,
        "config": DESCRIPTOR,
        "layers": {"type": "array", "items": DESCRIPTOR},
        "subject": DESCRIPTOR,
        "annotations": ANNOTATIONS,
    },
}

# image-index.md: schemaVersion 2, manifests REQUIRED (descriptors, with an optional platform).
OCI_INDEX = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["schemaVersion", "manifests"],
    "properties": {
        "schemaVersion": {"const": 2},
        "mediaType": {"const": OCI_INDEX_TYPE},
        "artifactType": MEDIA_TYPE,
        "manifests": {"type": "array", "items": DESCRIPTOR},
        "subject": DESCRIPTOR,
        "annotations": ANNOTATIONS,
    },
}

# config.md: architecture, os, rootfs REQUIRED; rootfs.type MUST be "layers"; `created` is RFC 3339.
OCI_CONFIG = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["architecture", "os", "rootfs"],
    "properties": {
        "created": {"type": "string", "format": "date-time"},
        "author": {"type": "string"},
        "architecture": {"type": "string"},
        "os": {"type": "string"},
        "os.version": {"type": "string"},
        "os.features": STRINGS,
        "variant": {"type": "string"},
        "config": {
            "type": "object",
            "properties": {
                "User": {"type": "string"},
                "ExposedPorts": {"type": "object", "additionalProperties": {"type": "object"},
                                 "propertyNames": {"pattern": r"^\d+(-\d+)?(/(tcp|udp|sctp))?$"}},
                "Env": {"type": "array", "items": {"type": "string", "pattern": "^[^=]+=.*$"}},
                "Entrypoint": STRINGS,
                "Cmd": STRINGS,
                "Volumes": {"type": "object", "additionalProperties": {"type": "object"}},
                "WorkingDir": {"type": "string"},
                "Labels": ANNOTATIONS,
                "StopSignal": {"type": "string"},
                "ArgsEscaped": {"type": "boolean"},
            },
        },
        "rootfs": {
            "type": "object",
            "required": ["type", "diff_ids"],
            "properties": {"type": {"const": "layers"}, "diff_ids": {"type": "array", "items": SHA256}},
        },
        "history": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "created": {"type": "string", "format": "date-time"},
                    "author": {"type": "string"},
                    "created_by": {"type": "string"},
                    "comment": {"type": "string"},
                    "empty_layer": {"type": "boolean"},
                },
            },
        },
    },
}

DOCKER_MANIFEST_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST_TYPE = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG_TYPE = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_TYPES = [
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
]
_DOCKER_DESC = {"type": "object", "required": ["mediaType", "size", "digest"],
                "properties": {"size": INT64, "digest": SHA256, "urls": STRINGS}}

# Image Manifest Version 2, Schema 2: schemaVersion 2, mediaType, config (the image config type),
# layers (base first; the gzip tar types, or the foreign one).
DOCKER_MANIFEST = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["schemaVersion", "mediaType", "config", "layers"],
    "properties": {
        "schemaVersion": {"const": 2},
        "mediaType": {"const": DOCKER_MANIFEST_TYPE},
        "config": {**_DOCKER_DESC, "properties": {**_DOCKER_DESC["properties"],
                                                  "mediaType": {"const": DOCKER_CONFIG_TYPE}}},
        "layers": {"type": "array", "items": {
            **_DOCKER_DESC, "properties": {**_DOCKER_DESC["properties"], "mediaType": {"enum": DOCKER_LAYER_TYPES}}}},
    },
}

# Manifest list: schemaVersion 2, mediaType, manifests with a platform (architecture and os REQUIRED).
DOCKER_LIST = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["schemaVersion", "mediaType", "manifests"],
    "properties": {
        "schemaVersion": {"const": 2},
        "mediaType": {"const": DOCKER_LIST_TYPE},
        "manifests": {"type": "array", "items": {
            **_DOCKER_DESC, "required": ["mediaType", "size", "digest", "platform"],
            "properties": {**_DOCKER_DESC["properties"], "mediaType": {"const": DOCKER_MANIFEST_TYPE},
                           "platform": PLATFORM}}},
    },
}

# `docker save`'s manifest.json (moby image/tarexport): a list of {Config, RepoTags, Layers}.
DOCKER_SAVE_MANIFEST = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "array",
    "items": {"type": "object", "required": ["Config", "Layers"], "properties": {
        "Config": {"type": "string"}, "RepoTags": {"type": ["array", "null"], "items": {"type": "string"}},
        "Layers": STRINGS}},
}

SCHEMAS = {
    OCI_MANIFEST_TYPE: OCI_MANIFEST,
    OCI_INDEX_TYPE: OCI_INDEX,
    OCI_CONFIG_TYPE: OCI_CONFIG,
    DOCKER_MANIFEST_TYPE: DOCKER_MANIFEST,
    DOCKER_LIST_TYPE: DOCKER_LIST,
    DOCKER_CONFIG_TYPE: OCI_CONFIG,  # the OCI config is Docker's, written down
    "docker-save-manifest": DOCKER_SAVE_MANIFEST,
}

# RFC 3339 section 5.6 date-time (jsonschema checks it only with an extra package; this is the grammar).
_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")
_CHECKER = jsonschema.FormatChecker(formats=())


@_CHECKER.checks("date-time")
def _date_time(value: object) -> bool:
    return not isinstance(value, str) or bool(_DATE_TIME.match(value))


def validate(raw: bytes, media_type: str) -> Any:
    """The document `raw` parsed, after checking it against the schema of `media_type`
    (jsonschema.ValidationError when it breaks a rule)."""
    doc = json.loads(raw)
    for schema in [OCI_MANIFEST, DOCKER_MANIFEST, OCI_INDEX, DOCKER_LIST, OCI_CONFIG, DOCKER_SAVE_MANIFEST]:
        jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(SCHEMAS[media_type], format_checker=_CHECKER).validate(doc)
    return doc
