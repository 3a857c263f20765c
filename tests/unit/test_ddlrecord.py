"""proxy.ddlrecord: which statements are recorded, and the inverse ALTER from two definitions."""

from __future__ import annotations

import pytest

from proxy.ddlpartitions import transition
from proxy.ddlrecord import inverse_alter, parse


@pytest.mark.parametrize(("query", "kind", "tables"), [
    (b"CREATE TABLE t (id INT)", "create", [(None, "t")]),
    (b"/* x */ create table if not exists `d`.`t t` (id INT)", "create", [("d", "t t")]),
    (b"RENAME TABLE a TO b, d.c TO `e`.f", "rename", [(None, "a"), (None, "b"), ("d", "c"), ("e", "f")]),
    (b"ALTER TABLE t ADD COLUMN w INT, ADD INDEX (w), DROP INDEX v, DROP FOREIGN KEY f", "alter", [(None, "t")]),
    (b"CREATE TABLE t AS SELECT 1", "create", [(None, "t")]),
    (b"CREATE TABLE t LIKE s", "create", [(None, "t")]),
    (b"CREATE OR REPLACE TABLE t (id INT)", "create", [(None, "t")]),
    (b"ALTER TABLE t RENAME TO u", "rename", [(None, "t"), (None, "u")]),
    (b"ALTER TABLE d.t RENAME AS `e`.u", "rename", [("d", "t"), ("e", "u")]),
    (b"ALTER TABLE t ADD c INT, RENAME TO u", "alter", [(None, "t"), (None, "u")]),
    (b"CREATE UNIQUE INDEX i ON d.t (v)", "alter", [("d", "t")]),
    (b"DROP INDEX i ON t", "alter", [(None, "t")]),
    (b"CREATE VIEW v AS SELECT 1", "view", [(None, "v")]),
    (b"create or replace algorithm=merge definer=`a`@`%` sql security invoker view d.v(x) as select 1",
     "view", [("d", "v")]),
    (b"ALTER VIEW v AS SELECT 2", "view", [(None, "v")]),
    (b"DROP VIEW IF EXISTS `v w`", "view", [(None, "v w")]),
    (b"DROP VIEW a, d.b RESTRICT", "view", [(None, "a"), ("d", "b")]),
    (b"ALTER TABLE d.t EXCHANGE PARTITION `p 0` WITH TABLE u", "exchange", [("d", "t"), (None, "u")]),
    # ';', '#', '--' and '/*' inside strings and quoted names are neither statements nor comments
    (b"CREATE TABLE `a#b` (c CHAR(7) DEFAULT '#fff', d VARCHAR(9) DEFAULT '--;/*x*/')", "create", [(None, "a#b")]),
])
def test_recorded(query, kind, tables):
    found = parse(query)
    assert found is not None and found.kind == kind and found.tables == tables


@pytest.mark.parametrize("query", [
    b"CREATE TEMPORARY TABLE t (id INT)", b"CREATE OR REPLACE TEMPORARY TABLE t (id INT)",
    b"ALTER TABLE t DISCARD TABLESPACE", b"ALTER TABLE t ADD c INT, EXCHANGE PARTITION p WITH TABLE u",
    b"CREATE TABLE mysql.t (id INT)", b"RENAME TABLE a TO b; DROP TABLE c", b"DROP VIEW a, mysql.b",
    b"COMMIT", b"ALTER TABLE t ADD c INT /* x */", b"DROP INDEX i ON mysql.t", b"CREATE TABLE t (a INT -- x\n)",
    b"CREATE TABLE t (a INT # x\n)", b"CREATE TABLE t (a CHAR(1) DEFAULT ';'); DROP TABLE u",
    # under NO_BACKSLASH_ESCAPES this is three statements: a backslash makes ';' unreadable
    b"ALTER TABLE t COMMENT 'x\\'; DROP TABLE important; SELECT '",
    b"/*!50000 DROP TABLE x; */ CREATE TABLE t (a INT)", b"CREATE TABLE t (a INT) /*!; DROP TABLE x */",
])
def test_not_recorded(query):
    assert parse(query) is None


@pytest.mark.parametrize(("query", "whole"), [
    (b"ALTER TABLE t CONVERT TO CHARACTER SET utf8mb4", True), (b"ALTER TABLE t DROP PARTITION p1", True),
    (b"ALTER TABLE t TRUNCATE PARTITION p1, p2", True), (b"ALTER TABLE t RENAME COLUMN a TO b", True),
    (b"ALTER TABLE t ADD c INT, RENAME TO u", True), (b"ALTER TABLE t RENAME INDEX a TO b", False),
    (b"ALTER TABLE t DROP COLUMN v", False), (b"ALTER TABLE t ADD c INT", False),
    (b"ALTER TABLE t DEFAULT CHARSET=utf8mb4", True), (b"ALTER TABLE t ADD c INT, COLLATE = latin1_bin", True),
    (b"ALTER TABLE t ADD c VARCHAR(3) CHARACTER SET latin1", False), (b"ALTER TABLE t ROW_FORMAT=COMPACT", False),
])
def test_whole_table_saved(query, whole):
    """Clauses no inverse ALTER expresses save the whole table first (proxy.ddlsave)."""
    assert parse(query).whole is whole


