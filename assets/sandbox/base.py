"""What every simulated system shares: a folder, its ground truth, and the simulated time window."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any


class SimulatedSystem:
    def __init__(self, root: Path):
        self.root = Path(root)

    @property
    def truth_path(self) -> Path:
        return self.root / "ground_truth.json"

    def exists(self) -> bool:
        return self.truth_path.exists()

    def ground_truth(self) -> dict[str, Any]:
        truth: dict[str, Any] = json.loads(self.truth_path.read_text())
        return truth

    @staticmethod
    def window(end: date, days: int) -> tuple[datetime, datetime]:
        """(first instant, exclusive end) of `days` simulated days ending with `end`."""
        start = datetime.combine(end - timedelta(days=days - 1), datetime.min.time())
        return start, start + timedelta(days=days)
