"""First contact: a real client through the proxy to the real server."""

import pymysql


def test_query_through_proxy(proxy, mysql_server, database):
    conn = pymysql.connect(host="127.0.0.1", port=proxy.port, user=mysql_server.user,
                           password=mysql_server.password, database=database, autocommit=True)
    with conn, conn.cursor() as cur:
        cur.execute("CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(10))")
        cur.execute("INSERT INTO t VALUES (1, 'one'), (2, 'two')")
        cur.execute("SELECT v FROM t ORDER BY id")
        assert cur.fetchall() == (("one",), ("two",))
        session = proxy.call_soon(lambda: proxy.service.proxy.session_infos())
        mine = [s for s in session if s.database == database]
        assert len(mine) == 1 and mine[0].state == "idle" and mine[0].user == mysql_server.user