def test_logged_rebuilt_statements_are_known_by_gtid():
    assert parse(b"CREATE TABLE t SELECT 1").by_gtid and parse(b"CREATE VIEW v AS SELECT 1").by_gtid
    assert not parse(b"CREATE TABLE t (id INT)").by_gtid


BEFORE = """CREATE TABLE `t` (
  `id` int(11) NOT NULL,
  `v` int(11) DEFAULT NULL,
  `note` varchar(10) DEFAULT NULL,
  PRIMARY KEY (`id`),
  KEY `v` (`v`)
) ENGINE=InnoDB DEFAULT CHARSET=latin1 COLLATE=latin1_swedish_ci COMMENT='first'"""
AFTER = """CREATE TABLE `t` (
  `id` int(11) NOT NULL,
  `w` int(11) NOT NULL DEFAULT 5,
  `v` int(11) DEFAULT NULL,
  `note` varchar(10) DEFAULT 'n',
  PRIMARY KEY (`id`),
  KEY `w_note` (`w`,`note`)
) ENGINE=InnoDB DEFAULT CHARSET=latin1 COLLATE=latin1_swedish_ci COMMENT='second'"""


def test_inverse_alter_both_ways():
    assert inverse_alter(AFTER, BEFORE) == (
        "DROP INDEX `w_note`, DROP COLUMN `w`, MODIFY COLUMN `note` varchar(10) DEFAULT NULL, "
        "ADD KEY `v` (`v`), COMMENT='first'")
    assert inverse_alter(BEFORE, AFTER) == (
        "DROP INDEX `v`, ADD COLUMN `w` int(11) NOT NULL DEFAULT 5 AFTER `id`, "
        "MODIFY COLUMN `note` varchar(10) DEFAULT 'n', ADD KEY `w_note` (`w`,`note`), COMMENT='second'")
    assert inverse_alter(BEFORE, BEFORE) == ""


def test_inverse_alter_puts_engine_and_row_format_back():
    compact = BEFORE.replace("COLLATE=latin1_swedish_ci", "COLLATE=latin1_swedish_ci ROW_FORMAT=COMPACT")
    assert inverse_alter(compact, BEFORE) == "ROW_FORMAT=DEFAULT"
    assert inverse_alter(BEFORE.replace("InnoDB", "Aria"), compact) == "ENGINE=InnoDB, ROW_FORMAT=COMPACT"


@pytest.mark.parametrize(("query", "columns"), [
    (b"ALTER TABLE t DROP COLUMN v", ("v",)), (b"ALTER TABLE t DROP v, DROP INDEX i", ("v",)),
    (b"ALTER TABLE t MODIFY v BIGINT, CHANGE COLUMN `w x` y INT", ("v", "w x")),
    (b"ALTER TABLE t ALTER COLUMN v DROP DEFAULT, DROP PRIMARY KEY, ADD c INT", ()),
    (b"ALTER TABLE t DROP COLUMN IF EXISTS v, DROP PARTITION p", ("v",)),
])
def test_destructive_columns(query, columns):
    assert parse(query).columns == columns


PARTITIONED = """CREATE TABLE `r` (
  `id` int(11) NOT NULL,
  PRIMARY KEY (`id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci
 PARTITION BY RANGE (`id`)
(PARTITION `p0` VALUES LESS THAN (10) ENGINE = InnoDB,
 PARTITION `p 1` VALUES LESS THAN (20) COMMENT = 'x' ENGINE = InnoDB,
 PARTITION `p2` VALUES LESS THAN (30) ENGINE = InnoDB,
 PARTITION `p3` VALUES LESS THAN MAXVALUE ENGINE = InnoDB)"""
DROPPED = """CREATE TABLE `r` (
  `id` int(11) NOT NULL,
  PRIMARY KEY (`id`)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_general_ci
 PARTITION BY RANGE (`id`)
(PARTITION `p2` VALUES LESS THAN (30) ENGINE = InnoDB)"""


def test_partitions_dropped_come_back_by_reorganize_and_add():
    assert transition(DROPPED, PARTITIONED) == ([], [
        "REORGANIZE PARTITION `p2` INTO (PARTITION `p0` VALUES LESS THAN (10), "
        "PARTITION `p 1` VALUES LESS THAN (20) COMMENT = 'x', PARTITION `p2` VALUES LESS THAN (30))",
        "ADD PARTITION (PARTITION `p3` VALUES LESS THAN MAXVALUE)"])
    assert transition(PARTITIONED, DROPPED) == (["p0", "p 1", "p3"], [])
    assert transition(PARTITIONED, PARTITIONED) == ([], [])
    assert transition(PARTITIONED, PARTITIONED.replace("(30)", "(31)")) is None  # a kept partition changed
    assert transition(BEFORE, PARTITIONED) is None  # not partitioned


def test_partition_statements_parsed():
    assert parse(b"ALTER TABLE t DROP PARTITION p0, `p 1`").partitions == ("p0", "p 1")
    assert parse(b"ALTER TABLE t TRUNCATE PARTITION p1").partitions == ("p1",)
    assert parse(b"ALTER TABLE t ADD PARTITION (PARTITION p9 VALUES LESS THAN (99))").partitions == ()
