"""The protocol of a study: its arms, its seeds and budget, the grids each seed trains, the study
folder, and what each seed's arms chose.

An **arm** is one model trained with one strategy (``plain``, ``mg``, ``sam``, ``asam``). For each
study seed s (the config's first seed, then s+1, s+2, ...) every arm tunes its own grid: the
model's grid G times the strategy's A (MG: alpha1 x alpha2 x beta; SAM/ASAM: rho; plain: nothing),
|G| x |A| combinations, and keeps its winner **by validation**. An arm may train its grid several
times from the seeds s, s + 1000, s + 2000, ... (replicas), so that the arms of one model get
equal budgets (``study_budget``):

- ``equal`` (the default): as many trained models (and candidates to choose from) as the largest
  arm of that model; an arm whose grid is k times smaller trains it k times.
- ``equal_grad``: as many gradient evaluations (forward-backward passes) as the costliest arm,
  planned at full epochs: plain takes 1 per batch, MG 1 + 1/beta (its mirror pass every beta-th
  batch), SAM/ASAM 2. The counted cost, after early stopping, is in the report.
- ``reference``: one replica each, as the paper's tables did.

Replica counts are whole numbers: each arm gets the count r >= 1 that brings r x its one-replica
cost closest to the largest arm's (ties: the smaller r), so arms whose sizes do not divide match
as closely as whole replicas allow (the report states the planned costs).

``--study mg`` is the special case of one model and the arms ``mg`` and ``plain`` (``Protocol``);
``--study compare`` any models and strategies (``Plan``). Beside the validation winner, labelled,
each record keeps what the reference's protocol would have reported from the same runs: the
winner selected **by test**, from the first replica only.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from mgrec import atomic
from mgrec import config as configuration
from mgrec.errors import UserError
from mgrec.experiment import check_combination
from mgrec.index import STUDY_FILE
from mgrec.models import registry
from mgrec.paths import project_path
from mgrec.report import pick_winner
from mgrec.runs.folder import RunFolder
from mgrec.tables import ARM_SUFFIX

REPLICA_STRIDE = 1000  # seed offset between an arm's replicas
MG_GRID_KEYS = ("alpha1", "alpha2", "beta")
# The keys of each strategy's own grid (the arm's candidates beside the model's grid)
STRATEGY_GRID_KEYS: dict[str, tuple[str, ...]] = {
    "plain": (), "mg": MG_GRID_KEYS, "sam": configuration.SAM_KEYS,
    "asam": configuration.SAM_KEYS,
}  # fmt: skip
BUDGETS = ("equal", "equal_grad", "reference")


# --- cost: gradient evaluations -----------------------------------------------------------------


def passes_per_batch(combo: Mapping[str, Any]) -> float:
    """The forward-backward passes one batch of ``combo`` takes on average, for planning: plain
    1, MG 1 + 1/beta, SAM and ASAM 2."""
    strategy = configuration.strategy_name(combo)
    if strategy == "mg":
        return 1.0 + 1.0 / int(combo["beta"])
    return 2.0 if strategy in configuration.SAM_STRATEGIES else 1.0


def gradient_evaluations(combo: Mapping[str, Any], epochs: int, batches: int) -> int:
    """The forward-backward passes ``epochs`` trained epochs of ``batches`` batches took, counted
    with the strategy's own rule (``mgrec.optim``): plain one per batch; SAM/ASAM two; MG one
    plus one on every mirror batch: batch index b % beta == 0 within each epoch (``mg_mode``
    reference: ceil(batches / beta) per epoch), or global step t % beta == 0, t counted from 1
    across epochs (algorithm1: floor(epochs x batches / beta) in all)."""
    steps = int(epochs) * int(batches)
    strategy = configuration.strategy_name(combo)
    if strategy in configuration.SAM_STRATEGIES:
        return 2 * steps
    if strategy != "mg":
        return steps
    beta = int(combo["beta"])
    if str(combo.get("mg_mode") or "reference") == "algorithm1":
        return steps + steps // beta
    return steps + int(epochs) * math.ceil(int(batches) / beta)


def replica_counts(costs: Sequence[float], budget: str) -> list[int]:
    """Each arm's replica count r >= 1 under ``budget`` from its one-replica ``costs`` (trained
    models for ``equal``, planned gradient evaluations for ``equal_grad``): the r that brings
    r x cost closest to the largest cost (ties: the smaller r); 1 each for ``reference``."""
    if budget not in BUDGETS:
        raise UserError(
            f"config key 'study_budget' must be one of {', '.join(BUDGETS)}, got {budget!r}"
        )
    if budget == "reference":
        return [1] * len(costs)
    target = max(costs)
    counts = []
    for cost in costs:
        low = max(1, math.floor(target / cost))
        high = low + 1
        counts.append(low if abs(low * cost - target) <= abs(high * cost - target) else high)
    return counts


# --- arms and plans -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Arm:
    """One model trained with one strategy.

    ``config`` is the arm's config (grids over the model's keys and the strategy's); ``combos``
    the combinations of one replica (|G| x |A|); ``candidates`` |A|, the strategy's own grid
    points; ``cost`` one replica's planned passes per batch-epoch, summed over its combinations;
    ``replicas`` how many times it trains its grid per seed.
    """

    model: str
    strategy: str
    config: dict[str, Any]
    combos: int
    candidates: int
    cost: float
    replicas: int = 1

    @property
    def name(self) -> str:
        """``VBPR/mg``: the arm's key in ``study.json`` and the reports."""
        return f"{self.model}/{self.strategy}"

    @property
    def label(self) -> str:
        """``VBPR + MG``, ``VBPR`` for plain: the row name of the paper's table."""
        return arm_label(self.model, self.strategy)

    @property
    def trials(self) -> int:
        """Combinations trained per seed."""
        return self.combos * self.replicas

    def replica_seeds(self, seed: int) -> list[int]:
        """The seeds of the arm's replicas for study seed ``seed``."""
        return [seed + k * REPLICA_STRIDE for k in range(self.replicas)]

    def grid(self, seed: int) -> dict[str, Any]:
        return {**self.config, "seed": self.replica_seeds(seed)}


