"""Which statements proxy.ddlhold takes over, and which it leaves to the server unchanged."""

from __future__ import annotations

import pytest

from proxy.ddlhold import FIRST_BYTES, parse_statement
from proxy.ddlops import foreign_keys, op_of_statement, tag


@pytest.mark.parametrize(("query", "kind", "tables", "if_exists"), [
    (b"DROP TABLE a", "drop", [(None, "a")], False),
    (b"drop table if exists a, `s`.`b c`", "drop", [(None, "a"), ("s", "b c")], True),
    (b"  /* note */ DROP TABLE a", "drop", [(None, "a")], False),
    (b"TRUNCATE TABLE s.t", "truncate", [("s", "t")], False),
    (b"truncate t", "truncate", [(None, "t")], False),
    (b"DROP DATABASE d", "drop_database", [("d", "")], False),
    (b"drop schema if exists `d x`", "drop_database", [("d x", "")], True),
])
def test_held_statements(query, kind, tables, if_exists):
    statement = parse_statement(query)
    assert (statement.kind, statement.tables, statement.if_exists) == (kind, tables, if_exists)
    assert query[0] in FIRST_BYTES


@pytest.mark.parametrize("query", [
    b"DROP TEMPORARY TABLE a",  # temporary tables are left alone
    b"DROP TABLE a; DROP TABLE b",  # several statements: relayed as sent
    b"DROP TABLE a WAIT 5",  # options the parser does not know: relayed as sent
    b"DROP VIEW mysql.v1",  # (other views: recorded by proxy.ddlrecord)
    b"DROP DATABASE mysql",
    b"DROP DATABASE auroratrack_hold",
    b"SELECT 1",
    b"/* DROP TABLE a */ SELECT 1",
    "DROP TABLE caf\u00e9".encode(),  # non-ASCII: the session's character set is not known here
])
def test_relayed_unchanged(query):
    assert parse_statement(query) is None


def test_tags_and_foreign_keys():
    assert op_of_statement(tag("abc1") + "RENAME TABLE x TO y") == ("abc1", None)
    assert op_of_statement(tag("abc1", "fk") + "ALTER TABLE x") == ("abc1", "fk")
    assert op_of_statement("RENAME TABLE x TO y") is None
    create = ("CREATE TABLE `c` (\n  `id` int(11) NOT NULL,\n  `pid` int(11) DEFAULT NULL,\n  PRIMARY KEY (`id`),\n"
              "  CONSTRAINT `c_ibfk_1` FOREIGN KEY (`pid`) REFERENCES `p` (`id`) ON DELETE CASCADE,\n"
              "  CONSTRAINT `x` FOREIGN KEY (`id`) REFERENCES `other`.`q` (`id`)\n) ENGINE=InnoDB")
    assert foreign_keys(create, "db") == [
        "CONSTRAINT `c_ibfk_1` FOREIGN KEY (`pid`) REFERENCES `db`.`p` (`id`) ON DELETE CASCADE",
        "CONSTRAINT `x` FOREIGN KEY (`id`) REFERENCES `other`.`q` (`id`)",
    ]


def test_scripts_split_at_top_level_semicolons_only():
    from proxy.ddlscript import split

    assert split(b"DROP TABLE IF EXISTS a; CREATE TABLE a (id INT); INSERT INTO a VALUES ('x;y'); /* ; */") == [
        b"DROP TABLE IF EXISTS a", b"CREATE TABLE a (id INT)", b"INSERT INTO a VALUES ('x;y')"]
    assert split(b"DROP TABLE a;") is None  # one statement
    # A body's semicolons end no statement: the script is cut after the body's END (and its label).
    assert split(b"DROP TABLE a; CREATE PROCEDURE p() l: BEGIN IF 1 THEN SELECT 1; END IF; END l; DROP TABLE b") == [
        b"DROP TABLE a", b"CREATE PROCEDURE p() l: BEGIN IF 1 THEN SELECT 1; END IF; END l", b"DROP TABLE b"]
    assert split(b"DROP TABLE a; CREATE PROCEDURE p() IF 1 THEN SELECT 1; END IF") is None  # not a BEGIN body
    assert split(b"DROP TABLE a; BEGIN; DROP TABLE b") is None  # a transaction's BEGIN: left to the server
    assert split(b"DROP TABLE a; IF 1 THEN DROP TABLE b; END IF") is None  # MariaDB's compound statements
    assert split(b"DROP TABLE a; l: LOOP LEAVE l; END LOOP") is None
    assert split(b"DROP TABLE a; SELECT 1 /*!; DROP TABLE b */") is None  # run by the server, skipped by sqlglot
    assert split(b"DROP TABLE a; CREATE PACKAGE BODY pkg PROCEDURE p0() BEGIN END; FUNCTION f() RETURNS INT "
                 b"RETURN 1; END") is None
    # what the server itself cuts into three (the last an error): the same three
    assert split(b"DROP TABLE a; CREATE PROCEDURE p() BEGIN START TRANSACTION; COMMIT; END; DROP TABLE y; END") == [
        b"DROP TABLE a", b"CREATE PROCEDURE p() BEGIN START TRANSACTION; COMMIT; END", b"DROP TABLE y", b"END"]
    assert split(b"DROP TABLE a; LOAD DATA LOCAL INFILE 'f' INTO TABLE b") is None


