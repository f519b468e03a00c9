"""mgrec from Python: the one path from a model and a dataset to trained, evaluated results,
which the command line calls too (as RecBole's ``run_recbole``)::

    import mgrec
    outcome = mgrec.train(model="VBPR", dataset="synthetic", epochs=3, mg=False)
    outcome["by_valid"]["test"]["recall@20"]

config (YAML layers + overrides) -> the grid -> ``runs.train_grid`` (each combination built by
the composition root ``experiment`` and trained by ``trial``) -> the outcome, also written to
``output`` when given.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mgrec import atomic
from mgrec import config as configuration
from mgrec.commands.output import check_output, finish_output
from mgrec.runs.logs import errors_logged
from mgrec.runs.train import train_grid


def train(
    model: str = "DRAGON",
    dataset: str = "synthetic",
    mg: bool = True,
    config_files: Iterable[str | Path] = (),
    output: str | Path | None = None,
    quiet: bool = False,
    argv: Sequence[str] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Train (or resume) a model's grid on a dataset and return its outcome.

    Args:
        model: a model name (``mgrec.models.names()``), an entry-point plugin's name, or an
            import path ``module:Class`` of a ``Recommender`` subclass.
        dataset: a dataset folder under ``data_path`` (``synthetic`` is made on first use).
        mg: Mirror Gradient on (the reference's default) or off (the ablation).
        config_files: extra YAML files, merged after the shipped ones.
        output: a JSON file for the validation winner's metrics.
        quiet: warnings only on the console (the run's train.log gets everything).
        argv: the command line, recorded in the run's config.yaml.
        **overrides: config keys, as ``--key=value`` would set them (a list makes a grid).

    Returns:
        ``{"results": [row per combination], "by_valid": winner row, "by_test": winner row,
        "run_dir": folder}``; each row holds ``params``, ``valid`` and ``test`` metrics, the
        checkpoint and the fingerprints of the data and code behind it.
    """
    config = configuration.load_config(
        model, dataset, mg=mg, config_files=[Path(f) for f in config_files], overrides=overrides
    )
    return train_config(
        config, output=None if output is None else Path(output), quiet=quiet, argv=argv
    )


def train_config(
    config: Mapping[str, Any],
    output: Path | None = None,
    quiet: bool = False,
    argv: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Train a resolved config's grid (``config.load_config``); write ``output``."""
    if output is not None:
        check_output(output)
    outcome = train_grid(config, quiet=quiet, argv=argv)
    if output is not None:
        unwritten = (
            f"the run is finished and recorded in {outcome['run_dir']}, but --output is not "
            "written; re-running the command writes it (finished combinations are not trained "
            "again)"
        )
        with errors_logged([Path(outcome["run_dir"])]), atomic.write_point(output, unwritten):
            finish_output(output, outcome["by_valid"], config)
    return outcome
