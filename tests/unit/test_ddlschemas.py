"""proxy.ddlschemas: which schema statements are recorded, and the statements an undo runs."""

from __future__ import annotations

import pytest

from proxy import ddlhold
from proxy.ddlops import Op
from proxy.ddlrecord import parse
from proxy.ddlschemas import describe_undo


@pytest.mark.parametrize(("query", "tables", "replace"), [
    (b"CREATE DATABASE shop", [("shop", "")], False),
    (b"/* x */ create schema if not exists `my shop` character set latin1", [("my shop", "")], False),
    (b"CREATE OR REPLACE DATABASE d", [("d", "")], True),
    (b"ALTER DATABASE d COMMENT 'x'", [("d", "")], False),
    (b"ALTER SCHEMA DEFAULT CHARACTER SET utf8mb4", [(None, "")], False),  # the session's schema
])
def test_recorded(query, tables, replace):
    found = parse(query)
    assert found is not None and found.kind == "schema" and found.tables == tables and found.replace == replace
    assert found.by_gtid and ddlhold._PREFIX.match(query)


@pytest.mark.parametrize("query", [b"CREATE DATABASE mysql", b"ALTER DATABASE `#mysql50#d` UPGRADE DATA DIRECTORY NAME",
                                   b"CREATE DATABASE a; DROP TABLE b", b"ALTER DATABASE READ ONLY = 1",
                                   b"ALTER SCHEMA d ENCRYPTION = 'Y'"])
def test_not_recorded(query):
    assert parse(query) is None


def op(before, after) -> Op:
    return Op("o", "schema", "...", [], change={"tables": [["d", ""]], "before": before, "after": after})


def schema(create: str) -> dict:
    return {"db": "d", "create": create, "objects": []}


def test_undo_statements():
    old = schema("CREATE DATABASE `d` /*!40100 DEFAULT CHARACTER SET latin1 COLLATE latin1_swedish_ci */ "
                 "COMMENT 'it''s old'")
    new = schema("CREATE DATABASE `d` /*!40100 DEFAULT CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci */")
    assert describe_undo(op(None, new)) == "DROP DATABASE `d`"
    assert describe_undo(op(old, None)) == old["create"]
    assert describe_undo(op(old, new)) == ("ALTER DATABASE `d` DEFAULT CHARACTER SET latin1 COLLATE "
                                           "latin1_swedish_ci COMMENT 'it''s old'")
    assert describe_undo(op(new, old)) == ("ALTER DATABASE `d` DEFAULT CHARACTER SET utf8mb4 COLLATE "
                                           "utf8mb4_general_ci COMMENT ''")
    assert describe_undo(op(new, new)) is None  # CREATE DATABASE IF NOT EXISTS of one that was there
    # MySQL has no schema comment: none is cleared where none is shown
    encryption = " /*!80016 DEFAULT ENCRYPTION='N' */"
    mysql_old = schema("CREATE DATABASE `d` /*!40100 DEFAULT CHARACTER SET latin1 */" + encryption)
    mysql_new = schema("CREATE DATABASE `d` /*!40100 DEFAULT CHARACTER SET utf8mb4 */" + encryption)
    assert describe_undo(op(mysql_old, mysql_new)) == "ALTER DATABASE `d` DEFAULT CHARACTER SET latin1"
    # a name that looks like the options is not read as them
    tricky = schema("CREATE DATABASE `x/*!40100 DROP */` /*!40100 DEFAULT CHARACTER SET latin1 */")
    assert describe_undo(Op("o", "schema", "...", [], change={"tables": [["x/*!40100 DROP */", ""]], "before": tricky,
                                                              "after": {**tricky, "create": new["create"]}})) == (
        "ALTER DATABASE `x/*!40100 DROP */` DEFAULT CHARACTER SET latin1")
