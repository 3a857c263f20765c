"""MySQL's partial JSON updates (``binlog_row_value_options=PARTIAL_JSON``) made full again.

A PARTIAL_UPDATE_ROWS_EVENT (type 39) logs, for a JSON column an UPDATE changed with
JSON_SET / JSON_REPLACE / JSON_REMOVE, only the changes: a list of (operation, path, value)
diffs. Capture stores that event as it came (DESIGN.md decision 4); the decoder applies the
diffs to the column's before-image here, so every decoded after-image is a full document, and
the store's users (``changes``, the planner, the undo) never see a diff. When the before-image
does not hold the column (``binlog_row_image`` not FULL) there is nothing to apply the diffs
to: the after value stays a ``JsonDiffValue``, which nothing writes back.

Pure: bytes in, text out. The layout follows MySQL's ``Json_diff_vector::write_binary``
(sql/json_diff.cc): per diff an operation byte (0 REPLACE, 1 INSERT, 2 REMOVE), a packed-length
path in MySQL's JSON path syntax, and, unless REMOVE, a packed-length binary JSON value.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

REPLACE, INSERT, REMOVE = 0, 1, 2
OPERATIONS = {REPLACE: "REPLACE", INSERT: "INSERT", REMOVE: "REMOVE"}


class JsonDiffError(ValueError):
    """A diff that cannot be read, or cannot be applied to the document it names."""


@dataclass(frozen=True, slots=True)
class JsonDiff:
    operation: int  # REPLACE, INSERT or REMOVE
    path: str  # MySQL JSON path: $, $.key, $."a key", $[3], nested
    value: bytes | None  # binary JSON; None for REMOVE


@dataclass(frozen=True, slots=True)
class JsonDiffValue:
    """An after-image JSON value logged as diffs whose before-image was not in the event."""

    diffs: tuple[JsonDiff, ...]

    def __str__(self) -> str:
        from proxy.changelog.decoder import json_binary_to_text

        parts = [f"{OPERATIONS[d.operation]} {d.path}" + ("" if d.value is None else
                                                          f" {json_binary_to_text(d.value)}")
                 for d in self.diffs]
        return "partial JSON: " + "; ".join(parts)


def read_diffs(data: bytes) -> tuple[JsonDiff, ...]:
    """The diffs of one column's partial value (without its 4-byte length)."""
    from proxy.changelog.decoder import read_packed_int

    diffs = []
    pos = 0
    try:
        while pos < len(data):
            operation = data[pos]
            if operation not in OPERATIONS:
                raise JsonDiffError(f"unknown JSON diff operation {operation}")
            length, pos = read_packed_int(data, pos + 1)
            path = bytes(data[pos:pos + length]).decode("utf-8", "surrogateescape")
            pos += length
            value = None
            if operation != REMOVE:
                length, pos = read_packed_int(data, pos)
                value = bytes(data[pos:pos + length])
                pos += length
            diffs.append(JsonDiff(operation, path, value))
    except IndexError as exc:
        raise JsonDiffError(f"truncated JSON diff ({exc})") from exc
    if pos != len(data):
        raise JsonDiffError("JSON diffs overran their length")
    return tuple(diffs)


# -- documents as trees ---------------------------------------------------------------------------
# A document is held as dicts (objects), lists (arrays) and ``_Leaf``s (a scalar already
# rendered as MySQL prints it), so opaque scalars (DECIMAL, DATETIME in JSON) keep MySQL's
# spelling through a patch.


class _Leaf(str):
    __slots__ = ()


def to_tree(raw: bytes) -> Any:
    """A binary JSON document as a tree (see above)."""
    from proxy.changelog import decoder

    if not raw:
        return _Leaf("null")
    return _tree(raw, raw[0], 1, decoder)


