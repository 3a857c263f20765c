"""proxy.ddlprepare.parse on literal query bytes: which SQL-level prepared-statement command a
query is, the statement name, and the text when the query alone says it."""

from __future__ import annotations

import pytest

from proxy.ddlprepare import SqlCommand, parse


@pytest.mark.parametrize("query, want", [
    (b"PREPARE s FROM 'DROP TABLE t'", SqlCommand("prepare", "s", b"DROP TABLE t", b"'DROP TABLE t'")),
    (b"  /* c */ prepare S1 from \"TRUNCATE t\" ;", SqlCommand("prepare", "s1", b"TRUNCATE t", b'"TRUNCATE t"')),
    (b"PREPARE `my ``s` FROM 'DROP TABLE ''q'''", SqlCommand("prepare", "my `s", b"DROP TABLE 'q'",
                                                             b"'DROP TABLE ''q'''")),
    (b"PREPARE s FROM @q", SqlCommand("prepare", "s", None, b"@q")),
    (b"PREPARE s FROM 'DROP TABLE \\'t\\''", SqlCommand("prepare", "s", None, b"'DROP TABLE \\'t\\''")),
    (b"EXECUTE s", SqlCommand("execute", "s")),
    (b"execute S using @a, @b", SqlCommand("execute", "s", using=True)),
    (b"EXECUTE IMMEDIATE 'DROP TABLE t'", SqlCommand("immediate", None, b"DROP TABLE t", b"'DROP TABLE t'")),
    (b"EXECUTE IMMEDIATE @q USING 1", SqlCommand("immediate", None, None, b"@q", using=True)),
    (b"DEALLOCATE PREPARE s", SqlCommand("deallocate", "s")),
    (b"drop  prepare `S`;", SqlCommand("deallocate", "s")),
])
def test_commands(query, want):
    assert parse(query) == want


@pytest.mark.parametrize("query", [
    b"PREPARE s FROM CONCAT('DROP ', 'TABLE t')",  # an expression: not read (MySQL refuses it too)
    b"PREPARE s FROM 'DROP TABLE t'; SELECT 1",  # a script: proxy.ddlscript splits it first
    b"EXECUTE IMMEDIATE CONCAT('DROP TABLE ', 't')",
    b"EXPLAIN SELECT 1",
    b"EXECUTEs",
])
def test_not_a_command_it_reads(query):
    assert parse(query) is None


def test_execute_immediate_only_on_mariadb():
    assert parse(b"EXECUTE IMMEDIATE 'DROP TABLE t'", "8.4.3") is None
    assert parse(b"EXECUTE IMMEDIATE 'DROP TABLE t'", "5.5.5-10.11.9-MariaDB-log").kind == "immediate"
    assert parse(b"EXECUTE s", "8.4.3") == SqlCommand("execute", "s")
