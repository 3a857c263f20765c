"""Runs one Python client adapter (tests/clients/pyclients.py) on the shared script in a process
of its own and prints its observations as JSON: ``python -m tests.clients.run_python NAME PLAN.json``.

Why a process of its own: mysql-connector's C extension links the newer OpenSSL its wheel
vendors; it loads only if it comes before Python's ``ssl`` module has loaded the system's older
libssl, and in the test process PyMySQL imported ``ssl`` long before. Hence the import order.
"""

import json
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import _mysql_connector  # noqa: F401  (must precede ssl, see above)

from tests.clients.clientscript import Kind, Step, blob_digest
from tests.clients.pyclients import ADAPTERS, Target, run_script


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8")
    raise TypeError(f"cannot encode {value!r}")


def main(name: str, plan_path: str) -> None:
    plan = json.loads(Path(plan_path).read_text(encoding="utf-8"))
    steps = [Step(s["name"], Kind(s["kind"]), s["sql"], tuple(s["params"])) for s in plan["steps"]]
    observed = run_script(ADAPTERS[name](Target(**plan["connection"])), steps)
    for step in steps:
        if step.kind == Kind.BLOB_READ:
            observed[step.name] = blob_digest(observed[step.name])
    json.dump({"observed": observed}, sys.stdout, default=_jsonable)


if __name__ == "__main__":
    main(*sys.argv[1:])
