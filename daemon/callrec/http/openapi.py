"""The OpenAPI 3.1 description of /api, served at /api/openapi.json.

A test checks that every /api route of the application is described here and nothing else.
The recording's schema is derived from its one definition (``callrec.recording.facts``).
"""

from __future__ import annotations

from typing import Any

from callrec import __version__
from callrec.access.policy import SORT_KEYS
from callrec.http.calls import OPENAPI_PATHS as _CALLS
from callrec.recording import facts


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ref("Error")}}}


def _json(schema: dict[str, Any], description: str = "OK") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "format": "uuid"}}
_TIME = {"type": "string", "format": "date-time", "description": "ISO 8601; without an offset: server time"}
_REFUSED = {
    "401": _error("No valid token."),
    "403": _error("The role may not do this (says nothing about any one recording)."),
}
_NOT_FOUND = {"404": _error("No such recording within the caller's reach (also when it exists).")}
_DPO_ONLY = "Role dpo only."


def _query(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _retention_op(summary: str, props: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "description": _DPO_ONLY,
            "parameters": [_ID],
            "requestBody": _body({"type": "object", "properties": props, "required": required}),
            "responses": {"200": _json(_ref("Recording")), **_REFUSED, **_NOT_FOUND},
        }
    }


_REASON = {"reason": {"type": "string", "maxLength": 300}}

# What any operation may answer, whatever it is (docs/api.md#errors).
_ANY = {
    "400": _error("A parameter or field is unusable (a control character in any of them, too)."),
    "429": _error("Too many refused requests from this client; see Retry-After."),
    "503": _error("The audit row or the database is unavailable; nothing happened. Try again."),
}

