"""Fetching the official Apache server artifacts from Maven Central with Maven."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from streams.errors import RuntimeServiceError

_DONE = ".complete"


def resolve_jars(pom: Path, dest: Path, properties: dict[str, str], log_file: Path) -> Path:
    """Copy the runtime dependencies of ``pom`` into ``dest`` once; later calls are free."""
    if (dest / _DONE).exists():
        return dest
    mvn = shutil.which("mvn")
    if mvn is None:
        raise RuntimeServiceError("Maven (`mvn`) is required to fetch the Apache artifacts; install it")
    dest.mkdir(parents=True, exist_ok=True)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        mvn, "-B", "-q", "-f", str(pom), "dependency:copy-dependencies",
        f"-DoutputDirectory={dest}", "-DincludeScope=runtime",
        *(f"-D{key}={value}" for key, value in properties.items()),
    ]  # fmt: skip
    with log_file.open("w") as log:
        result = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
        reason = _maven_reason(log_file)
        raise RuntimeServiceError(f"cannot fetch {pom.parent.name} artifacts: {reason} (log: {log_file})")
    (dest / _DONE).write_text(" ".join(f"{k}={v}" for k, v in properties.items()) + "\n")
    return dest


def _maven_reason(log_file: Path) -> str:
    for line in log_file.read_text(errors="replace").splitlines():
        if "[ERROR]" in line:
            return line.replace("[ERROR]", "").strip()[:200]
    return "maven failed"
