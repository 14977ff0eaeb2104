"""Checks of command options, shared by the engine's commands (pure)."""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from squid_mesh.errors import InvalidOptionError, PayloadError, redact

_MAX_METADATA = 16_000

QUEUE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def check_queue(queue: object) -> str:
    """A queue name, or :class:`InvalidOptionError` naming ``queue``."""
    if not isinstance(queue, str) or not QUEUE_PATTERN.match(queue):
        raise InvalidOptionError("queue", "expected 1-100 characters of [A-Za-z0-9_.-]")
    return queue


def check_priority(priority: object) -> int:
    """A claim priority (an integer; higher is claimed first), or an error naming ``priority``."""
    if isinstance(priority, bool) or not isinstance(priority, int) or abs(priority) > 1_000_000:
        raise InvalidOptionError("priority", "expected an integer from -1000000 to 1000000")
    return priority


def check_payload_size(workflow: str, payload: dict[str, Any], limit: int) -> None:
    """Refuse a payload whose JSON is larger than ``limit`` bytes (:class:`PayloadError`)."""
    size = len(json.dumps(payload, separators=(",", ":")).encode())
    if size > limit:
        raise PayloadError(
            workflow,
            {
                "<payload>": f"is {size} bytes of JSON, more than the limit of {limit} "
                "(connect(max_payload_bytes=...)); store large data elsewhere and pass a reference"
            },
        )


def payload_hash(payload: dict[str, Any]) -> str:
    """A stable hash of a validated payload (for idempotent start)."""
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def check_run_id(run_id: object) -> str:
    """A canonical UUID string, or :class:`InvalidOptionError` naming ``run_id``."""
    if isinstance(run_id, uuid.UUID):
        return str(run_id)
    try:
        return str(uuid.UUID(str(run_id))) if isinstance(run_id, str) else _bad_run_id()
    except ValueError:
        return _bad_run_id()


def _bad_run_id() -> str:
    raise InvalidOptionError("run_id", "expected a UUID string")


def check_text(option: str, value: object, *, limit: int = 200) -> str:
    """A non-empty string of at most ``limit`` characters, or an error naming ``option``."""
    if not isinstance(value, str) or not value or len(value) > limit:
        raise InvalidOptionError(
            option, f"expected a non-empty string of at most {limit} characters"
        )
    if "\x00" in value or not _encodable(value):
        raise InvalidOptionError(option, "must be valid UTF-8 text without NUL characters")
    return value


def _encodable(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates
        return False
    return True


def check_metadata(metadata: object) -> dict[str, Any]:
    """A command's metadata: a JSON object of at most 16,000 characters, secrets redacted."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping) or not all(isinstance(k, str) for k in metadata):
        raise InvalidOptionError("metadata", "expected a dict with string keys")
    try:
        text = json.dumps(dict(metadata), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidOptionError("metadata", f"must be JSON-serialisable: {exc}") from None
    if len(text) > _MAX_METADATA:
        raise InvalidOptionError("metadata", f"at most {_MAX_METADATA} characters as JSON")
    if "\\u0000" in text or not _encodable(text):
        raise InvalidOptionError("metadata", "must be valid UTF-8 text without NUL characters")
    return dict(redact(json.loads(text)))


def to_iso(epoch: float) -> str:
    """An ISO 8601 UTC timestamp for a decision recorded in the context."""
    return datetime.fromtimestamp(epoch, UTC).isoformat()
