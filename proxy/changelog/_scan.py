"""The decoder's bulk row loop, written for mypyc: every FULL row image of a rows event.

Why a module of its own: the backtrack planner decodes up to millions of row images, and in
pure Python that loop is most of its time. ``setup.py`` compiles a SHA-256-stamped copy of this
file with mypyc as ``proxy.changelog._scan_native`` (when a C compiler is there), and
``decoder`` uses the compiled loop only when the stamp matches this source; otherwise it keeps
its own generated pure-Python loop (faster than this one when interpreted). Both must return
exactly the same values: the common column kinds are read inline here, every other column
through the decoder's per-column reader.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

# Column kinds (see decoder._scan_kinds): the low two bits say how the value is read.
OTHER: Final = 0  # the column's decoder reader is called
INT: Final = 1  # little-endian integer; bits 2-3 the size (1, 2, 4 or 8 bytes), bit 4 signedness
STR1: Final = 2  # bytes behind a 1-byte length
STR2: Final = 3  # bytes behind a 2-byte little-endian length
SIGNED: Final = 16
INT_SIZES: Final = (1, 2, 4, 8)


def read_full_images(buf: bytes, pos: int, stop: int, kinds: list[int],
                     readers: list[Callable[[bytes, int], tuple[Any, int]]],
                     null_len: int) -> tuple[list[tuple], int]:
    """Every complete row image from ``pos`` up to ``stop``; returns (images, position after).

    ``kinds`` and ``readers`` have one entry per column; ``null_len`` is the byte length of the
    null bitmap at the start of each image. Truncated input raises IndexError (as the pure
    reader does); reading past ``stop`` shows in the returned position."""
    images: list[tuple] = []
    width = len(kinds)
    while pos < stop:
        nulls = buf[pos] if null_len == 1 else int.from_bytes(buf[pos:pos + null_len], "little")
        pos += null_len
        values: list[Any] = []
        for i in range(width):
            if nulls >> i & 1:
                values.append(None)
                continue
            kind = kinds[i]
            base = kind & 3
            if base == STR1:
                end = pos + 1 + buf[pos]
                values.append(buf[pos + 1:end])
                pos = end
            elif base == STR2:
                end = pos + 2 + (buf[pos] | buf[pos + 1] << 8)
                values.append(buf[pos + 2:end])
                pos = end
            elif base == INT:
                size = INT_SIZES[(kind >> 2) & 3]
                if size == 1:
                    value = buf[pos]
                elif size == 2:
                    value = buf[pos] | buf[pos + 1] << 8
                elif size == 4:
                    value = buf[pos] | buf[pos + 1] << 8 | buf[pos + 2] << 16 | buf[pos + 3] << 24
                else:
                    if pos + 8 > len(buf):
                        raise IndexError("index out of range")
                    value = int.from_bytes(buf[pos:pos + 8], "little")
                if kind & SIGNED and value >> (8 * size - 1):
                    value -= 1 << (8 * size)
                values.append(value)
                pos += size
            else:
                # a variable of its own: mypyc types ``value`` as int and would check this one
                other: Any
                other, pos = readers[i](buf, pos)
                values.append(other)
        images.append(tuple(values))
    return images, pos