def arm_label(model: str, strategy: str) -> str:
    """The paper's row names: "VBPR", "VBPR + MG", "VBPR + SAM"."""
    return f"{model}{ARM_SUFFIX[strategy]}"


def build_arm(
    model: str,
    dataset: str,
    strategy: str,
    config_files: Sequence[Path] = (),
    overrides: Mapping[str, Any] | None = None,
) -> Arm:
    """One replica of ``model`` under ``strategy``, every combination checked before anything is
    trained (a mistake is one ``UserError`` line)."""
    config = configuration.load_config(
        model, dataset, strategy == "mg", config_files, overrides, strategy=strategy
    )
    combos = configuration.grid(config)
    for combo in combos:
        check_combination(combo)
    candidates = math.prod(
        len(configuration.grid_values(config, key)) for key in STRATEGY_GRID_KEYS[strategy]
    )
    cost = sum(passes_per_batch(combo) for combo in combos)
    return Arm(model, strategy, config, len(combos), candidates, cost)


def with_budget(arms: Sequence[Arm], budget: str) -> list[Arm]:
    """``arms`` (one model's) with their replica counts under ``budget``."""
    if budget == "equal_grad":
        costs = [arm.cost for arm in arms]
    else:
        costs = [float(arm.combos) for arm in arms]
    counts = replica_counts(costs, budget)
    return [replace(arm, replicas=r) for arm, r in zip(arms, counts, strict=True)]


def study_seeds(config: Mapping[str, Any], n_seeds: int) -> list[int]:
    """The config's first seed, then +1, +2, ..."""
    if n_seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {n_seeds}")
    first = configuration.grid_values(config, "seed")[0]
    return [int(first) + i for i in range(n_seeds)]


def study_budget(config: Mapping[str, Any]) -> str:
    budget = str(config.get("study_budget", "equal"))
    if budget not in BUDGETS:
        raise UserError(
            f"config key 'study_budget' must be one of {', '.join(BUDGETS)}, got {budget!r}"
        )
    return budget


