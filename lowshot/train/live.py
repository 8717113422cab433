"""The one path for training scalars and sample images: a thin wrapper over dvclive.

Only the main process logs; with no directory (tests, other ranks) every call does nothing.
dvclive is created with `dvcyaml=None` (the DVC stage declares its own metrics and plots) and
`save_dvc_exp=False` (the stage, not the logger, records experiments).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lowshot.fsutil import atomic_write_text
from lowshot.train import distributed

log = logging.getLogger(__name__)


class LiveLog:
    """dvclive's Live in `directory` on the main process, or a no-op.

    `resume=True` keeps the history already in `directory` (a resumed run) up to, not
    including, `resume_step` (rows a killed run logged after its last saved state are dropped, so
    the resumed run's rows do not repeat steps); otherwise it starts afresh. `log(step, scalars)`
    writes one row per scalar at `step`; `image(name, pil)` writes `directory/plots/images/<name>`.
    """

    def __init__(self, directory: str | os.PathLike | None, *, resume: bool = False,
                 resume_step: int | None = None) -> None:
        self.live: Any = None
        if directory is None or not distributed.is_main():
            return
        from dvclive import Live

        if resume and resume_step is not None:
            _truncate_history(Path(directory), resume_step)

        self.live = Live(str(Path(directory)), dvcyaml=None, resume=resume, save_dvc_exp=False, report=None)

    @property
    def enabled(self) -> bool:
        return self.live is not None

    def log(self, step: int, scalars: Mapping[str, float]) -> None:
        """Record `scalars` (hierarchical names like `loss/G`) at `step` and update the summary."""
        if self.live is None:
            return
        self.live.step = step
        for name, value in scalars.items():
            self.live.log_metric(name, float(value))
        self.live.make_summary()

    def image(self, name: str, image: Any) -> None:
        """Save a PIL image (or anything dvclive's log_image takes) under plots/images/`name`."""
        if self.live is not None:
            self.live.log_image(name, image)

    def close(self) -> None:
        if self.live is not None:
            self.live.end()
            self.live = None

    def __enter__(self) -> LiveLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _truncate_history(directory: Path, step: int) -> None:
    """Drop the rows at or after `step` from dvclive's metric histories (plots/metrics/**/*.tsv)."""
    for tsv in (directory / "plots" / "metrics").rglob("*.tsv"):
        header, *rows = tsv.read_text().splitlines() or [""]
        columns = header.split("\t")
        if "step" not in columns:
            continue
        at = columns.index("step")
        kept = [row for row in rows if row.split("\t")[at].isdigit() and int(row.split("\t")[at]) < step]
        if len(kept) < len(rows):
            atomic_write_text(tsv, "\n".join([header, *kept]) + "\n")
