"""proxy.loaddata against a real server: a load that cannot be complete is never taken as done,
and a refused upload leaves no thread behind. (That every column type is written byte for byte
is test_decoder_fidelity.py's job.)"""

from __future__ import annotations

import threading

import pymysql
import pytest

from proxy.changelog.decoder import ColumnDef, FieldType
from proxy.loaddata import LoadIncomplete, load_available, load_rows, load_spec

ID = ColumnDef("id", FieldType.LONG)
VALUE = ColumnDef("v", FieldType.VARCHAR, metadata=20, charset=63)  # VARBINARY(20)
SPEC = load_spec(((0, ID), (1, VALUE)), ("`id`", "`v`"))


def make_table(conn) -> None:
    with conn.cursor() as cur:
        cur.execute("CREATE TABLE t (id INT PRIMARY KEY, v VARBINARY(20))")
        cur.execute("INSERT INTO t VALUES (2, 'old')")


def loader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "auroratrack-load-data"]


def test_rows_are_written_in_the_callers_transaction(mysql_server, database):
    with mysql_server.connect(database, local_infile=True, autocommit=False) as conn:
        make_table(conn)
        conn.commit()
        assert load_available(conn)
        assert load_rows(conn, "t", SPEC, [(1, b"a\tb"), (3, b"c\nd")]) == 2
        conn.rollback()
        with conn.cursor() as cur:
            cur.execute("SELECT id, v FROM t ORDER BY id")
            assert cur.fetchall() == ((2, b"old"),)
        load_rows(conn, "t", SPEC, [(1, b"a\tb"), (3, b"c\nd")])
        conn.commit()
        with conn.cursor() as cur:
            cur.execute("SELECT id, v FROM t ORDER BY id")
            assert cur.fetchall() == ((1, b"a\tb"), (2, b"old"), (3, b"c\nd"))


def test_a_duplicate_key_is_reported_not_skipped(mysql_server, database):
    with mysql_server.connect(database, local_infile=True) as conn:
        make_table(conn)
        with pytest.raises(LoadIncomplete) as raised:
            load_rows(conn, "t", SPEC, [(1, b"new"), (2, b"clash")])
        assert raised.value.duplicate and "1 of 2" in str(raised.value)
    assert not loader_threads()


def test_an_upload_the_connection_refuses_leaves_no_thread(mysql_server, database):
    with mysql_server.connect(database) as conn:  # opened without local_infile
        make_table(conn)
        assert not load_available(conn)
        with pytest.raises((pymysql.MySQLError, RuntimeError)):
            load_rows(conn, "t", SPEC, [(1, b"x")])
    assert not loader_threads()
