"""The OpenAPI 3.1 description of the console's JSON API, served at ``/api/openapi.json``."""

from __future__ import annotations

from typing import Any

import squid_mesh

_ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "field": {"type": ["string", "null"]},
            },
            "required": ["code", "message"],
        }
    },
}
_RUN_ID = {"name": "run_id", "in": "path", "required": True, "schema": {"type": "string"}}
_OBJECT = {"type": "object"}


def _responses(ok: str, *errors: int, ok_status: str = "200") -> dict[str, Any]:
    described = {
        401: "Not signed in (no or wrong bearer token or session)",
        403: "Refused: CSRF value missing or wrong, read-only console, or no permission to act",
        404: "No such run (or endpoint)",
        409: "The run's state does not allow it (finished, not paused, other gate, replay refused)",
        413: "The body is larger than 64 KiB",
        422: "A bad parameter, run id or body field; `field` names it",
        503: "The database failed (the message names the store, never its credentials)",
    }
    out: dict[str, Any] = {
        ok_status: {"description": ok, "content": {"application/json": {"schema": _OBJECT}}}
    }
    for status in (401, *errors, 503):
        out[str(status)] = {
            "description": described[status],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
    return out


def _action(name: str, fields: dict[str, Any], summary: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": summary,
            "parameters": [
                _RUN_ID,
                {
                    "name": "X-CSRF-Token",
                    "in": "header",
                    "required": False,
                    "description": "Required unless authenticated with the bearer header "
                    "(value from GET /api/session).",
                    "schema": {"type": "string"},
                },
            ],
            "requestBody": {
                "required": False,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {**fields, "idempotency_key": {"type": "string"}},
                        }
                    }
                },
            },
            "responses": _responses(
                "The run after the command" if name != "replay" else "The new run",
                403,
                404,
                409,
                413,
                422,
                ok_status="201" if name == "replay" else "200",
            ),
        }
    }


def document(title: str) -> dict[str, Any]:
    """The OpenAPI document."""
    comment = {"comment": {"type": "string"}}
    filters: list[dict[str, Any]] = [
        {"name": n, "in": "query", "required": False, "schema": {"type": "string"}}
        for n in ("workflow", "status", "queue", "cursor")
    ]
    filters.append(
        {
            "name": "limit",
            "in": "query",
            "required": False,
            "schema": {"type": "integer", "minimum": 1, "maximum": 500, "default": 50},
        }
    )
    return {
        "openapi": "3.1.0",
        "info": {"title": f"{title} console API", "version": squid_mesh.__version__},
        "components": {
            "schemas": {"Error": _ERROR},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "session": {"type": "apiKey", "in": "cookie", "name": "squid_mesh_session"},
            },
        },
        "security": [{"bearer": []}, {"session": []}],
        "paths": {
            "/api/session": {
                "get": {
                    "summary": "Who is signed in, their CSRF value, and whether the console is "
                    "read-only",
                    "responses": _responses("The session"),
                }
            },
            "/api/runs": {
                "get": {
                    "summary": "Runs newest first, filtered, a page at a time, with counts per "
                    "status (no payloads)",
                    "parameters": filters,
                    "responses": _responses("A page of runs", 422),
                }
            },
            "/api/runs/{run_id}": {
                "get": {
                    "summary": "A run's snapshot (payload and context only with the detail "
                    "permission)",
                    "parameters": [_RUN_ID],
                    "responses": _responses("The run", 404, 422),
                }
            },
            "/api/runs/{run_id}/explain": {
                "get": {
                    "summary": "Why the run is where it is, and the next actions",
                    "parameters": [_RUN_ID],
                    "responses": _responses("The explanation", 404, 422),
                }
            },
            "/api/runs/{run_id}/graph": {
                "get": {
                    "summary": "The run's graph: nodes and edges with their status",
                    "parameters": [_RUN_ID],
                    "responses": _responses("The graph", 404, 409, 422),
                }
            },
            "/api/runs/{run_id}/approve": _action("approve", comment, "Approve the open approval"),
            "/api/runs/{run_id}/reject": _action("reject", comment, "Reject the open approval"),
            "/api/runs/{run_id}/resume": _action("resume", comment, "Resume a paused run"),
            "/api/runs/{run_id}/cancel": _action(
                "cancel", {"reason": {"type": "string"}}, "Cancel the run"
            ),
            "/api/runs/{run_id}/replay": _action(
                "replay",
                {"allow_irreversible": {"type": "boolean"}},
                "Start a new run from a finished one",
            ),
            "/api/queues": {
                "get": {
                    "summary": "Per queue: visible, claimed, scheduled and expired attempts, "
                    "limits; workers holding claims",
                    "responses": _responses("Queues and workers"),
                }
            },
            "/api/schedules": {
                "get": {
                    "summary": "Cron triggers with their last and next slots",
                    "responses": _responses("Schedules"),
                }
            },
        },
    }
