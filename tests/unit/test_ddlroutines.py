"""proxy.ddlroutines: which stored-program statements are recorded, and the statements an undo runs."""

from __future__ import annotations

import pytest

from proxy import ddlhold
from proxy.ddlops import Op
from proxy.ddlrecord import parse_routine
from proxy.ddlroutines import describe_undo


@pytest.mark.parametrize(("query", "obj", "verb", "names"), [
    (b"CREATE TRIGGER d.tr BEFORE INSERT ON t FOR EACH ROW SET NEW.v = 1", "TRIGGER", "CREATE", [("d", "tr")]),
    (b"/* x */ create or replace definer = `a b`@'%' trigger tr after delete on t for each row follows x set @a = 1",
     "TRIGGER", "CREATE", [(None, "tr")]),
    (b"CREATE PROCEDURE IF NOT EXISTS `p q`(x INT) INSERT INTO t VALUES (x)", "PROCEDURE", "CREATE", [(None, "p q")]),
    (b"CREATE DEFINER=CURRENT_USER AGGREGATE FUNCTION f(x INT) RETURNS INT BEGIN RETURN 1; END", "FUNCTION",
     "CREATE", [(None, "f")]),
    (b"ALTER PROCEDURE d.p COMMENT 'x'", "PROCEDURE", "ALTER", [("d", "p")]),
    (b"ALTER DEFINER=`u`@`h` EVENT e RENAME TO d.e2 COMMENT 'x'", "EVENT", "ALTER", [(None, "e"), ("d", "e2")]),
    (b"DROP EVENT IF EXISTS e;", "EVENT", "DROP", [(None, "e")]),
    (b"DROP FUNCTION f", "FUNCTION", "DROP", [(None, "f")]),
    (b"CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW SET NEW.c = '#1 -- /*'", "TRIGGER", "CREATE",
     [(None, "tr")]),  # comment marks inside a string
])
def test_recorded(query, obj, verb, names):
    found = parse_routine(query, multi_statements=False)
    assert found is not None and found.kind == "routine" and found.by_gtid and found.tables == names
    assert (found.routine.object, found.routine.verb) == (obj, verb)
    assert ddlhold._PREFIX.match(query)  # claimed by the holder


@pytest.mark.parametrize("query", [
    b"CREATE FUNCTION udf RETURNS STRING SONAME 'udf.so'",  # a UDF, not a stored function
    b"CREATE PROCEDURE p() BEGIN SELECT 1; END; DROP TABLE t",  # (multi-statements: a second statement)
    b"CREATE PROCEDURE p() IF 1 THEN SELECT 1; END IF",  # a body only the server's parser can read
    b"DROP PROCEDURE p; DROP TABLE t", b"DROP TRIGGER mysql.tr", b"CREATE PROCEDURE p() SELECT 1 /* c */",
    b"CALL p()", b"DROP TABLE t", b"CREATE TABLE trigger_log (id INT)",
])
def test_not_recorded(query):
    assert parse_routine(query, multi_statements=True) is None


@pytest.mark.parametrize("multi_statements", [False, True])
def test_a_body_with_semicolons_is_recorded(multi_statements):
    """With multi-statements on (the mariadb CLI's default) only if it is one BEGIN ... END."""
    found = parse_routine(b"CREATE PROCEDURE p() BEGIN SELECT 1; SELECT 2; END;", multi_statements)
    assert found is not None and found.tables == [(None, "p")]


def test_undo_statements_drop_what_was_made_and_make_again_what_was_there():
    made = {"create": "CREATE DEFINER=`u`@`%` TRIGGER IF NOT EXISTS tr BEFORE INSERT ON t FOR EACH ROW SET @a = 1",
            "sql_mode": "", "charset": "utf8mb4", "collation": "utf8mb4_general_ci", "group": ["t", "BEFORE",
            "INSERT"], "order": ["tr"]}
    created = Op("o1", "routine", "CREATE TRIGGER ...", [],
                 change={"object": "TRIGGER", "tables": [["d", "tr"]], "before": [None], "after": [made]})
    assert describe_undo(created) == "DROP TRIGGER `d`.`tr`"
    dropped = Op("o2", "routine", "DROP TRIGGER tr", [],
                 change={"object": "TRIGGER", "tables": [["d", "tr"]], "before": [made], "after": [None]})
    assert describe_undo(dropped) == ("CREATE OR REPLACE DEFINER=`u`@`%` TRIGGER tr BEFORE INSERT ON t FOR EACH ROW "
                                      "SET @a = 1")
    renamed = Op("o3", "routine", "ALTER EVENT e RENAME TO f", [],
                 change={"object": "EVENT", "tables": [["d", "e"], ["d", "f"]], "before": [
                     {"create": "CREATE DEFINER=`u`@`%` EVENT `e` ON SCHEDULE AT '2030-01-01' DO SELECT 1"}, None],
                     "after": [None, {"create": "CREATE DEFINER=`u`@`%` EVENT `f` ON SCHEDULE ..."}]})
    assert describe_undo(renamed) == ("DROP EVENT `d`.`f`; CREATE OR REPLACE DEFINER=`u`@`%` EVENT `e` ON SCHEDULE "
                                      "AT '2030-01-01' DO SELECT 1")