@dataclass(frozen=True)
class Plan:
    """A study of several models and strategies (``--study compare``): its arms (model-major,
    strategies in the order given, plain first), seeds and budget."""

    models: list[str]
    strategies: list[str]
    dataset: str
    seeds: list[int]
    budget: str
    arms: list[Arm] = field(default_factory=list)

    def arm(self, model: str, strategy: str) -> Arm:
        return next(a for a in self.arms if a.model == model and a.strategy == strategy)

    def grids(self) -> list[dict[str, Any]]:
        """Every seed's arms, seed-major (``outcome_index`` finds one): trained together (in
        parallel with executor ray)."""
        return [arm.grid(seed) for seed in self.seeds for arm in self.arms]

    def outcome_index(self, seed_index: int, arm_index: int) -> int:
        return seed_index * len(self.arms) + arm_index

    @property
    def trials(self) -> int:
        return sum(arm.trials for arm in self.arms) * len(self.seeds)

    @property
    def base(self) -> dict[str, Any]:
        """The first arm's config: the study-wide settings (metrics, folders, seeds)."""
        return self.arms[0].config

    @property
    def folder(self) -> Path:
        """results_dir/<dataset>/study-compare-<hash of every arm's settings, seeds, budget>."""
        identity = hashlib.sha1(
            json.dumps(
                [
                    "compare",
                    [[a.model, a.strategy, configuration.identity(a.config)] for a in self.arms],
                    list(self.seeds),
                    self.budget,
                ]
            ).encode()
        ).hexdigest()[:10]
        return project_path(self.base["results_dir"]) / self.dataset / f"study-compare-{identity}"


def load_compare(
    models: Sequence[str],
    strategies: Sequence[str],
    dataset: str,
    n_seeds: int,
    config_files: Sequence[Path] = (),
    overrides: Mapping[str, Any] | None = None,
) -> Plan:
    """A comparison study's plan: every model with every strategy, replicas under the budget
    (per model: its arms compete with each other), every combination checked first."""
    arms: list[Arm] = []
    budget, seeds = "equal", []
    for model in models:
        mine = [build_arm(model, dataset, s, config_files, overrides) for s in strategies]
        if not arms:
            budget = study_budget(mine[0].config)
            seeds = study_seeds(mine[0].config, n_seeds)
        arms += with_budget(mine, budget)
    return Plan(list(models), list(strategies), dataset, seeds, budget, arms)


@dataclass(frozen=True)
class Protocol(Plan):
    """An MG study (``--study mg``): one model, the arms MG and no-MG (in that order).

    ``mg``/``plain`` are the arms' configs; ``mg_candidates`` is |A|, the number of MG grid
    points; ``replicas`` the number of times the no-MG arm trains each grid point (|A| under the
    equal budget, 1 under the reference budget); ``mg_trials`` and ``plain_trials`` the
    combinations each arm trains per seed.
    """

    @property
    def model(self) -> str:
        return self.models[0]

    @property
    def mg(self) -> dict[str, Any]:
        return self.arms[0].config

    @property
    def plain(self) -> dict[str, Any]:
        return self.arms[1].config

    @property
    def mg_candidates(self) -> int:
        return self.arms[0].candidates

    @property
    def replicas(self) -> int:
        return self.arms[1].replicas

    @property
    def mg_trials(self) -> int:
        return self.arms[0].trials

    @property
    def plain_trials(self) -> int:
        return self.arms[1].trials

    def replica_seeds(self, seed: int) -> list[int]:
        """The seeds of the no-MG arm's replicas for study seed ``seed``."""
        return self.arms[1].replica_seeds(seed)

    def mg_grid(self, seed: int) -> dict[str, Any]:
        return self.arms[0].grid(seed)

    def plain_grid(self, seed: int) -> dict[str, Any]:
        return self.arms[1].grid(seed)

    @property
    def folder(self) -> Path:
        return study_folder(self.mg, self.plain, self.seeds, self.budget)


