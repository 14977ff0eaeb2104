"""Run ids, tokens and time options."""

from __future__ import annotations

import uuid

import squid_mesh as sm
from squid_mesh.engine.entropy import uuid7


def test_uuid7_layout() -> None:
    value = uuid.UUID(uuid7(0x0123456789AB, 2**74 - 1))
    assert value.version == 7 and value.variant == uuid.RFC_4122
    assert str(value).startswith("01234567-89ab-7")


def test_uuid7_sorts_by_time_whatever_the_random_bits() -> None:
    earlier = uuid7(1_750_000_000_000, 2**74 - 1)
    later = uuid7(1_750_000_000_001, 0)
    assert earlier < later


def test_system_run_ids_are_version_7_and_distinct() -> None:
    ids = [sm.SystemEntropy().run_id() for _ in range(100)]
    assert len(set(ids)) == 100
    assert all(uuid.UUID(i).version == 7 for i in ids)
