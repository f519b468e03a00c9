"""``--dry_run``: the resolved grid, each combination's state (finished, to train, to retrain
and why), how many trials would run at once, and an estimate of the time left. Writes
nothing."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

from mgrec import config as configuration
from mgrec.data.dataset import file_digest, load_dataset
from mgrec.data.files import dataset_dir
from mgrec.experiment import check_combination, model_class
from mgrec.runs.folder import RunFolder
from mgrec.runs.grid import FINISHED, status
from mgrec.trial import label


def dry_run(config: Mapping[str, Any]) -> dict[str, Any]:
    """Print the plan of ``config``'s grid; returns its counts and estimate."""
    combos = configuration.grid(config)
    for combo in combos:
        check_combination(combo)
    run = RunFolder(config)
    recorded = run.results()
    keys = [configuration.identity(c) for c in combos]
    numbers = run.numbers()
    varying = [
        k for k in config["hyper_parameters"] if len(configuration.grid_values(config, k)) > 1
    ]
    inputs = current_inputs(config)
    states = {
        key: status(recorded.get(key), combo, inputs)[0]
        for combo, key in zip(combos, keys, strict=True)
    }
    mode = {"mg": "with Mirror Gradient", "plain": "without Mirror Gradient"}.get(
        configuration.strategy_name(config), f"with {configuration.strategy_label(config)}"
    )
    print(
        f"{config['model']} on {config['dataset']}, {mode}: {len(combos)} "
        f"combination(s); varying: {', '.join(varying) or 'nothing'}"
    )
    print(f"run folder: {run.path}{'' if run.path.is_dir() else ' (not created yet)'}")
    for combo, key in zip(combos, keys, strict=True):
        number = f"combo-{numbers[key]:03d}" if key in numbers else "(new)    "
        shown = ", ".join(f"{k}={combo['params'][k]}" for k in varying) or label(combo["params"])
        print(f"  {number}  {states[key]:26} {shown}")
    finished = [recorded[k] for k in keys if states[k] == FINISHED]
    left = len(combos) - len(finished)
    at_once = concurrency_line(config, left)
    estimate = None
    line = f"{len(finished)} finished, {left} to train"
    if finished and left:
        estimate = sum(r["seconds"] for r in finished) / len(finished) * left / max(at_once[0], 1)
        line += f": about {duration(estimate)} at the finished ones' mean"
    elif left:
        line += "; no estimate yet (nothing finished)"
    print(line)
    print(at_once[1])
    return {
        "combinations": len(combos),
        "finished": len(finished),
        "estimate_s": estimate,
        "concurrent": at_once[0],
    }


def current_inputs(config: Mapping[str, Any]) -> dict[str, str] | None:
    """The fingerprints a combination would record today, or None when the data is not there
    yet (the embedded dataset before first use): read-only."""
    folder = dataset_dir(config)
    if not folder.is_dir():
        return None
    cls = model_class(str(config["model"]))
    data = load_dataset(config, cls.modalities)
    inputs = dict(data.sources)
    graph_file = folder / str(config["user_graph_dict_file"])
    if cls.needs_user_graph and graph_file.is_file():
        inputs["user_graph"] = file_digest(graph_file)
    return inputs


def concurrency_line(config: Mapping[str, Any], left: int) -> tuple[int, str]:
    """(trials at once, a line saying so) for the configured executor."""
    if str(config.get("executor") or "local") != "ray":
        return 1, "executor local: one combination at a time"
    from mgrec.runs import ray

    if config.get("ray_address"):
        cpus, gpus = ray.resources(config, cluster_gpus=1.0)
        return 1, (
            f"executor ray at {config['ray_address']}: each trial asks for {cpus:g} CPU(s) and "
            f"{gpus:g} GPU(s); how many run at once depends on the cluster"
        )
    import torch

    machine_cpus = os.cpu_count() or 1
    machine_gpus = torch.cuda.device_count() if config.get("use_gpu") else 0
    cpus, gpus = ray.resources(config, machine_gpus)
    fit = ray.concurrency(cpus, gpus, machine_cpus, machine_gpus)
    at_once = max(min(fit, left), 0)
    return max(at_once, 1), (
        f"executor ray (a local instance: {machine_cpus} CPUs, {machine_gpus} GPUs): {cpus:g} CPU(s) "
        f"and {gpus:g} GPU(s) per trial, so {fit} trial(s) at once"
    )


def duration(seconds: float) -> str:
    """``1h 02m``, ``3m 05s`` or ``12s``."""
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"
