"""Field paths into nested records, as users name references and instructions."""

from __future__ import annotations

import pytest

from dataforge.util.fieldpath import MISSING, get_field, parse_path, root_field

RECORD = {"instances": [{"input": "", "output": "Paris"}, {"output": "Lyon"}], "answer": {"text": "42"},
          "a.b": "flat key"}


@pytest.mark.parametrize("path, value", [("instances[0].output", "Paris"), ("instances[-1].output", "Lyon"),
                                         ("answer.text", "42"), ("a.b", "flat key"), ("instances[1]", {"output": "Lyon"})])
def test_paths_reach_nested_values_and_a_flat_key_wins(path, value):
    assert get_field(RECORD, path) == value


def test_a_missing_step_is_the_default_or_a_key_error_naming_it():
    assert get_field(RECORD, "instances[5].output", None) is None
    assert get_field(RECORD, "answer.value", MISSING) is MISSING
    with pytest.raises(KeyError, match="no key 'value'"):
        get_field(RECORD, "answer.value")
    assert root_field("instances[0].output") == "instances"
    assert parse_path("a[2].b") == ["a", 2, "b"]
    with pytest.raises(ValueError, match="not a field path"):
        parse_path("a..b[")
