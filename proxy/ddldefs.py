"""Table definitions as SHOW CREATE TABLE gives them: their parts, and the ALTER from one to another.

Pure text functions, no server: proxy.ddlrecord records a table's definition before and after
an ALTER, and undoes it with ``inverse_alter(now, before)``. A definition is read line by line as
the server prints it (MariaDB and MySQL alike): a column per line (two spaces, its quoted name,
its definition), then the keys, foreign keys and checks, then the table options line
(``) ENGINE=...``), then partitions if any (proxy.ddlpartitions reads those).
"""

from __future__ import annotations

import re


def _unquote(name: str) -> str:
    return name[1:-1].replace("``", "`") if name.startswith("`") else name


_COLUMN = re.compile(r"^  (`(?:[^`]|``)+`) (.*?),?$")
_KEY = re.compile(r"^  ((?:PRIMARY KEY|(?:UNIQUE |FULLTEXT |SPATIAL )?KEY (`(?:[^`]|``)+`)|"
                  r"CONSTRAINT (`(?:[^`]|``)+`) (FOREIGN KEY|CHECK)).*?),?$")
_COMMENT = re.compile(r" COMMENT='((?:[^']|'')*)'")
_REBUILD_OPTIONS = {name: re.compile(rf"\b{name}=(\w+)") for name in ("ENGINE", "ROW_FORMAT")}


def _parts(create: str) -> tuple[dict[str, str], list[str], dict[str, tuple[str, str]], str]:
    """(column name -> definition, column order, key line -> (kind, name), table options)."""
    lines = create.splitlines()
    columns: dict[str, str] = {}
    keys: dict[str, tuple[str, str]] = {}
    for line in lines[1:-1]:
        key = _KEY.match(line)
        if key:
            if key.group(1).startswith("PRIMARY KEY"):
                keys[key.group(1)] = ("PRIMARY", "")
            elif key.group(2):
                keys[key.group(1)] = ("INDEX", key.group(2))
            else:
                keys[key.group(1)] = ("FOREIGN KEY" if key.group(4) == "FOREIGN KEY" else "CONSTRAINT",
                                      key.group(3))
            continue
        column = _COLUMN.match(line)
        if column:
            columns[column.group(1)] = column.group(2)
    options = next((line for line in lines if line.startswith(") ")), lines[-1])  # (partitions follow it)
    return columns, list(columns), keys, options


def inverse_alter(current: str, target: str) -> str:
    """The ALTER TABLE clauses that take a table from ``current`` (SHOW CREATE TABLE) to
    ``target``: drops first (foreign keys, keys, columns), then adds (columns in place, changed
    column definitions, keys, foreign keys), then the COMMENT. Columns are told apart by name:
    an added column dropped, a missing one added after its predecessor in ``target``."""
    cur_cols, cur_order, cur_keys, cur_opts = _parts(current)
    tgt_cols, tgt_order, tgt_keys, tgt_opts = _parts(target)
    clauses = []
    for line, (kind, name) in cur_keys.items():
        if line not in tgt_keys and kind == "FOREIGN KEY":
            clauses.append(f"DROP FOREIGN KEY {name}")
    for line, (kind, name) in cur_keys.items():
        if line not in tgt_keys and kind != "FOREIGN KEY":
            clauses.append({"PRIMARY": "DROP PRIMARY KEY", "INDEX": f"DROP INDEX {name}"}.get(
                kind, f"DROP CONSTRAINT {name}"))
    clauses += [f"DROP COLUMN {name}" for name in cur_cols if name not in tgt_cols]
    # A column that moved (MODIFY ... FIRST, or dropped and added again elsewhere) is not undone
    # by the drops and adds: then every column is placed, in ``target``'s order (the server
    # places positioned columns one by one, in the order of the clauses).
    placed = [name for name in cur_order if name in tgt_cols]
    for n, name in enumerate(tgt_order):
        if name not in cur_cols:
            placed.insert(placed.index(tgt_order[n - 1]) + 1 if n else 0, name)
    reorder = placed != tgt_order
    for n, name in enumerate(tgt_order):
        where = f"AFTER {tgt_order[n - 1]}" if n else "FIRST"
        if name not in cur_cols:
            clauses.append(f"ADD COLUMN {name} {tgt_cols[name]} {where}")
        elif reorder:
            clauses.append(f"MODIFY COLUMN {name} {tgt_cols[name]} {where}")
        elif cur_cols[name] != tgt_cols[name]:
            clauses.append(f"MODIFY COLUMN {name} {tgt_cols[name]}")
    for line, (kind, _) in tgt_keys.items():
        if line not in cur_keys and kind != "FOREIGN KEY":
            clauses.append(f"ADD {line}")
    for line, (kind, _) in tgt_keys.items():
        if line not in cur_keys and kind == "FOREIGN KEY":
            clauses.append(f"ADD {line}")
    for name, option in _REBUILD_OPTIONS.items():  # (absent: the default)
        cur_value, tgt_value = option.search(cur_opts), option.search(tgt_opts)
        if (cur_value and cur_value.group(1)) != (tgt_value and tgt_value.group(1)):
            clauses.append(f"{name}={tgt_value.group(1) if tgt_value else 'DEFAULT'}")
    cur_comment, tgt_comment = _COMMENT.search(cur_opts), _COMMENT.search(tgt_opts)
    if (cur_comment and cur_comment.group(1)) != (tgt_comment and tgt_comment.group(1)):
        clauses.append(f"COMMENT='{tgt_comment.group(1) if tgt_comment else ''}'")
    return ", ".join(clauses)


def primary_key(create: str) -> list[str]:
    """The primary key's columns, unquoted, in order ([]: none)."""
    found = re.search(r"^  PRIMARY KEY \(((?:`(?:[^`]|``)+`(?:,)?)+)\)", create, re.MULTILINE)
    return [_unquote(q) for q in re.findall(r"`(?:[^`]|``)+`", found.group(1))] if found else []


def lost_columns(current: str, target: str) -> list[str]:
    """Columns of ``current`` that going to ``target`` drops or changes."""
    cur, _, _, _ = _parts(current)
    tgt, _, _, _ = _parts(target)
    return [_unquote(c) for c, definition in cur.items() if tgt.get(c) != definition]


def column_names(create: str) -> list[str]:
    """The columns of a definition, unquoted, in order."""
    return [_unquote(c) for c in _parts(create)[1]]


def auto_updated_columns(create: str) -> list[str]:
    """The columns set to the time of any UPDATE that does not assign them (ON UPDATE
    CURRENT_TIMESTAMP), unquoted."""
    return [_unquote(name) for name, definition in _parts(create)[0].items() if " ON UPDATE " in definition.upper()]
