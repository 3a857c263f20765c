"""Packaging stays valid: docker-compose.yml parses, and the Docker image is built the way the
README installs auroratrack."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def compose_command() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return None


def test_docker_compose_file_is_valid():
    command = compose_command()
    if command is None:
        pytest.skip("neither docker-compose nor the docker compose plugin is installed")
    result = subprocess.run([*command, "-f", str(ROOT / "docker-compose.yml"), "config", "--services"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) == {"mysql", "auroratrack"}


def test_dockerfile_installs_the_package_like_the_readme():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip install" in dockerfile and "python -m venv" in dockerfile
    assert "COPY pyproject.toml setup.py" in dockerfile  # the compiled tracker is built in
    assert 'ENTRYPOINT ["auroratrack"]' in dockerfile
