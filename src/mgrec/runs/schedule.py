"""The one claim loop, shared by every executor.

For each combination left to train: claim it (a ``flock`` in its folder); if another process
holds it, wait and look again, and read its result once it is released; otherwise hand it to the
executor. An executor only trains: ``submit`` a job, ``collect`` finished ones. The loop records
results, releases claims, moves the progress bar, and on an error or Ctrl-C cancels what is
pending and releases its claims.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from tqdm import tqdm

from mgrec.experiment import ExperimentBuilder
from mgrec.provenance import code_fingerprint
from mgrec.runs.folder import Claim
from mgrec.runs.grid import Grid
from mgrec.runs.logs import append_lines, log_into

log = logging.getLogger("mgrec")


@dataclass
class Job:
    """One claimed combination to train."""

    grid: Grid
    combo: dict[str, Any]
    key: str
    claim: Claim

    @property
    def number(self) -> int:
        return self.grid.numbers[self.key]


Outcome = dict[str, Any]
"""What training a job gave: ``{"row", "history"}``, or ``{"error": line}`` for a failure that
ends this combination only; either with ``"log"``: log lines to add to the run's train.log
(from a worker elsewhere)."""


class Executor(Protocol):
    """Trains claimed combinations (``runs.local``, ``runs.ray``)."""

    label: str

    def submit(self, job: Job) -> None:
        """Start training ``job`` (the local executor trains it before returning)."""

    def collect(self, timeout: float) -> list[tuple[Job, Outcome]]:
        """The jobs finished since the last call, waiting up to ``timeout`` s for one."""
        ...

    def pending(self) -> int:
        """How many submitted jobs have not been collected."""
        ...

    def cancel(self) -> None:
        """Stop every pending job (Ctrl-C, an error)."""


def drive(
    grids: Sequence[Grid],
    executor: Executor,
    builder: ExperimentBuilder,
    quiet: bool = False,
    on_trial: Callable[[Mapping[str, Any]], None] | None = None,
) -> list[str]:
    """Train what ``grids`` have left with ``executor``; returns the failures (one line each).
    ``on_trial`` is called with each combination's row as it becomes available."""
    total = sum(len(g.combos) for g in grids)
    bar = tqdm(
        total=total, initial=sum(len(g.results) for g in grids), desc=executor.label,
        unit="combo", dynamic_ncols=True, disable=True if quiet or total < 2 else None, position=0,
    )  # fmt: skip
    started, trained = time.perf_counter(), 0
    jobs: dict[int, Job] = {}  # id -> job, while submitted
    waiting: list[tuple[Grid, dict[str, Any], str]] = []
    failures: list[str] = []

    def done(grid: Grid, key: str) -> None:
        bar.update(1)
        if on_trial:
            on_trial(grid.results[key])

    def start(grid: Grid, combo: dict[str, Any], key: str, claim: Claim) -> None:
        row = grid.current(key, builder, combo)
        if row is not None:  # finished meanwhile by another process
            grid.results[key] = row
            claim.release()
            done(grid, key)
            return
        with log_into(grid.run.path):
            grid.announce(combo, key)
        job = Job(grid, combo, key, claim)
        jobs[id(job)] = job
        executor.submit(job)

    def finish(job: Job, outcome: Outcome) -> None:
        nonlocal trained
        jobs.pop(id(job), None)
        grid, key = job.grid, job.key
        try:
            append_lines(grid.run.path, outcome.get("log", []))
            if "error" in outcome:
                failures.append(f"combo-{job.number:03d}: {outcome['error']}")
                with log_into(grid.run.path):
                    log.warning(f"combo-{job.number:03d} failed: {outcome['error']}")
                return
            with log_into(grid.run.path):
                here = code_fingerprint(str(job.combo["model"]))
                if outcome["row"].get("code") != here:
                    log.warning(
                        f"warning: combo-{job.number:03d} was trained by other code on its worker "
                        f"({outcome['row'].get('code')}, here {here}): run the same mgrec on the "
                        "driver and every node (a re-run will retrain it)"
                    )
                grid.finish(key, outcome["row"], outcome["history"])
            trained += 1
            bar.set_postfix_str(f"{(time.perf_counter() - started) / trained:.1f}s/combo")
            done(grid, key)
        finally:
            job.claim.release()

    def settle() -> None:
        for job, outcome in executor.collect(timeout=1.0 if executor.pending() else 0.0):
            finish(job, outcome)

    try:
        for grid in grids:
            for combo, key in grid.todo:
                claim = grid.run.claim(grid.numbers[key])
                if claim is None:
                    with log_into(grid.run.path):
                        log.info(
                            f"combo-{grid.numbers[key]:03d}: another process is training it; "
                            "its result will be read when it finishes"
                        )
                    waiting.append((grid, combo, key))
                else:
                    start(grid, combo, key, claim)
                    settle()
        while executor.pending() or waiting:
            for item in list(waiting):  # held by another process: ours once it lets go
                grid, combo, key = item
                claim = grid.run.claim(grid.numbers[key])
                if claim is not None:
                    waiting.remove(item)
                    start(grid, combo, key, claim)
            if executor.pending():
                settle()
            elif waiting:
                time.sleep(0.5)
    except BaseException:
        executor.cancel()
        for job in jobs.values():
            job.claim.release()
        raise
    finally:
        bar.close()
    return failures
