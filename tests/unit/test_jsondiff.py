"""MySQL partial JSON updates applied to a document (jsondiff.py), over binary JSON MySQL wrote
(taken from the json.binlog.000001 and json-opaque.binlog fixtures)."""

from __future__ import annotations

import pytest

from proxy.changelog.jsondiff import (
    INSERT,
    REMOVE,
    REPLACE,
    JsonDiff,
    JsonDiffError,
    apply_diffs,
    parse_path,
    read_diffs,
)

# {"age": 24, "data": "xxxxxxxxxx", "name": "Joe"}
PERSON = bytes.fromhex("0003003300190003001c000400200004000518000c24000c2f00616765646174616e616d650a"
                       "78787878787878787878034a6f65")
# {"e": [0, 1, true, false]}
ARRAY = bytes.fromhex("0001001c000b000100020c006504001000050000050100040100040200")
# {"c": "2012-03-18 11:30:45.000000"} (an opaque DATETIME)
DATETIME = bytes.fromhex("00010016000b0001000f0c00630c08000000adb7e48b19")
INT_26 = bytes.fromhex("051a00")
STRING_ZOE = bytes.fromhex("0c035a6f65")
TRUE = bytes.fromhex("0401")


def test_the_fixture_diff_bytes_read_as_mysql_wrote_them():
    # One row's partial value of json.binlog.000001's PARTIAL_UPDATE_ROWS_EVENT.
    assert read_diffs(bytes.fromhex("0005242e6167650305 1a00".replace(" ", ""))) == (
        JsonDiff(REPLACE, "$.age", INT_26),)


def test_replace_insert_remove_in_an_object_keep_mysqls_key_order():
    diffs = (JsonDiff(REPLACE, "$.age", INT_26), JsonDiff(INSERT, "$.b", TRUE),
             JsonDiff(REMOVE, "$.data", None), JsonDiff(REPLACE, "$.name", STRING_ZOE))
    assert apply_diffs(PERSON, diffs) == '{"b": true, "age": 26, "name": "Zoe"}'


def test_array_insert_and_remove_shift_the_elements():
    diffs = (JsonDiff(INSERT, "$.e[1]", STRING_ZOE), JsonDiff(REMOVE, "$.e[0]", None))
    assert apply_diffs(ARRAY, diffs) == '{"e": ["Zoe", 1, true, false]}'


def test_opaque_scalars_keep_mysqls_spelling_through_a_patch():
    assert apply_diffs(DATETIME, (JsonDiff(INSERT, '$."a key"', TRUE),)) == \
        '{"c": "2012-03-18 11:30:45.000000", "a key": true}'


def test_replacing_the_whole_document():
    assert apply_diffs(PERSON, (JsonDiff(REPLACE, "$", TRUE),)) == "true"


def test_paths():
    assert parse_path('$.a."b c"[2].d') == ["a", "b c", 2, "d"]
    with pytest.raises(JsonDiffError):
        parse_path("a.b")


def test_a_path_into_nothing_is_refused():
    with pytest.raises(JsonDiffError, match="names nothing"):
        apply_diffs(PERSON, (JsonDiff(REPLACE, "$.missing.deeper", TRUE),))
    with pytest.raises(JsonDiffError):
        read_diffs(bytes([7]))
