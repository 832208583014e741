"""Writes charts/tierscale/values.schema.json (JSON Schema draft-07, which helm 3 checks values with).

The schema lives here as Python so that shared pieces (EnvVar lists, label maps, resources) are
written once; `make chart-schema` regenerates the JSON and a test checks that it is up to date.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "charts" / "tierscale" / "values.schema.json"

STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
PORT = {"type": "integer", "minimum": 1, "maximum": 65535}
K8S_NAME = {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63}
QUANTITY = {"type": ["string", "number"], "pattern": "^[0-9.]+([eE][-+]?[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?$"}
RESOURCES = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "requests": {"type": "object", "additionalProperties": QUANTITY},
        "limits": {"type": "object", "additionalProperties": QUANTITY},
    },
}
ENV_LIST = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["name"],
        "properties": {"name": {"type": "string", "minLength": 1}, "value": {"type": "string"}},
    },
}
PROBE = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        key: {"type": "integer", "minimum": minimum}
        for key, minimum in (
            ("initialDelaySeconds", 0),
            ("periodSeconds", 1),
            ("timeoutSeconds", 1),
            ("failureThreshold", 1),
            ("successThreshold", 1),
        )
    },
}
DURATION = {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"}


def schema() -> dict:
    return {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "title": "Values of the tierscale chart",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            # helm passes `global` to every chart when this one is a dependency.
            "global": {"type": "object"},
            "image": {
                "type": "object",
                "additionalProperties": False,
                "required": ["repository"],
                "properties": {
                    "repository": {"type": "string", "minLength": 1},
                    "tag": {"type": "string"},
                    "pullPolicy": {"type": "string", "enum": ["Always", "IfNotPresent", "Never"]},
                },
            },
            "imagePullSecrets": {
                "type": "array",
                "items": {"type": "object", "required": ["name"], "properties": {"name": K8S_NAME}},
            },
            "nameOverride": {"type": "string", "maxLength": 52},
            "fullnameOverride": {"type": "string", "maxLength": 52},
            "watchNamespaces": {"type": "array", "items": K8S_NAME, "uniqueItems": True},
            "replicaCount": {"type": "integer", "minimum": 0},
            "serviceAccount": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "create": {"type": "boolean"},
                    "name": {"type": "string"},
                    "annotations": STRING_MAP,
                },
            },
            "rbac": {
                "type": "object",
                "additionalProperties": False,
                "properties": {"create": {"type": "boolean"}},
            },
            "verbose": {"type": "boolean"},
            "metricsPort": PORT,
            "healthPort": PORT,
            "metrics": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "podAnnotations": {"type": "boolean"},
                    "service": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {"enabled": {"type": "boolean"}},
                    },
                    "serviceMonitor": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "enabled": {"type": "boolean"},
                            "interval": DURATION,
                            "labels": STRING_MAP,
                        },
                    },
                },
            },
            "livenessProbe": PROBE,
            "readinessProbe": PROBE,
            "resources": RESOURCES,
            "podSecurityContext": {"type": "object"},
            "securityContext": {"type": "object"},
            "podLabels": STRING_MAP,
            "podAnnotations": STRING_MAP,
            "extraEnv": ENV_LIST,
            "nodeSelector": STRING_MAP,
            "tolerations": {"type": "array", "items": {"type": "object"}},
            "affinity": {"type": "object"},
            "priorityClassName": {"type": "string"},
            "cleanup": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "onUninstall": {"type": "boolean"},
                    "timeoutSeconds": {"type": "integer", "minimum": 2},
                    "extraEnv": ENV_LIST,
                    "resources": RESOURCES,
                },
            },
            "grafanaDashboard": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "enabled": {"type": "boolean"},
                    "labels": STRING_MAP,
                    "annotations": STRING_MAP,
                },
            },
        },
    }


def render() -> str:
    return json.dumps(schema(), indent=2) + "\n"


def main() -> None:
    if sys.argv[1:] == ["--check"]:
        if SCHEMA_PATH.read_text() != render():
            raise SystemExit(f"{SCHEMA_PATH} is out of date: run `make chart-schema`")
        return
    SCHEMA_PATH.write_text(render())


if __name__ == "__main__":
    main()
