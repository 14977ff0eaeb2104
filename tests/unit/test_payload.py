"""Payload schemas declared on ``sm.Workflow(..., payload=...)``: defaults, required, unknown, strict."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

import squid_mesh as sm


def noop(input: dict[str, Any], ctx: sm.StepContext) -> dict[str, Any]:
    return {}


def schema(payload: object) -> Any:
    wf = sm.Workflow("pay", payload=payload)
    wf.step("only")(noop)
    wf.transition("only", to=sm.COMPLETE)
    return wf.definition().payload


FIELDS = {
    "invoice_id": sm.Field(str),
    "amount": sm.Field(int, required=False, default=0),
    "note": sm.Field(str, required=False),
    "ratio": sm.Field(float, required=False, default=1.0),
}


def test_fields_fill_defaults_and_optional_fields() -> None:
    assert schema(FIELDS).validate({"invoice_id": "inv_1"}) == {
        "invoice_id": "inv_1",
        "amount": 0,
        "note": None,
        "ratio": 1.0,
    }


def test_given_values_are_kept() -> None:
    given = {"invoice_id": "inv_1", "amount": 7, "note": "hi", "ratio": 0.5}
    assert schema(FIELDS).validate(given) == given


def test_an_int_is_accepted_for_a_float_field_and_stored_as_float() -> None:
    clean = schema(FIELDS).validate({"invoice_id": "a", "ratio": 2})
    assert clean["ratio"] == 2.0 and isinstance(clean["ratio"], float)


def test_missing_required_field_is_named() -> None:
    with pytest.raises(sm.PayloadError) as err:
        schema(FIELDS).validate({"amount": 3})
    assert err.value.fields == {"invoice_id": "missing required field"}
    assert "invoice_id" in str(err.value) and "'pay'" in str(err.value)
    assert err.value.code == "invalid_payload"


def test_unknown_fields_are_named() -> None:
    with pytest.raises(sm.PayloadError) as err:
        schema(FIELDS).validate({"invoice_id": "a", "amont": 3, "extra": True})
    assert err.value.fields == {"amont": "unknown field", "extra": "unknown field"}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("amount", "3"),
        ("amount", 3.0),
        ("amount", True),
        ("invoice_id", 5),
        ("invoice_id", None),
        ("note", 1),
        ("ratio", "0.5"),
    ],
)
def test_types_are_strict(field: str, value: Any) -> None:
    with pytest.raises(sm.PayloadError) as err:
        schema(FIELDS).validate({"invoice_id": "a", field: value})
    assert list(err.value.fields) == [field]


def test_every_bad_field_is_named_at_once() -> None:
    with pytest.raises(sm.PayloadError) as err:
        schema(FIELDS).validate({"amount": "x", "zzz": 1})
    assert set(err.value.fields) == {"invoice_id", "amount", "zzz"}
    assert err.value.fields["invoice_id"] == "missing required field"
    assert err.value.fields["zzz"] == "unknown field"


@pytest.mark.parametrize("payload", [[], "text", 3, None])
def test_payload_must_be_a_mapping(payload: object) -> None:
    with pytest.raises(sm.PayloadError) as err:
        schema(FIELDS).validate(payload)
    assert err.value.fields == {"<payload>": "must be a mapping (a JSON object)"}


def test_keys_must_be_strings() -> None:
    with pytest.raises(sm.PayloadError) as err:
        schema(None).validate({1: "a"})
    assert err.value.fields == {"1": "keys must be strings"}


def test_without_schema_any_json_object_passes_as_a_copy() -> None:
    payload = {"a": {"b": [1, None, "x"]}, "t": (1, 2)}
    clean = schema(None).validate(payload)
    assert clean == {"a": {"b": [1, None, "x"]}, "t": [1, 2]}
    clean["a"]["b"].append(9)
    assert payload["a"]["b"] == [1, None, "x"], "the caller's payload is not shared"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), object(), {1, 2}])
def test_without_schema_non_json_values_are_refused(value: object) -> None:
    with pytest.raises(sm.PayloadError) as err:
        schema(None).validate({"v": value})
    assert err.value.fields["<payload>"].startswith("must be JSON-serialisable")


class Invoice(pydantic.BaseModel):
    invoice_id: str
    amount: int = 0
    lines: list[str] = []


def test_pydantic_model_validates_and_dumps_json() -> None:
    assert schema(Invoice).validate({"invoice_id": "inv_1", "lines": ["a"]}) == {
        "invoice_id": "inv_1",
        "amount": 0,
        "lines": ["a"],
    }


def test_pydantic_model_names_missing_mistyped_and_unknown_fields() -> None:
    with pytest.raises(sm.PayloadError) as err:
        schema(Invoice).validate({"amount": "lots", "colour": "red"})
    assert err.value.fields["invoice_id"] == "missing required field"
    assert err.value.fields["colour"] == "unknown field"
    assert "amount" in err.value.fields


def test_pydantic_model_with_nested_errors_names_the_path() -> None:
    with pytest.raises(sm.PayloadError) as err:
        schema(Invoice).validate({"invoice_id": "a", "lines": ["ok", 3]})
    assert list(err.value.fields) == ["lines.1"]


@pytest.mark.parametrize(
    ("payload", "pattern"),
    [
        ("str", r"expected a pydantic model class or \{name: sm.Field\(...\)\}"),
        (int, r"expected a pydantic model class"),
        ({"a": int}, r"payload field 'a': expected sm.Field\(...\), got type"),
        ({"": sm.Field(int)}, r"field names must be strings"),
    ],
)
def test_bad_schemas_are_definition_errors(payload: object, pattern: str) -> None:
    with pytest.raises(sm.DefinitionError, match=pattern):
        sm.Workflow("pay", payload=payload)


def test_field_type_must_be_a_type() -> None:
    with pytest.raises(sm.DefinitionError, match=r"Field type must be a type.*got 'int'"):
        sm.Field("int")  # type: ignore[arg-type]


def test_payload_schema_is_part_of_the_fingerprint() -> None:
    def fp(payload: object) -> str:
        wf = sm.Workflow("pay", payload=payload)
        wf.step("only")(noop)
        wf.transition("only", to=sm.COMPLETE)
        return wf.definition().fingerprint

    assert fp({"a": sm.Field(int)}) == fp({"a": sm.Field(int)})
    assert fp({"a": sm.Field(int)}) != fp({"a": sm.Field(str)})
    assert fp({"a": sm.Field(int)}) != fp({"a": sm.Field(int, required=False)})
    assert fp(None) != fp(Invoice)
