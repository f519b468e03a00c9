"""Train grids: open each, train what is left with the configured executor, close each.

Data flow: config -> ``experiment`` (the composition root builds each combination's data,
evaluators, batches and model inputs) -> ``trial`` (trains one combination, resumably) -> the run
folder (``runs.folder``: numbering, claims, results.jsonl) -> ``report`` (tables, winners,
plots). A combination another process is training (two identical commands at once) is left to
it and its result read when it finishes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mgrec.errors import UserError
from mgrec.experiment import ExperimentBuilder
from mgrec.runs.grid import close_grid, folders, open_grid
from mgrec.runs.local import LocalExecutor
from mgrec.runs.logs import errors_logged, setup_logging
from mgrec.runs.schedule import drive


def train_grids(
    configs: Sequence[Mapping[str, Any]],
    quiet: bool = False,
    argv: Sequence[str] | None = None,
    on_trial: Callable[[Mapping[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Train several grids together (a study's seeds and arms) with the configured executor
    (``executor: local`` or ``ray``); returns each grid's outcome (see ``train_grid``).

    ``quiet`` keeps the console to warnings (each train.log still gets everything) and hides the
    progress bars; ``on_trial`` is called with each combination's row as it becomes available
    (trained or found finished)."""
    setup_logging(quiet=quiet)
    builder = ExperimentBuilder()
    grids = [open_grid(config, builder, argv, on_trial) for config in configs]
    with errors_logged(folders(grids)):
        if str(configs[0].get("executor") or "local") == "ray":
            from mgrec.runs import ray

            failures = ray.run_on_ray(grids, builder, configs[0], quiet=quiet, on_trial=on_trial)
        else:
            failures = drive(grids, LocalExecutor(builder, quiet), builder, quiet, on_trial)
        outcomes = [close_grid(grid) for grid in grids]
        if failures:
            shown = "; ".join(failures[:3]) + (
                f"; and {len(failures) - 3} more" if len(failures) > 3 else ""
            )
            raise UserError(
                f"{len(failures)} combination(s) failed (the others are recorded; a re-run "
                f"retries the failed ones): {shown}"
            )
    return outcomes


def train_grid(
    config: Mapping[str, Any],
    quiet: bool = False,
    argv: Sequence[str] | None = None,
    on_trial: Callable[[Mapping[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train every grid combination (skipping finished ones) and report both winners. Returns
    ``{"results": [...], "by_valid": ..., "by_test": ..., "run_dir": ...}``."""
    (outcome,) = train_grids([config], quiet=quiet, argv=argv, on_trial=on_trial)
    return outcome
