"""Clients that run the shared script in processes of their own: Node's mysql2 (through
tests/clients/node/run_script.js) and Python adapters that need a fresh interpreter
(tests/clients/run_python.py). Both read a JSON plan and print their observations as JSON."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tests.clients.clientscript import ClientRun, Step, blob, steps_as_json
from tests.clients.pyclients import Target

CLIENTS_DIR = Path(__file__).resolve().parent
PROJECT_DIR = CLIENTS_DIR.parents[1]  # where ``tests`` is importable from
NODE_DIR = CLIENTS_DIR / "node"


def node_missing() -> str | None:
    """Why the Node client cannot run here, or None if it can."""
    if shutil.which("node") is None:
        return "node is not on PATH"
    if not (NODE_DIR / "node_modules" / "mysql2").is_dir():
        return f"mysql2 is not installed: cd {NODE_DIR} && npm install (make test does it)"
    return None


def write_plan(target: Target, steps: list[Step], workdir: Path, **extra: Any) -> Path:
    """The plan file a client in another process reads."""
    plan = {"connection": asdict(target), "steps": steps_as_json(steps), **extra}
    path = workdir / "plan.json"
    path.write_text(json.dumps(plan), encoding="utf-8")
    return path


def _run_json(command: list[str], cwd: Path, timeout: float,
              env: dict[str, str] | None = None) -> ClientRun:
    """Run a client process; its observations come as JSON on stdout, its log is stderr."""
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          env=env)
    log = f"{command[0]} exit status {done.returncode}; stderr:\n{done.stderr[-6000:]}"
    try:
        output = json.loads(done.stdout)
    except json.JSONDecodeError:
        return ClientRun({}, f"{log}\nstdout:\n{done.stdout[-4000:]}")
    if output.get("failure"):
        log += f"\nfailure: {output['failure']}"
    return ClientRun(output["observed"], log)


def run_node(target: Target, steps: list[Step], workdir: Path, infile: Path,
             timeout: float = 120.0) -> ClientRun:
    """Node's mysql2 runs the script through ``target``."""
    blob_path = workdir / "blob.bin"
    blob_path.write_bytes(blob())
    plan = write_plan(target, steps, workdir, blob_path=str(blob_path), infile_path=str(infile))
    return _run_json(["node", str(NODE_DIR / "run_script.js"), str(plan)], NODE_DIR, timeout)


def run_python_process(name: str, target: Target, steps: list[Step], workdir: Path,
                       timeout: float = 120.0) -> ClientRun:
    """The Python adapter ``name`` runs the script in a fresh interpreter."""
    plan = write_plan(target, steps, workdir)
    python_path = os.pathsep.join(filter(None, [str(PROJECT_DIR), os.environ.get("PYTHONPATH")]))
    command = [sys.executable, "-m", "tests.clients.run_python", name, str(plan)]
    env = {**os.environ, "PYTHONPATH": python_path}
    return _run_json(command, PROJECT_DIR, timeout, env)
