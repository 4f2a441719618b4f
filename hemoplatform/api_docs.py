"""A self-hosted API reference at /api/docs/, rendered on the server from the OpenAPI schema.

Swagger UI and Redoc load their JavaScript from a CDN unless drf-spectacular-sidecar is installed; clinical sites
often block outside hosts, so this page needs nothing but Django: every operation with its parameters, request
body and responses, plus links to the raw schema (/api/schema/, YAML; ?format=json for JSON).
"""

from __future__ import annotations

import json
from typing import Any

from django.shortcuts import render
from django.views import View
from drf_spectacular.generators import SchemaGenerator

METHODS = ("get", "post", "put", "patch", "delete")


def _ref_name(schema: dict[str, Any] | None) -> str:
    if not schema:
        return ""
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[-1]
    if schema.get("type") == "array":
        return f"array of {_ref_name(schema.get('items')) or schema.get('items', {}).get('type', 'items')}"
    return schema.get("type", "object")


def _operations(schema: dict[str, Any]) -> list[dict[str, Any]]:
    operations = []
    for path, item in schema.get("paths", {}).items():
        for method in METHODS:
            op = item.get(method)
            if op is None:
                continue
            body = op.get("requestBody", {}).get("content", {})
            operations.append(
                {
                    "id": op.get("operationId", ""),
                    "method": method.upper(),
                    "path": path,
                    "tag": (op.get("tags") or ["api"])[0],
                    "summary": op.get("summary", ""),
                    "description": op.get("description", ""),
                    "public": {} in op.get("security", [{}]) or not op.get("security"),
                    "parameters": [
                        {
                            "name": p["name"],
                            "in": p["in"],
                            "required": p.get("required", False),
                            "type": _ref_name(p.get("schema")),
                            "description": p.get("description", ""),
                        }
                        for p in op.get("parameters", [])
                    ],
                    "body": [{"media_type": mt, "schema": _ref_name(c.get("schema"))} for mt, c in body.items()],
                    "responses": [
                        {
                            "code": code,
                            "description": r.get("description", ""),
                            "schema": ", ".join(
                                f"{mt}: {_ref_name(c.get('schema'))}" for mt, c in r.get("content", {}).items()
                            ),
                        }
                        for code, r in op.get("responses", {}).items()
                    ],
                }
            )
    return operations


class ApiDocsView(View):
    """Public, like the schema: it describes the API and shows no one's data."""

    def get(self, request):
        schema = SchemaGenerator().get_schema(request=None, public=True)
        components = {
            name: json.dumps(component, indent=1, sort_keys=True)
            for name, component in sorted(schema.get("components", {}).get("schemas", {}).items())
        }
        return render(
            request,
            "api/docs.html",
            {
                "info": schema.get("info", {}),
                "operations": _operations(schema),
                "components": components,
            },
        )