DOCUMENT: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "callrec access API",
        "version": __version__,
        "description": "Access to call recordings under GDPR. Every request, refused ones included, "
        "writes one row to the audit log. Serve it behind a TLS reverse proxy.",
    },
    "security": [{"bearer": []}, {"cookie": []}],
    "paths": {
        "/api/openapi.json": {
            "get": {
                "summary": "This description.",
                "security": [],
                "responses": {"200": _json({"type": "object"})},
            }
        },
        "/api/whoami": {
            "get": {
                "summary": "The signed-in user, role and permitted actions.",
                "responses": {"200": _json({"type": "object"}), **_REFUSED},
            }
        },
        "/api/recordings": {
            "get": {
                "summary": "Search recordings within the caller's reach, newest first.",
                "parameters": [
                    _query("from", _TIME, "started at or after"),
                    _query("to", _TIME, "started before"),
                    _query("register", {"type": "string"}),
                    _query(
                        "agent",
                        {"type": "string", "maxLength": 128},
                        "agent id (CALLREC_AGENT), or a user's login or display name; not for admin",
                    ),
                    _query("service_number", {"type": "string", "maxLength": 64}),
                    _query("direction", {"type": "string", "enum": ["inbound", "outbound"]}),
                    _query("min_seconds", {"type": "number", "minimum": 0, "maximum": 1e7}),
                    _query("max_seconds", {"type": "number", "minimum": 0, "maximum": 1e7}),
                    _query(
                        "number",
                        {"type": "string", "pattern": "^[0-9+*]{1,32}$"},
                        "a part of the masked customer number; not for admin",
                    ),
                    _query("on_hold", {"type": "string", "enum": ["true", "false"]}),
                    _query("sort", {"type": "string", "enum": list(SORT_KEYS), "default": "-started"}),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}),
                    _query("offset", {"type": "integer", "minimum": 0, "default": 0}),
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "recordings": {"type": "array", "items": _ref("Recording")},
                                "total": {"type": "integer", "description": "matches across all pages"},
                                "limit": {"type": "integer"},
                                "offset": {"type": "integer"},
                                "sort": {"type": "string"},
                            },
                        }
                    ),
                    "400": _error("A parameter is unusable."),
                    **_REFUSED,
                },
            }
        },
        "/api/recordings/{id}": {
            "get": {
                "summary": "One recording's metadata.",
                "parameters": [_ID],
                "responses": {"200": _json(_ref("Recording")), **_REFUSED, **_NOT_FOUND},
            }
        },
        "/api/recordings/{id}/audio": {
            "get": {
                "summary": "The audio, with HTTP Range (RFC 9110) so a player can seek.",
                "description": "Not for admin. One byte range per request; several get the whole file.",
                "parameters": [
                    _ID,
                    {
                        "name": "Range",
                        "in": "header",
                        "schema": {"type": "string", "example": "bytes=0-1023"},
                    },
                    _query(
                        "download",
                        {"type": "string", "enum": ["1"]},
                        "as an attachment (audited as download)",
                    ),
                ],
                "responses": {
                    "200": {"description": "The whole file.", "content": {"audio/wav": {}}},
                    "206": {
                        "description": "The requested range, with Content-Range.",
                        "content": {"audio/wav": {}},
                    },
                    "416": _error("Unsatisfiable or malformed range; Content-Range: bytes */size."),
                    **_REFUSED,
                    **_NOT_FOUND,
                },
            },
            "head": {
                "summary": "Headers of the audio response.",
                "parameters": [_ID],
                "responses": {
                    "200": {"description": "OK"},
                    "206": {"description": "The requested range's headers."},
                    **_REFUSED,
                    **_NOT_FOUND,
                },
            },
        },
        "/api/recordings/{id}/hold": _retention_op(
            "Put on legal hold: kept past retention until released or until `until`.",
            {**_REASON, "until": _TIME},
            ["reason"],
        ),
        "/api/recordings/{id}/release": _retention_op("Release a legal hold.", _REASON, []),
        "/api/recordings/{id}/erase": {
            "post": {
                "summary": "Erase now (GDPR Art. 17): the row and the audio file.",
                "description": _DPO_ONLY,
                "parameters": [_ID],
                "requestBody": _body({"type": "object", "properties": _REASON, "required": ["reason"]}),
                "responses": {
                    "200": _json({"type": "object"}),
                    "409": _error("On legal hold."),
                    **_REFUSED,
                    **_NOT_FOUND,
                },
            }
        },
        "/api/dsar/search": {
            "post": {
                "summary": "Data-subject request: find calls by full number and approximate time.",
                "description": _DPO_ONLY + " The number is masked as at recording time; with "
                "[privacy] number_hmac_key_file the keyed HMAC tells apart numbers that share a mask.",
                "requestBody": _body(
                    {
                        "type": "object",
                        "required": ["number", "at", "case_reference"],
                        "properties": {
                            "number": {"type": "string", "example": "+358 40 123 4567"},
                            "case_reference": {"type": "string", "maxLength": 200},
                            "at": _TIME,
                            "window_minutes": {
                                "type": "integer",
                                "minimum": 0,
                                "maximum": 10080,
                                "default": 30,
                            },
                        },
                    }
                ),
                "responses": {
                    "200": _json({"type": "object"}),
                    "400": _error("Unusable number, time or case reference."),
                    "429": _error("[privacy] dsar_searches_per_hour reached; see Retry-After."),
                    **_REFUSED,
                },
            }
        },
        "/api/exports": {
            "post": {
                "summary": "Export a zip (audio, metadata.json, SHA256SUMS); recorded as a disclosure.",
                "description": _DPO_ONLY,
                "requestBody": _body(
                    {
                        "type": "object",
                        "required": ["recording_ids", "recipient", "legal_basis", "case_reference"],
                        "properties": {
                            "recording_ids": {"type": "array", "items": {"type": "string", "format": "uuid"}},
                            "recipient": {"type": "string", "maxLength": 300},
                            "legal_basis": {"type": "string", "maxLength": 300},
                            "case_reference": {"type": "string", "maxLength": 100},
                            "employee_identity": {
                                "type": "string",
                                "enum": ["included", "withheld"],
                                "default": "included",
                                "description": "withheld: no agent's id, login or name (nor the exporter's)"
                                " in metadata.json, which says so (GDPR Art. 15(4))",
                            },
                        },
                    }
                ),
                "responses": {
                    "200": {"description": "The bundle.", "content": {"application/zip": {}}},
                    "409": _error("An audio file is missing or does not match its sha256."),
                    **_REFUSED,
                    **_NOT_FOUND,
                },
            }
        },
        "/api/audit": {
            "get": {
                "summary": "Read the audit log, newest first.",
                "description": _DPO_ONLY,
                "parameters": [
                    _query("from", _TIME),
                    _query("to", _TIME),
                    _query("user", {"type": "string"}),
                    _query("action", {"type": "string"}),
                    _query(
                        "recording_id", {"type": "string", "format": "uuid"}, "also finds exports carrying it"
                    ),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}),
                ],
                "responses": {"200": _json({"type": "object"}), **_REFUSED},
            }
        },
        **_CALLS,
    },
    "components": {
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer", "description": "`callrec users token NAME`"},
            "cookie": {
                "type": "apiKey",
                "in": "cookie",
                "name": "callrec_session",
                "description": "a web session, set by the page's sign-in (never the token)",
            },
        },
        "schemas": {
            "Error": {
                "type": "object",
                "properties": {"error": {"type": "string"}, "message": {"type": "string"}},
            },
            "Recording": facts.json_schema(),
        },
    },
}

for _ops in DOCUMENT["paths"].values():
    for _op in _ops.values():
        _op["responses"] = _ANY | _op["responses"]
