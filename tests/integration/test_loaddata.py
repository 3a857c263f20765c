"""proxy.loaddata against a real server: a load that cannot be complete is never taken as done,
and a refused upload leaves no thread behind. (That every column type is written byte for byte
is test_decoder_fidelity.py's job.)"""

from __future__ import annotations

import threading

import pymysql
import pytest

from proxy.changelog.decoder import ColumnDef, EnumValue, FieldType
from proxy.loaddata import LoadIncomplete, load_available, load_rows, load_spec, refuse_uploads

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


def test_the_server_gets_a_local_file_only_during_our_own_load(mysql_server, database, tmp_path):
    """A connection opened for loads refuses the server's request for a local file on any other
    statement (a server may ask for one in answer to any query)."""
    secret = tmp_path / "secret"
    secret.write_bytes(b"1\tsecret\n")
    with refuse_uploads(mysql_server.connect(database, local_infile=True)) as conn:
        make_table(conn)
        assert load_available(conn)
        with pytest.raises(RuntimeError), conn.cursor() as cur:
            cur.execute(f"LOAD DATA LOCAL INFILE '{secret}' INTO TABLE t")
    with mysql_server.connect(database) as conn, conn.cursor() as cur:
        cur.execute("SELECT v FROM t ORDER BY id")
        assert cur.fetchall() == ((b"old",),)  # nothing of the file reached the server
    with refuse_uploads(mysql_server.connect(database, local_infile=True)) as conn:
        assert load_rows(conn, "t", SPEC, [(5, b"ours")]) == 1  # our own load still works
        assert not conn._local_infile  # and refuses again afterwards


def test_a_duplicate_hidden_behind_other_warnings_still_counts_as_one(mysql_server, database):
    """The server keeps max_error_count warnings: when other warnings (an ENUM's invalid value
    on every row) fill the list before the duplicate key's, a skipped row is still taken for a
    duplicate, so the backtrack names the row that exists after all."""
    state = ColumnDef("s", FieldType.STRING, metadata=(FieldType.ENUM << 8) | 1, members=(b"on",))
    spec = load_spec(((0, ID), (1, state)), ("`id`", "`s`"))
    with mysql_server.connect(database, local_infile=True) as conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE e (id INT PRIMARY KEY, s ENUM('on'))")
        cur.execute("INSERT INTO e VALUES (9, 'on')")
        cur.execute("SET SESSION max_error_count = 3, sql_mode = ''")
        with pytest.raises(LoadIncomplete) as raised:
            load_rows(conn, "e", spec, [(i, EnumValue(0, None)) for i in range(1, 9)] + [(9, EnumValue(1, b"on"))])
        assert raised.value.duplicate
