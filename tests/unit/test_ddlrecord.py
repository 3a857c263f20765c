"""proxy.ddlrecord: which statements are recorded, and the inverse ALTER from two definitions."""

from __future__ import annotations

import pytest

from proxy.ddlrecord import inverse_alter, parse


@pytest.mark.parametrize(("query", "kind", "tables"), [
    (b"CREATE TABLE t (id INT)", "create", [(None, "t")]),
    (b"/* x */ create table if not exists `d`.`t t` (id INT)", "create", [("d", "t t")]),
    (b"RENAME TABLE a TO b, d.c TO `e`.f", "rename", [(None, "a"), (None, "b"), ("d", "c"), ("e", "f")]),
    (b"ALTER TABLE t ADD COLUMN w INT, ADD INDEX (w), DROP INDEX v, DROP FOREIGN KEY f", "alter", [(None, "t")]),
])
def test_recorded(query, kind, tables):
    found = parse(query)
    assert found is not None and found.kind == kind and found.tables == tables


@pytest.mark.parametrize("query", [
    b"CREATE TABLE t AS SELECT 1", b"CREATE TEMPORARY TABLE t (id INT)", b"CREATE OR REPLACE TABLE t (id INT)",
    b"ALTER TABLE t RENAME TO u", b"ALTER TABLE t DROP COLUMN IF EXISTS v",
    b"ALTER TABLE t CONVERT TO CHARACTER SET utf8mb4",
    b"ALTER TABLE t DROP PARTITION p1", b"CREATE TABLE mysql.t (id INT)", b"RENAME TABLE a TO b; DROP TABLE c",
    b"COMMIT", b"CREATE INDEX i ON t (v)",
])
def test_not_recorded(query):
    assert parse(query) is None


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


@pytest.mark.parametrize(("query", "columns"), [
    (b"ALTER TABLE t DROP COLUMN v", ("v",)), (b"ALTER TABLE t DROP v, DROP INDEX i", ("v",)),
    (b"ALTER TABLE t MODIFY v BIGINT, CHANGE COLUMN `w x` y INT", ("v", "w x")),
    (b"ALTER TABLE t ALTER COLUMN v DROP DEFAULT, DROP PRIMARY KEY, ADD c INT", ()),
])
def test_destructive_columns(query, columns):
    assert parse(query).columns == columns