def _tree(raw: bytes, kind: int, pos: int, decoder: Any) -> Any:
    if kind > 3:  # a scalar: the decoder renders it
        return _Leaf(decoder._json_value(raw, kind, pos))
    large = kind in (1, 3)
    size = 4 if large else 2
    count = int.from_bytes(raw[pos:pos + size], "little")
    entries = pos + 2 * size
    keys = []
    if kind in (0, 1):
        for i in range(count):
            at = entries + i * (size + 2)
            offset = int.from_bytes(raw[at:at + size], "little")
            length = int.from_bytes(raw[at + size:at + size + 2], "little")
            keys.append(raw[pos + offset:pos + offset + length].decode("utf-8", "surrogateescape"))
        entries += count * (size + 2)
    inline = {4, 5, 6} | ({7, 8} if large else set())
    values = []
    for i in range(count):
        at = entries + i * (1 + size)
        entry_kind = raw[at]
        if entry_kind in inline:
            values.append(_tree(raw, entry_kind, at + 1, decoder))
        else:
            offset = int.from_bytes(raw[at + 1:at + 1 + size], "little")
            values.append(_tree(raw, entry_kind, pos + offset, decoder))
    return dict(zip(keys, values, strict=True)) if kind in (0, 1) else values


def render(tree: Any) -> str:
    """A tree as MySQL prints JSON: object keys in its storage order (shorter first, then by
    their bytes), ``", "`` and ``": "`` between items."""
    from proxy.changelog.decoder import _json_quote

    if isinstance(tree, dict):
        keys = sorted(tree, key=lambda k: (len(k.encode("utf-8", "surrogateescape")),
                                           k.encode("utf-8", "surrogateescape")))
        return "{" + ", ".join(f"{_json_quote(k)}: {render(tree[k])}" for k in keys) + "}"
    if isinstance(tree, list):
        return "[" + ", ".join(render(item) for item in tree) + "]"
    return str(tree)


_LEG = re.compile(r'\.(?:"((?:[^"\\]|\\.)*)"|([^.\[\s]+))|\[(\d+)\]')


def parse_path(path: str) -> list[str | int]:
    """``$.a."b c"[2]`` -> ['a', 'b c', 2]."""
    text = path.strip()
    if not text.startswith("$"):
        raise JsonDiffError(f"JSON path {path!r} does not start with $")
    legs: list[str | int] = []
    pos = 1
    while pos < len(text):
        match = _LEG.match(text, pos)
        if match is None:
            raise JsonDiffError(f"cannot read JSON path {path!r} at {pos}")
        quoted, bare, index = match.groups()
        if index is not None:
            legs.append(int(index))
        else:
            legs.append(json.loads(f'"{quoted}"') if quoted is not None else bare)
        pos = match.end()
    return legs


def apply_diffs(before: bytes, diffs: tuple[JsonDiff, ...]) -> str:
    """The document ``before`` (binary JSON) with ``diffs`` applied, as MySQL's JSON text."""
    try:
        tree = to_tree(before)
        for diff in diffs:
            tree = _apply(tree, diff)
    except (IndexError, KeyError, UnicodeDecodeError) as exc:
        raise JsonDiffError(f"cannot apply JSON diffs ({exc!r})") from exc
    return render(tree)


def _apply(tree: Any, diff: JsonDiff) -> Any:
    legs = parse_path(diff.path)
    value = to_tree(diff.value) if diff.value is not None else None
    if not legs:
        if diff.operation != REPLACE:
            raise JsonDiffError(f"{OPERATIONS[diff.operation]} of the whole document")
        return value
    parent = tree
    for leg in legs[:-1]:
        parent = _child(parent, leg, diff.path)
    last = legs[-1]
    if isinstance(parent, dict) and isinstance(last, str):
        if diff.operation == REMOVE:
            parent.pop(last, None)
        else:
            parent[last] = value
    elif isinstance(parent, list) and isinstance(last, int):
        if diff.operation == REMOVE:
            del parent[last]
        elif diff.operation == INSERT:
            parent.insert(last, value)
        else:
            parent[last] = value
    else:
        raise JsonDiffError(f"path {diff.path!r} does not fit the document")
    return tree


def _child(node: Any, leg: str | int, path: str) -> Any:
    try:
        if isinstance(node, dict) and isinstance(leg, str):
            return node[leg]
        if isinstance(node, list) and isinstance(leg, int):
            return node[leg]
    except (KeyError, IndexError):
        pass
    raise JsonDiffError(f"path {path!r} names nothing in the before-image")
