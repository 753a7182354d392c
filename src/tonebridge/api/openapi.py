"""The OpenAPI 3.0 document of every HTTP route Tonebridge serves, at `/tonebridge/v1/openapi.json`.

Written out by hand from shared/spec/sinch-voice-v1.md so that it describes the wire (field names, enums,
limits) exactly; tests run schemathesis against it.
"""

from __future__ import annotations

from typing import Any

DESTINATION = {
    "type": "object",
    "required": ["type", "endpoint"],
    "properties": {
        "type": {"type": "string", "enum": ["number", "username", "sip", "Number", "Username", "Sip"]},
        "endpoint": {"type": "string", "minLength": 1, "maxLength": 256},
    },
}
DTMF_OPTIONS = {
    "type": "object",
    "properties": {
        "mode": {"type": "string", "enum": ["ignore", "forward", "detect"]},
        "maxDigits": {"type": "integer", "minimum": 1, "maximum": 32},
        "timeoutMills": {"type": "integer", "minimum": 100, "maximum": 60000},
        "timoutMills": {"type": "integer", "minimum": 100, "maximum": 60000},
    },
}
MOH = {"type": "string", "enum": ["ring", "music1", "music2", "music3"]}
_NULLABLE_STRING = {"type": "string", "nullable": True}
CALL_LIMIT = {"type": "integer", "minimum": 1, "maximum": 10000}
CALL_RECORD = {
    "type": "object",
    "required": ["callId", "status", "conferences", "callbacks"],
    "properties": {
        "callId": {"type": "string"},
        "applicationKey": _NULLABLE_STRING,
        "direction": {"type": "string", "enum": ["inbound", "outbound"], "nullable": True},
        "from": _NULLABLE_STRING,
        "to": {"type": "object", "nullable": True},
        "domain": _NULLABLE_STRING,
        "status": {"type": "string", "enum": ["ONGOING", "FINAL"]},
        "result": _NULLABLE_STRING,
        "reason": _NULLABLE_STRING,
        "startedAt": _NULLABLE_STRING,
        "answeredAt": _NULLABLE_STRING,
        "endedAt": _NULLABLE_STRING,
        "duration": {"type": "integer", "nullable": True},
        "conferenceId": _NULLABLE_STRING,
        "conferences": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "conferenceId": {"type": "string"},
                    "joinedAt": {"type": "string"},
                    "leftAt": _NULLABLE_STRING,
                    "leftReason": _NULLABLE_STRING,
                },
            },
        },
        "callbacks": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "event": {"type": "string"},
                    "url": {"type": "string"},
                    "attemptedAt": {"type": "string"},
                    "status": {"type": "integer", "nullable": True},
                    "error": _NULLABLE_STRING,
                    "durationMs": {"type": "number"},
                    "stored": {"type": "boolean"},
                },
            },
        },
    },
}
COMMON_CALLOUT = {
    "cli": {"type": "string", "maxLength": 64},
    "dtmf": {"type": "string", "pattern": "^[0-9#*A-Dw]*$", "maxLength": 128},
    "custom": {"type": "string", "maxLength": 1024},
    "locale": {"type": "string", "maxLength": 32},
    "domain": {"type": "string", "enum": ["pstn", "mxp", "PSTN", "MXP"]},
    "enableAce": {"type": "boolean"},
    "enableDice": {"type": "boolean"},
    "enablePie": {"type": "boolean"},
    "maxDuration": {"type": "integer", "minimum": 1, "maximum": 14400},
}
CALLOUT = {
    "type": "object",
    "required": ["method"],
    "properties": {
        "method": {"type": "string", "enum": ["conferenceCallout", "ttsCallout", "customCallout"]},
        "cli": {"type": "string", "maxLength": 64},
        "conferenceCallout": {
            "type": "object",
            "required": ["destination", "conferenceId"],
            "properties": {
                **COMMON_CALLOUT,
                "destination": DESTINATION,
                "conferenceId": {"type": "string", "minLength": 1, "maxLength": 64},
                "conferenceDtmfOptions": DTMF_OPTIONS,
                "greeting": {"type": "string", "maxLength": 600},
                "mohClass": MOH,
            },
        },
        "ttsCallout": {
            "type": "object",
            "required": ["destination"],
            "properties": {
                **COMMON_CALLOUT,
                "destination": DESTINATION,
                "text": {"type": "string", "maxLength": 600},
                "prompts": {"type": "string"},
            },
        },
        "customCallout": {
            "type": "object",
            "required": ["destination"],
            "properties": {
                **COMMON_CALLOUT,
                "destination": DESTINATION,
                "ice": {"type": "string"},
                "ace": {"type": "string"},
                "pie": {"type": "string"},
            },
        },
    },
}
SVAML = {
    "type": "object",
    "properties": {
        "instructions": {
            "type": "array",
            "items": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}},
        },
        "action": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}},
    },
}
ERROR = {
    "type": "object",
    "required": ["errorCode", "message"],
    "properties": {
        "errorCode": {"type": "integer"},
        "message": {"type": "string"},
        "reference": {"type": "string"},
    },
}


