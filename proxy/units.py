"""Parsing of the human units on the command line: durations (``24h``, ``2h30m``) and sizes
(``10GiB``). Pure functions; errors are ``ValueError`` with the accepted forms in the message."""

from __future__ import annotations

import re

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|s|m|h|d|w)")
_DURATION_SECONDS = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400,
                     "w": 604800}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?", re.IGNORECASE)
_SIZE_FACTORS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "kib": 1024, "ki": 1024, "m": 1e6, "mb": 1e6,
                 "mib": 1024**2, "mi": 1024**2, "g": 1e9, "gb": 1e9, "gib": 1024**3, "gi": 1024**3,
                 "t": 1e12, "tb": 1e12, "tib": 1024**4, "ti": 1024**4}


def parse_duration(text: str) -> float:
    """Seconds in ``90``, ``90s``, ``15m``, ``2h30m``, ``1d12h``, ``500ms``."""
    value = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        return float(value)
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(value):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(value) or not value:
        raise ValueError(f"{text!r} is not a duration (examples: 90s, 15m, 2h30m, 1d)")
    return total


def parse_size(text: str) -> int:
    """Bytes in ``1048576``, ``512MiB``, ``10GB``, ``2G``."""
    match = _SIZE.fullmatch(text.strip())
    if not match or (match.group(2) or "").lower() not in _SIZE_FACTORS:
        raise ValueError(f"{text!r} is not a size (examples: 500MiB, 10GiB, 1073741824)")
    return int(float(match.group(1)) * _SIZE_FACTORS[(match.group(2) or "").lower()])


def format_duration(seconds: float) -> str:
    seconds = int(round(seconds))
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            parts.append(f"{seconds // size}{unit}")
            seconds %= size
    if seconds or not parts:
        parts.append(f"{seconds}s")
    return "".join(parts)
