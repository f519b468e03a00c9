"""The local executor: each claimed combination trained in this process, one after another."""

from __future__ import annotations

from mgrec.experiment import ExperimentBuilder
from mgrec.runs.logs import log_into
from mgrec.runs.schedule import Job, Outcome
from mgrec.trial import run as run_trial


class LocalExecutor:
    """Trains a job as soon as it is submitted (a user error ends the whole run, as a
    mistake in the settings would end every combination)."""

    label = "grid"

    def __init__(self, builder: ExperimentBuilder, quiet: bool = False) -> None:
        self.builder, self.quiet = builder, quiet
        self._finished: list[tuple[Job, Outcome]] = []

    def submit(self, job: Job) -> None:
        with log_into(job.grid.run.path):
            experiment = self.builder.build(job.combo)
            row, history = run_trial(experiment, job.grid.files(job.key), self.quiet, position=1)
        self._finished.append((job, {"row": row, "history": history}))

    def collect(self, timeout: float) -> list[tuple[Job, Outcome]]:
        finished, self._finished = self._finished, []
        return finished

    def pending(self) -> int:
        return len(self._finished)

    def cancel(self) -> None:
        self._finished.clear()