def _error_responses(*statuses: int) -> dict[str, Any]:
    return {
        str(s): {"description": "Sinch-style error", "content": {"application/json": {"schema": ERROR}}}
        for s in statuses
    }


def _json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _ok(schema: dict[str, Any] | None = None) -> dict[str, Any]:
    if schema is None:
        return {"200": {"description": "done (empty body)"}}
    return {"200": {"description": "OK", "content": {"application/json": {"schema": schema}}}}


def _query_param(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "query", "description": description, "schema": schema or {"type": "string"}}


def _path_param(name: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema or {"type": "string"}}


def document() -> dict[str, Any]:
    errors = _error_responses(400, 401, 404, 413)
    participant = {
        "type": "object",
        "required": ["cli", "id", "duration", "muted", "onhold"],
        "additionalProperties": False,
        "properties": {
            "cli": {"type": "string"},
            "id": {"type": "string"},
            "duration": {"type": "integer"},
            "muted": {"type": "boolean"},
            "onhold": {"type": "boolean"},
        },
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Tonebridge",
            "version": "1",
            "description": "The Sinch Voice API v1 surface Tonebridge keeps, and its own routes.",
        },
        "components": {
            "securitySchemes": {
                "application": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "Application {key}:{signature} with x-timestamp (Sinch signing)",
                },
                "basic": {"type": "http", "scheme": "basic"},
            }
        },
        "security": [{"application": []}, {"basic": []}],
        "paths": {
            "/calling/v1/callouts": {
                "post": {
                    "operationId": "callout",
                    "requestBody": _json_body(CALLOUT),
                    "responses": {
                        **_ok(
                            {
                                "type": "object",
                                "required": ["callId"],
                                "properties": {"callId": {"type": "string"}},
                            }
                        ),
                        **errors,
                    },
                }
            },
            "/calling/v1/calls/id/{callId}": {
                "parameters": [_path_param("callId")],
                "get": {"operationId": "getCall", "responses": {**_ok({"type": "object"}), **errors}},
                "patch": {
                    "operationId": "updateCall",
                    "requestBody": _json_body(SVAML),
                    "responses": {**_ok(), **errors},
                },
            },
            "/calling/v1/calls/id/{callId}/leg/{callLeg}": {
                "parameters": [
                    _path_param("callId"),
                    _path_param("callLeg", {"type": "string", "enum": ["caller", "callee", "both"]}),
                ],
                "patch": {
                    "operationId": "updateCallLeg",
                    "requestBody": _json_body(SVAML),
                    "responses": {**_ok(), **errors},
                },
            },
            "/calling/v1/conferences/id/{conferenceId}": {
                "parameters": [_path_param("conferenceId")],
                "get": {
                    "operationId": "getConference",
                    "responses": {
                        **_ok(
                            {
                                "type": "object",
                                "required": ["participants"],
                                "properties": {"participants": {"type": "array", "items": participant}},
                            }
                        ),
                        **errors,
                    },
                },
                "delete": {"operationId": "kickAll", "responses": {**_ok(), **errors}},
            },
            "/calling/v1/conferences/id/{conferenceId}/{callId}": {
                "parameters": [_path_param("conferenceId"), _path_param("callId")],
                "patch": {
                    "operationId": "manageParticipant",
                    "requestBody": _json_body(
                        {
                            "type": "object",
                            "properties": {
                                "command": {"type": "string", "enum": ["mute", "unmute", "onhold", "resume"]},
                                "moh": MOH,
                                "conferenceDtmfOptions": DTMF_OPTIONS,
                            },
                        }
                    ),
                    "responses": {**_ok(), **errors},
                },
                "delete": {"operationId": "kickParticipant", "responses": {**_ok(), **errors}},
            },
            "/v1/configuration/numbers": {
                "get": {"operationId": "listNumbers", "responses": {**_ok({"type": "object"}), **errors}},
                "post": {
                    "operationId": "assignNumbers",
                    "requestBody": _json_body(
                        {
                            "type": "object",
                            "required": ["numbers"],
                            "properties": {
                                "numbers": {"type": "array", "items": {"type": "string", "minLength": 1}},
                                "applicationkey": {"type": "string"},
                                "capability": {"type": "string"},
                            },
                        }
                    ),
                    "responses": {**_ok(), **errors},
                },
                "delete": {
                    "operationId": "unassignNumber",
                    "requestBody": _json_body(
                        {
                            "type": "object",
                            "required": ["number"],
                            "properties": {
                                "number": {"type": "string", "minLength": 1},
                                "applicationkey": {"type": "string"},
                                "capability": {"type": "string"},
                            },
                        }
                    ),
                    "responses": {**_ok(), **errors},
                },
            },
            "/v1/configuration/callbacks/applications/{applicationkey}": {
                "parameters": [_path_param("applicationkey")],
                "get": {"operationId": "getCallbackUrls", "responses": {**_ok({"type": "object"}), **errors}},
                "post": {
                    "operationId": "setCallbackUrls",
                    "requestBody": _json_body(
                        {
                            "type": "object",
                            "required": ["url"],
                            "properties": {
                                "url": {
                                    "type": "object",
                                    "properties": {
                                        "primary": {"type": "string"},
                                        "fallback": {"type": "string"},
                                    },
                                }
                            },
                        }
                    ),
                    "responses": {**_ok(), **errors},
                },
            },
            "/v1/calling/query/number/{number}": {
                "parameters": [_path_param("number")],
                "get": {"operationId": "queryNumber", "responses": {**_ok({"type": "object"}), **errors}},
            },
            "/tonebridge/v1/health": {
                "get": {"operationId": "health", "security": [], "responses": _ok({"type": "object"})}
            },
            "/tonebridge/v1/metrics": {
                "get": {"operationId": "metrics", "security": [], "responses": _ok({"type": "object"})}
            },
            "/tonebridge/v1/calls": {
                "get": {
                    "operationId": "listCalls",
                    "description": "The signing application's calls, newest first, with their conferences "
                    "and callback attempts (docs/operations.md, Call records).",
                    "parameters": [
                        _query_param("from", "started at or after: ISO 8601 or Unix seconds"),
                        _query_param("to", "started before: ISO 8601 or Unix seconds"),
                        _query_param("conferenceId", "in this conference, or placed to join it"),
                        _query_param("limit", "at most this many calls (default 1000)", CALL_LIMIT),
                    ],
                    "responses": {
                        **_ok({"type": "array", "items": CALL_RECORD}),
                        **_error_responses(400, 401),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "operationId": "prometheusMetrics",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "the Prometheus text exposition format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
        },
    }
