"""Finding a Java 17+ runtime for Kafka and Cassandra."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

from streams.errors import RuntimeServiceError

MIN_JAVA = 17


def find_java() -> Path:
    """``$JAVA_HOME/bin/java`` or ``java`` on PATH, checked to be Java 17 or newer."""
    java_home = os.environ.get("JAVA_HOME")
    candidate = Path(java_home) / "bin" / "java" if java_home else None
    if candidate is None or not candidate.exists():
        found = shutil.which("java")
        if found is None:
            raise RuntimeServiceError(
                f"Java {MIN_JAVA}+ is required but no `java` was found (install OpenJDK 17 or set JAVA_HOME)"
            )
        candidate = Path(found)
    out = subprocess.run([str(candidate), "-version"], capture_output=True, text=True, check=False).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out)
    if match is None:
        raise RuntimeServiceError(f"cannot tell the Java version of {candidate}: {out.strip()[:120]}")
    major = int(match.group(1))
    if major == 1 and match.group(2):  # "1.8" style
        major = int(match.group(2))
    if major < MIN_JAVA:
        raise RuntimeServiceError(
            f"Java {MIN_JAVA}+ is required, {candidate} is Java {major} (set JAVA_HOME to a newer JDK)"
        )
    return candidate