def load(
    model: str,
    dataset: str,
    n_seeds: int,
    config_files: Sequence[Path] = (),
    overrides: Mapping[str, Any] | None = None,
) -> Protocol:
    """The MG study's protocol from the user's settings, every combination checked before
    anything is trained (a mistake is one ``UserError`` line)."""
    if n_seeds < 1:
        raise UserError(f"--seeds must be at least 1, got {n_seeds}")
    arms = [build_arm(model, dataset, s, config_files, overrides) for s in ("mg", "plain")]
    budget = study_budget(arms[0].config)
    seeds = study_seeds(arms[0].config, n_seeds)
    return Protocol([model], ["mg", "plain"], dataset, seeds, budget, with_budget(arms, budget))


def study_folder(
    mg_config: Mapping[str, Any], plain_config: Mapping[str, Any], seeds: Sequence[int], budget: str
) -> Path:
    """results_dir/<dataset>/study-mg-<model>-<hash of both arms' settings, seeds, budget>."""
    identity = hashlib.sha1(
        json.dumps(
            [
                configuration.identity(mg_config),
                configuration.identity(plain_config),
                list(seeds),
                budget,
            ]
        ).encode()
    ).hexdigest()[:10]
    model = registry.find(str(mg_config["model"])).display_name
    name = f"study-mg-{model}-{identity}"
    return project_path(mg_config["results_dir"]) / str(mg_config["dataset"]) / name


def _created(path: Path) -> str:
    """When the study at ``path`` was first written (a resumed study keeps its date)."""
    created = time.strftime("%Y-%m-%d %H:%M:%S")
    if path.is_file():
        with contextlib.suppress(OSError, json.JSONDecodeError):
            created = json.loads(path.read_text(encoding="utf-8")).get("created", created)
    return str(created)


def write_study_file(plan: Protocol) -> None:
    """The MG study's ``study.json``, written when it starts (``mgrec runs`` lists it, ``mgrec
    table --study`` finds it): what it compares, its seeds and budget, and each arm's run
    folder (all seeds of an arm share one: the seed is a grid key)."""
    plan.folder.mkdir(parents=True, exist_ok=True)
    path = plan.folder / STUDY_FILE
    arms = {
        "mg": sorted({str(RunFolder(plan.mg_grid(seed)).path) for seed in plan.seeds}),
        "plain": sorted({str(RunFolder(plan.plain_grid(seed)).path) for seed in plan.seeds}),
    }
    study = {
        "kind": "mg", "model": plan.model, "dataset": plan.dataset, "seeds": plan.seeds,
        "budget": plan.budget, "candidates_per_arm": plan.mg_candidates,
        "replicas": plan.replicas, "arms": arms, "created": _created(path),
    }  # fmt: skip
    atomic.write_text(path, json.dumps(study, indent=2) + "\n")


def write_compare_file(plan: Plan) -> None:
    """A comparison study's ``study.json``: its models, strategies, seeds and budget; per arm
    (``VBPR/mg``) its run folders under ``arms`` (as an MG study's) and its grid size and
    replica count under ``replicas``."""
    plan.folder.mkdir(parents=True, exist_ok=True)
    path = plan.folder / STUDY_FILE
    arms = {
        arm.name: sorted({str(RunFolder(arm.grid(seed)).path) for seed in plan.seeds})
        for arm in plan.arms
    }
    study = {
        "kind": "compare", "models": plan.models, "strategies": plan.strategies,
        "dataset": plan.dataset, "seeds": plan.seeds, "budget": plan.budget, "arms": arms,
        "replicas": {
            arm.name: {"combinations": arm.combos, "candidates": arm.candidates,
                       "replicas": arm.replicas, "trials_per_seed": arm.trials}
            for arm in plan.arms
        },
        "created": _created(path),
    }  # fmt: skip
    atomic.write_text(path, json.dumps(study, indent=2) + "\n")


# --- what each seed's arms chose -----------------------------------------------------------------


def epoch_train_seconds(results: Sequence[Mapping[str, Any]]) -> list[float]:
    """Every epoch's training seconds (evaluation excluded) in the finished combinations'
    metrics files."""
    seconds = []
    for result in results:
        path = Path(result["folder"]) / "metrics.jsonl"
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                seconds.append(float(json.loads(line)["train_seconds"]))
    return seconds


def epoch_seconds(results: Sequence[Mapping[str, Any]]) -> float:
    """Mean training seconds per epoch over the finished combinations' metrics files."""
    seconds = epoch_train_seconds(results)
    return float(np.mean(seconds)) if seconds else math.nan


