#!/usr/bin/env python3
"""Checks answers of the gateway's admin API against its own OpenAPI document.

Usage: validate_openapi.py DOC.json ANSWERS.json

ANSWERS.json is a list of {"path", "method", "status", "body"} or {"schema", "body"}: "path" is the document's path
template (e.g. /api/v1/names/{name}), "body" the JSON the gateway answered. Each body is
validated (JSON Schema 2020-12, as OpenAPI 3.1 uses) against the schema the document gives for
that path, method, status and application/json — or, with "schema", against that component
(e.g. the `data` of an event stream message against "Event"). Exit 0 when all match; 1 with every mismatch
printed otherwise; 2 on usage errors. Used by tests/tests/admin_openapi.rs.
"""
import json
import sys

try:
    import jsonschema
except ImportError:
    sys.exit("python3 module jsonschema missing: run scripts/prerequisites")


def schema_for(doc, a):
    """Where the answer is from, and the schema it must match (None when the document has none)."""
    schemas = doc.get("components", {}).get("schemas", {})
    if "schema" in a:
        where = f"components/schemas/{a['schema']}"
        return where, ({"$ref": f"#/components/schemas/{a['schema']}"} if a["schema"] in schemas else None)
    where = f"{a['method'].upper()} {a['path']} {a['status']}"
    try:
        op = doc["paths"][a["path"]][a["method"].lower()]
        return where, op["responses"][str(a["status"])]["content"]["application/json"]["schema"]
    except KeyError:
        return where, None


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(sys.argv[1]) as f:
        doc = json.load(f)
    with open(sys.argv[2]) as f:
        answers = json.load(f)
    failures = 0
    for a in answers:
        where, schema = schema_for(doc, a)
        if schema is None:
            print(f"{where}: the document has no JSON schema for this answer")
            failures += 1
            continue
        # The schema's $refs point into the document: validate with the components at the root.
        root = {"components": doc.get("components", {}), **schema}
        validator = jsonschema.Draft202012Validator(root)
        errors = sorted(validator.iter_errors(a["body"]), key=lambda e: list(e.path))
        for e in errors:
            print(f"{where}: {'/'.join(map(str, e.path)) or '(root)'}: {e.message}")
        failures += len(errors)
        if not errors:
            print(f"{where}: ok")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
