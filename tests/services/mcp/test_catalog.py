"""How tools are gathered from descriptors and described from a target's OpenAPI (no server needed)."""

from __future__ import annotations

import jsonschema  # type: ignore[import-untyped]
import pytest

from coder.services.mcp.catalog import Offered, SchemaUnavailable, input_schema, offered
from coder.shared.target import Descriptor, Tool

DOCUMENT = {
    "paths": {
        "/v1/notes/{path}": {
            "put": {
                "parameters": [
                    {"name": "path", "in": "path", "required": True, "schema": {"type": "string"}},
                    {
                        "name": "draft",
                        "in": "query",
                        "schema": {"type": "boolean"},
                        "description": "Keep hidden",
                    },
                    {"name": "x-trace", "in": "header", "schema": {"type": "string"}},
                ],
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/NoteWrite"}}},
                },
            }
        }
    },
    "components": {
        "schemas": {
            "NoteWrite": {
                "type": "object",
                "properties": {"tags": {"type": "array", "items": {"$ref": "#/components/schemas/Tag"}}},
                "required": ["tags"],
            },
            "Tag": {"type": "string", "enum": ["a", "b"]},
            "Unused": {"type": "integer"},
        }
    },
}


def test_the_schema_is_the_operations_parameters_and_body_standing_alone() -> None:
    schema = input_schema(DOCUMENT, "PUT", "/v1/notes/{path}")
    assert set(schema["properties"]) == {"path", "draft", "body"}  # headers are not arguments
    assert schema["required"] == ["path", "body"]
    assert schema["properties"]["draft"]["description"] == "Keep hidden"
    assert set(schema["$defs"]) == {"NoteWrite", "Tag"}  # referenced ones, transitively
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate({"path": "a/b", "body": {"tags": ["a"]}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"path": "a/b", "body": {"tags": ["c"]}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"path": "a/b", "body": {"tags": []}, "extra": 1}, schema)


def test_an_operation_the_document_lacks_is_reported() -> None:
    with pytest.raises(SchemaUnavailable):
        input_schema(DOCUMENT, "DELETE", "/v1/notes/{path}")


def _descriptor(name: str, *tools: Tool) -> Descriptor:
    return Descriptor(name=name, port=1, title=name, package=f"coder.services.{name}", tools=tools)


def test_tools_are_gathered_by_name_with_their_target() -> None:
    tool = Tool(name="notes_write", operation="PUT /v1/notes/{path:path}", description="Write a note")
    gathered = offered({"notes": _descriptor("notes", tool), "other": _descriptor("other")})
    assert gathered == {"notes_write": Offered("notes", tool)}
    # The router's converter is not part of the OpenAPI path.
    assert (gathered["notes_write"].method, gathered["notes_write"].path) == ("PUT", "/v1/notes/{path}")


def test_tool_names_are_the_targets_and_unique() -> None:
    foreign = Tool(name="secrets_list", operation="GET /v1/x", description="x")
    with pytest.raises(ValueError, match="must be named notes_<verb>"):
        offered({"notes": _descriptor("notes", foreign)})
    twice = Tool(name="notes_list", operation="GET /v1/x", description="x")
    with pytest.raises(ValueError, match="declared by notes and notes"):
        offered({"notes": _descriptor("notes", twice, twice)})