def trained_epochs(result: Mapping[str, Any]) -> int:
    """The epochs a finished combination trained: its results row's ``epochs``, else its
    metrics file's lines."""
    if result.get("epochs") is not None:
        return int(result["epochs"])
    path = Path(result["folder"]) / "metrics.jsonl"
    return len(path.read_text(encoding="utf-8").splitlines()) if path.is_file() else 0


def winner_test(results: Sequence[Mapping[str, Any]], split: str, config: Mapping[str, Any]) -> Any:
    """The test metrics of the combination with the best ``split`` score."""
    winner = pick_winner(results, split, str(config["valid_metric"]).lower())
    if winner is None:
        raise UserError(f"no combination of the study has a {split} result")
    return winner["test"]


def seed_record(
    seed: int,
    mg_run: Mapping[str, Any],
    plain_run: Mapping[str, Any],
    config: Mapping[str, Any],
) -> dict[str, Any]:
    """What seed ``seed``'s two arms of an MG study chose (their grids' outcomes from
    ``train_grids``): each validation winner's test metrics, parameters and checkpoint; the
    reference protocol's test-selected winners (no-MG from its first replica only); the mean
    epoch times."""
    if mg_run["by_valid"] is None or plain_run["by_valid"] is None:
        raise UserError(f"seed {seed}: an arm finished no combination with a validation result")
    first_replica = [r for r in plain_run["results"] if r["params"]["seed"] == seed]
    return {
        "seed": seed,
        "mg": mg_run["by_valid"]["test"],
        "plain": plain_run["by_valid"]["test"],
        "mg_params": mg_run["by_valid"]["params"],
        "plain_params": plain_run["by_valid"]["params"],
        "mg_checkpoint": mg_run["by_valid"]["checkpoint"],
        "plain_checkpoint": plain_run["by_valid"]["checkpoint"],
        "reference_protocol": {
            "mg": winner_test(mg_run["results"], "test", config),
            "plain": winner_test(first_replica, "test", config),
        },
        "epoch_seconds": {
            "mg": epoch_seconds(mg_run["results"]),
            "plain": epoch_seconds(plain_run["results"]),
        },
        "runs": {"mg": mg_run["run_dir"], "plain": plain_run["run_dir"]},
    }


def arm_record(seed: int, arm: Arm, outcome: Mapping[str, Any], train_rows: int) -> dict[str, Any]:
    """What one arm chose for study seed ``seed`` (its grid's outcome from ``train_grids``) and
    what it cost: the validation winner's test (and validation) metrics, parameters and
    checkpoint; the reference protocol's test-selected winner among the first replica; the
    gradient evaluations of every combination trained (``gradient_evaluations`` of its epochs
    of ceil(``train_rows`` / train_batch_size) batches), their epochs, their summed trial
    seconds (building, training, evaluating) and training seconds (the epochs' own), and the
    mean training seconds per epoch."""
    winner = outcome["by_valid"]
    if winner is None:
        raise UserError(
            f"seed {seed}: {arm.label} finished no combination with a validation result"
        )
    results = outcome["results"]
    first_replica = [r for r in results if r["params"]["seed"] == seed]
    epochs, evaluations = [], []
    for result in results:
        combo = {**arm.config, **result["params"]}
        batches = math.ceil(train_rows / int(combo["train_batch_size"]))
        epochs.append(trained_epochs(result))
        evaluations.append(gradient_evaluations(combo, epochs[-1], batches))
    per_epoch = epoch_train_seconds(results)
    return {
        "test": winner["test"],
        "valid": winner["valid"],
        "params": winner["params"],
        "checkpoint": winner["checkpoint"],
        "reference_protocol": winner_test(first_replica, "test", arm.config),
        "trials": len(results),
        "epochs": int(sum(epochs)),
        "grad_evals": int(sum(evaluations)),
        "seconds": float(sum(float(r.get("seconds") or 0.0) for r in results)),
        "train_seconds": float(sum(per_epoch)),
        "epoch_seconds": float(np.mean(per_epoch)) if per_epoch else None,
        "run": outcome["run_dir"],
    }
