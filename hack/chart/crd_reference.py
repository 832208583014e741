"""Writes docs/reference.md, the RecommenderDeployment field reference, from the CRD's schema.

    python hack/chart/crd_reference.py [--check]

Every field of spec and status gets one row: its path, type, default, the constraints the API server
enforces (range, enum, pattern, length, item counts) and its description. The CEL rules follow with
their messages, then the columns of `kubectl get recdeploy`. With --check nothing is written: the
command fails when docs/reference.md differs from what it would write.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CRD_PATH = REPO / "manifests" / "crd" / "recommenderdeployments.tierscale.io.yaml"
REFERENCE_PATH = REPO / "docs" / "reference.md"


def _type(schema: dict[str, Any]) -> str:
    kind = schema.get("type", "any")
    if kind == "array":
        return f"[]{_type(schema.get('items', {}))}"
    if kind == "object" and "additionalProperties" in schema and "properties" not in schema:
        return f"map[string]{_type(schema['additionalProperties'])}"
    if schema.get("x-kubernetes-preserve-unknown-fields"):
        return "object (free-form)"
    if schema.get("nullable"):
        return f"{kind} or null"
    return kind


def _code(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return f"`{text}`"


def _constraints(schema: dict[str, Any]) -> str:
    parts = []
    if "minimum" in schema:
        parts.append(("> " if schema.get("exclusiveMinimum") else "≥ ") + str(schema["minimum"]))
    if "maximum" in schema:
        parts.append(("< " if schema.get("exclusiveMaximum") else "≤ ") + str(schema["maximum"]))
    if "enum" in schema:
        parts.append("one of " + ", ".join(_code(v) for v in schema["enum"]))
    if "pattern" in schema:
        parts.append("matches " + _code(schema["pattern"]))
    if "minLength" in schema:
        parts.append(f"length ≥ {schema['minLength']}")
    if "maxLength" in schema:
        parts.append(f"length ≤ {schema['maxLength']}")
    if "minItems" in schema:
        parts.append(f"≥ {schema['minItems']} items")
    if "maxItems" in schema:
        parts.append(f"≤ {schema['maxItems']} items")
    items = schema.get("items", {})
    if schema.get("type") == "array" and items.get("type") != "object":
        inner = _constraints(items)
        if inner:
            parts.append(f"each item {inner}")
    return "; ".join(parts)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _rows(schema: dict[str, Any], path: str, required: set[str]) -> list[list[str]]:
    rows = []
    for name, child in schema.get("properties", {}).items():
        child_path = f"{path}.{name}"
        description = child.get("description", "")
        if name in required:
            description = ("**Required.** " + description).strip()
        default = _code(child["default"]) if "default" in child else ""
        rows.append([f"`{child_path}`", _type(child), default, _constraints(child), description])

        if child.get("type") == "object" and "properties" in child:
            rows.extend(_rows(child, child_path, set(child.get("required", []))))
        items = child.get("items", {})
        if child.get("type") == "array" and "properties" in items:
            rows.extend(_rows(items, f"{child_path}[]", set(items.get("required", []))))
    return rows


def _table(rows: list[list[str]]) -> list[str]:
    lines = ["| field | type | default | constraints | description |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def render() -> str:
    crd = yaml.safe_load(CRD_PATH.read_text())
    version = crd["spec"]["versions"][0]
    root = version["schema"]["openAPIV3Schema"]
    spec, status = root["properties"]["spec"], root["properties"]["status"]
    names = crd["spec"]["names"]

    lines = [
        "# RecommenderDeployment reference",
        "",
        "<!-- Generated from manifests/crd/recommenderdeployments.tierscale.io.yaml by `make docs-reference`;"
        " edit the CRD, not this file. -->",
        "",
        f"`apiVersion: {crd['spec']['group']}/{version['name']}`, `kind: {names['kind']}`, namespaced, "
        f"short name `{', '.join(names.get('shortNames', []))}`. The API server applies the defaults and rejects "
        "values that break a constraint or a rule below; the operator reports what the schema cannot "
        "check (for example a query timeout longer than the interval) as `Ready=False` with reason "
        "`InvalidSpec` and a Warning Event (see [troubleshooting](troubleshooting.md)).",
        "",
        "Durations are strings such as `30s`, `2m`, `1h`.",
        "",
        "## spec",
        "",
        *_table(_rows(spec, "spec", set(spec.get("required", [])))),
        "",
        "## Rules across fields",
        "",
        "Checked by the API server (CEL) on every create and update:",
        "",
        "| rule | message | reported on |",
        "|---|---|---|",
    ]
    for rule in spec.get("x-kubernetes-validations", []):
        lines.append(f"| {_cell(_code(rule['rule']))} | {_cell(rule['message'])} | `spec{rule.get('fieldPath', '')}` |")
    lines += [
        "",
        "## status",
        "",
        "Written by the operator after every control step; never edit it.",
        "",
        *_table(_rows(status, "status", set())),
        "",
        "## Columns of `kubectl get recdeploy`",
        "",
        "| column | from | shown |",
        "|---|---|---|",
    ]
    for column in version.get("additionalPrinterColumns", []):
        shown = "with `-o wide`" if column.get("priority", 0) > 0 else "always"
        lines.append(f"| {column['name']} | `{column['jsonPath']}` | {shown} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    if sys.argv[1:] == ["--check"]:
        if not REFERENCE_PATH.is_file() or REFERENCE_PATH.read_text() != render():
            raise SystemExit(f"{REFERENCE_PATH} is out of date: run `make docs-reference`")
        return
    REFERENCE_PATH.write_text(render())


if __name__ == "__main__":
    main()
