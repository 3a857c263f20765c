"""LOAD DATA's side of the bulk writes (proxy.loaddata): the statement's column clause and the
bytes of each row, compared with literal bytes. That the server stores exactly what the SQL
literals store is checked against a real server in test_decoder_fidelity.py."""

from __future__ import annotations

from decimal import Decimal

from proxy.changelog.decoder import ColumnDef, DateTimeValue, EnumValue, FieldType, SetValue
from proxy.loaddata import load_spec

UTF8MB4 = 45  # utf8mb4_general_ci
INT = ColumnDef("id", FieldType.LONG)
TEXT = ColumnDef("t", FieldType.VARCHAR, metadata=80, charset=UTF8MB4)
BLOB = ColumnDef("b", FieldType.BLOB, metadata=2, charset=63)
BIT = ColumnDef("bits", FieldType.BIT, metadata=(1 << 8) | 0)
YEAR = ColumnDef("y", FieldType.YEAR)
ENUM = ColumnDef("e", FieldType.STRING, metadata=(FieldType.ENUM << 8) | 1, members=(b"a", b"b"))
SET = ColumnDef("s", FieldType.STRING, metadata=(FieldType.SET << 8) | 8)
DECIMAL = ColumnDef("d", FieldType.NEWDECIMAL, metadata=(10 << 8) | 2)
DOUBLE = ColumnDef("f", FieldType.DOUBLE, metadata=8)
DATETIME = ColumnDef("dt", FieldType.DATETIME2, metadata=3)
JSON = ColumnDef("j", FieldType.JSON, metadata=4)


def spec_for(*columns: ColumnDef):
    return load_spec(tuple((i, c) for i, c in enumerate(columns)), tuple(f"`{c.name}`" for c in columns))


def test_numbers_the_server_must_store_as_numbers_go_through_a_cast():
    spec = spec_for(INT, BIT, YEAR, ENUM, SET)
    assert spec.columns_clause == ("(`id`, @v1, @v2, @v3, @v4) SET `bits` = CAST(@v1 AS UNSIGNED), "
                                   "`y` = CAST(@v2 AS SIGNED), `e` = CAST(@v3 AS UNSIGNED), `s` = CAST(@v4 AS SIGNED)")
    rows = [(7, 5, 0, EnumValue(0, None), SetValue(1 << 63, ()))]
    assert spec.write_rows(rows) == b"7\t5\t0\t0\t-9223372036854775808\n"


def test_bytes_are_raw_with_backslash_tab_and_newline_escaped():
    spec = spec_for(INT, TEXT, BLOB)
    assert spec.columns_clause == "(`id`, `t`, `b`)"
    rows = [(1, b"tab\there\nnew\\line", b"\x00\xff\r\n\t\\N"), (2, b"", b"\\")]
    assert spec.write_rows(rows) == (b"1\ttab\\there\\nnew\\\\line\t\x00\xff\r\\n\\t\\\\N\n"
                                     b"2\t\t\\\\\n")


def test_null_is_backslash_n_and_differs_from_the_text_backslash_n():
    spec = spec_for(INT, TEXT, DECIMAL)
    assert spec.write_rows([(None, b"\\N", None), (3, None, Decimal("-1.50"))]) == (
        b"\\N\t\\\\N\t\\N\n3\t\\N\t-1.50\n")


def test_floats_and_times_are_the_literals_text():
    spec = spec_for(DOUBLE, DATETIME)
    rows = [(0.1, DateTimeValue(2026, 12, 2, 6, 4, 5, 0)), (1e300, DateTimeValue(0, 0, 0, 0, 0, 0, 120000))]
    assert spec.write_rows(rows) == (b"0.1e0\t2026-12-02 06:04:05.000\n"
                                     b"1e+300\t0000-00-00 00:00:00.120000\n")


def test_a_type_without_an_exact_spelling_has_no_spec():
    assert spec_for(INT, JSON) is None


def test_rows_given_as_pairs_of_images():
    fields = (((1, 0), INT), ((1, 1), TEXT), ((0, 1), TEXT))  # latest id and text, then the target text
    spec = load_spec(fields, ("`e0`", "`e1`", "`t1`"))
    assert spec.write_rows([((1, b"before"), (1, b"after"))]) == b"1\tafter\tbefore\n"
