"""proxy.execcomments: the statement a query of executable comments is to a given server."""

from __future__ import annotations

import pytest

from proxy.execcomments import unwrap, version_id

MARIADB = "10.11.19-MariaDB-0+deb12u1-log"
MYSQL = "8.0.36"


def test_version_ids():
    assert version_id(MARIADB) == 101119 and version_id("5.5.5-10.11.19-MariaDB") == 101119
    assert version_id(MYSQL) == 80036 and version_id("garbage") is None


@pytest.mark.parametrize(("query", "server", "statement"), [
    (b"/*!40000 ALTER TABLE `t` DISABLE KEYS */", MARIADB, b"ALTER TABLE `t` DISABLE KEYS"),
    (b"  /*!40000 ALTER TABLE `t` ENABLE KEYS */;\n", MYSQL, b"ALTER TABLE `t` ENABLE KEYS"),
    # mariadb-dump's view: three comments, one statement
    (b"/*!50001 CREATE ALGORITHM=UNDEFINED */\n/*!50013 DEFINER=`root`@`localhost` SQL SECURITY DEFINER */\n"
     b"/*!50001 VIEW `v` AS select 1 AS `x` */", MARIADB,
     b"CREATE ALGORITHM=UNDEFINED DEFINER=`root`@`localhost` SQL SECURITY DEFINER VIEW `v` AS select 1 AS `x`"),
    (b"/*!50003 CREATE*/ /*!50017 DEFINER=`u`@`%`*/ /*!50003 TRIGGER tr BEFORE INSERT ON t FOR EACH ROW BEGIN "
     b"SET NEW.a = 1; END */", MARIADB,
     b"CREATE DEFINER=`u`@`%` TRIGGER tr BEFORE INSERT ON t FOR EACH ROW BEGIN SET NEW.a = 1; END"),
    (b"/*! DROP TABLE t */", MYSQL, b"DROP TABLE t"),  # no version: always
    (b"/*M!100101 DROP TABLE t */", MARIADB, b"DROP TABLE t"),
    (b"/*!80000 CREATE TABLE a (id INT) */ /*!90000 COMMENT 'later' */", MYSQL, b"CREATE TABLE a (id INT)"),
])
def test_a_query_of_executable_comments_is_the_statement_they_spell(query, server, statement):
    assert unwrap(query, server) == statement


@pytest.mark.parametrize(("query", "server"), [
    (b"/*M!100101 DROP TABLE t */", MYSQL),  # MariaDB's own: a plain comment to MySQL
    (b"/*!90000 DROP TABLE t */", MYSQL),  # for a newer server: nothing runs
    (b"/*!40000 ALTER TABLE t DISABLE KEYS */ SELECT 1", MARIADB),  # text around them
    (b"/* plain */ DROP TABLE t", MARIADB), (b"DROP TABLE t", MARIADB),
    (b"/*!50001 VIEW v AS SELECT '*/' AS x */", MARIADB),  # a '*/' in a string: not ours to read
])
def test_anything_else_is_left_as_it_is(query, server):
    assert unwrap(query, server) is None


def test_a_packet_is_read_from_its_offset():
    packet = bytearray(b"\x27\x00\x00\x00\x03/*!40000 ALTER TABLE t DISABLE KEYS */")
    assert unwrap(memoryview(packet), MARIADB, 5) == b"ALTER TABLE t DISABLE KEYS"
