"""Append-only trial journal: a killed search restarts without redoing finished trials."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from detsearch.atomic import append_line
from detsearch.selector.curves import Curve

logger = logging.getLogger(__name__)

JOURNAL_FILE = "journal.jsonl"


class Journal:
    """Finished trials by key, stored one JSON object per line in ``directory/journal.jsonl``.

    Each record is one line, durable before the search goes on (`atomic.append_line`), so a
    kill can at worst leave a truncated last line; such a line is ignored on load (that trial
    simply runs again). ``directory=None`` keeps the journal in memory.
    """

    def __init__(self, directory: str | os.PathLike | None = None):
        self._records: dict[str, dict[str, Any]] = {}
        self.path = None if directory is None else Path(directory) / JOURNAL_FILE
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            for number, line in enumerate(f, start=1):
                try:
                    record = json.loads(line)
                    Curve.from_dict(record["curve"])
                    self._records[record["key"]] = record
                except (ValueError, KeyError, TypeError):
                    logger.warning("%s:%d: unreadable journal line ignored (an interrupted write)", self.path, number)

    def get(self, key: str) -> Curve | None:
        record = self._records.get(key)
        return None if record is None else Curve.from_dict(record["curve"])

    def put(self, key: str, name: str, trial: dict[str, Any], curve: Curve) -> None:
        record = {"key": key, "name": name, "trial": trial, "curve": curve.to_dict()}
        self._records[key] = record
        if self.path is None:
            return
        append_line(self.path, (json.dumps(record, sort_keys=True) + "\n").encode())

    def __len__(self) -> int:
        return len(self._records)