@pytest.mark.parametrize("body", [
    b"CREATE DEFINER=`u`@`%` TRIGGER tr BEFORE INSERT ON t FOR EACH ROW lbl: BEGIN IF NEW.a > 0 THEN "
    b"SET NEW.b = (CASE WHEN 1 THEN 2 END), NEW.c = CASE WHEN 1 THEN 2 END + 1; END IF; END lbl",
    b"CREATE PROCEDURE p() COMMENT 'x' BEGIN SELECT CASE WHEN 1 THEN 2 END AS c; CASE 1 WHEN 1 THEN SELECT 1; "
    b"END CASE; WHILE 0 DO SELECT 1; END WHILE; REPEAT SELECT 2; UNTIL 1 END REPEAT; END",
    b"CREATE PROCEDURE p() BEGIN SELECT t.end, t.begin FROM t; END",  # qualified columns so named
    b"CREATE DEFINER = CURRENT_USER() PROCEDURE p() BEGIN SELECT 1; END",
    b"CREATE EVENT e ON SCHEDULE EVERY 1 HOUR DO BEGIN DELETE FROM t; END;",
    b"CREATE PROCEDURE p() BEGIN START TRANSACTION; COMMIT; END",  # START is sqlglot's BEGIN token
    b"CREATE DEFINER=CURRENT_USER() FUNCTION f(a INT, b VARCHAR(5)) RETURNS DECIMAL(10,2) UNSIGNED CHARSET utf8mb4 "
    b"COLLATE utf8mb4_bin DETERMINISTIC READS SQL DATA SQL SECURITY INVOKER COMMENT 'x' LANGUAGE SQL lbl: BEGIN "
    b"DECLARE EXIT HANDLER FOR SQLSTATE '23000' BEGIN END; START TRANSACTION; RETURN 1; END lbl",
    b"CREATE PROCEDURE p() BEGIN DECLARE CONTINUE HANDLER FOR NOT FOUND BEGIN SET @x = 1; END; "
    b"l: LOOP LEAVE l; END LOOP l; END",
    b"CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW FOLLOWS other BEGIN IF NEW.a THEN SET NEW.b = 1; END IF; END",
])
def test_a_stored_program_with_a_compound_body_is_one_statement(body):
    from proxy.ddlscript import split_statements

    assert split_statements(body) == [body.rstrip(b";")]


@pytest.mark.parametrize("query", [
    b"CREATE PROCEDURE p() BEGIN SELECT 1; END; DROP TABLE t",  # two statements
    b"CREATE PROCEDURE p() BEGIN SELECT 1; END END",  # does not balance
    b"CREATE PROCEDURE p() BEGIN SELECT 1;",  # never closed
    # begin/end as unqualified names: not read by guess (one of these hid a DROP TABLE)
    b"CREATE PROCEDURE p() BEGIN SELECT CASE WHEN x THEN begin END FROM t; END; DROP TABLE y; SELECT 1 AS end",
    b"CREATE PROCEDURE p() BEGIN SELECT begin, end FROM t; END",
    b"CREATE PROCEDURE p() BEGIN SELECT @x AS end; END; DROP TABLE y",
    # a backslash: where a string ends depends on the session's sql_mode (NO_BACKSLASH_ESCAPES)
    b"CREATE PROCEDURE p() BEGIN SELECT 'x\\'; END; DROP TABLE y; SELECT '",
    b"CREATE DEFINER=CURRENT_USER() PROCEDURE p() IF 1 THEN SELECT 1; END IF",
    # begin as a name where a statement cannot start (each hid a DROP TABLE from an earlier reading)
    b"CREATE PROCEDURE p() BEGIN SELECT 1 AS begin UNION SELECT 2; END; DROP TABLE y; END",
    b"CREATE PROCEDURE p() BEGIN SELECT 1 FROM begin WHERE 1; END; DROP TABLE y; END",
    b"CREATE PROCEDURE p() BEGIN INSERT INTO begin VALUES (1); END; DROP TABLE y; END",
    # the server runs executable comments; the tokenizer skips them
    b"CREATE PROCEDURE p() BEGIN SELECT 1 /*!; DROP TABLE y */; END",
])
def test_compound_text_that_is_not_exactly_one_statement(query):
    from proxy.ddlscript import split_statements

    assert split_statements(query) is None or len(split_statements(query)) > 1
