"""Layered YAML configuration and the hyper-parameter grid.

Order (later wins), as the reference: ``configs/overall.yaml``, ``configs/dataset/<name>.yaml``,
``configs/model/<Model>.yaml``, ``configs/mg.yaml`` (unless ``--not_mg``), any ``--config`` files,
then ``--key=value`` overrides. Each file's ``hyper_parameters`` list is appended in file order,
``seed`` first; list values of those keys form the grid, the last key varying fastest.

A config is a plain ``dict``: easy to print, save beside results and store in checkpoints.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from mgrec.errors import UserError
from mgrec.paths import CONFIG_DIR

# Keys whose value is a list by nature; a list given for any other key on the command line
# becomes a grid dimension.
LIST_VALUED_KEYS = frozenset(
    {"metrics", "topk", "learning_rate_scheduler", "hyper_parameters", "weight_size"}
)
# Keys that say where files go or which device runs: they do not change a combination's results,
# so they are left out of the identity of a run (re-running elsewhere still skips finished work).
NON_IDENTITY_KEYS = frozenset(
    {"gpu_id", "use_gpu", "results_dir", "checkpoint_dir", "cache_dir", "save_checkpoints"}
)
LEARNERS = ("adam", "sgd", "adagrad", "rmsprop")
MG_KEYS = ("alpha1", "alpha2", "beta", "mg_mode")
METRICS = ("recall", "ndcg", "precision", "map")


class _Loader(yaml.SafeLoader):
    """A safe YAML loader that also reads ``1e-4`` (no dot) as a float, as the reference does."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?
            |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
            |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
            |[-+]?\.(?:inf|Inf|INF)
            |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def parse_value(text: str) -> Any:
    """Parse a command-line value as YAML: ``0.001`` -> float, ``[0.1,0.01]`` -> list, ``a`` -> str."""
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError:
        return text


def read_yaml(path: Path) -> dict[str, Any]:
    """Read one YAML mapping; a malformed file is a user error naming the file."""
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)
    except yaml.YAMLError as exc:
        raise UserError(f"{path}: not valid YAML ({exc.__class__.__name__}): fix the file") from exc
    except OSError as exc:
        raise UserError(f"{path}: cannot read the config file ({exc.strerror})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: a config file must be a mapping of key: value lines")
    return data


def available_models() -> list[str]:
    """Model names that have a YAML file in ``configs/model``."""
    return sorted(p.stem for p in (CONFIG_DIR / "model").glob("*.yaml"))


def known_keys() -> set[str]:
    """Every key defined by any shipped YAML file: the vocabulary of valid overrides."""
    keys = {"model", "dataset", "mg"}
    for path in CONFIG_DIR.rglob("*.yaml"):
        keys.update(read_yaml(path))
    return keys


def closest(word: str, choices: Iterable[str]) -> str:
    """A ' (did you mean X?)' hint, or '' when nothing is close."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f" (did you mean '{match[0]}'?)" if match else ""


def check_known(keys: Iterable[str], where: str) -> None:
    """Raise a user error for the first key no shipped config defines, naming the closest one."""
    vocabulary = known_keys()
    for key in keys:
        if key not in vocabulary:
            raise UserError(f"{where}: unknown config key '{key}'{closest(key, vocabulary)}")


def _merge(config: dict[str, Any], grid_keys: list[str], layer: Mapping[str, Any]) -> None:
    layer = dict(layer)
    grid_keys.extend(layer.pop("hyper_parameters", None) or [])
    config.update(layer)


def dataset_layer(dataset: str) -> dict[str, Any]:
    """The dataset's own YAML (or nothing) plus its name and default interaction file name."""
    path = CONFIG_DIR / "dataset" / f"{dataset}.yaml"
    layer = read_yaml(path) if path.is_file() else {}
    layer.pop("hyper_parameters", None)
    layer.setdefault("inter_file_name", f"{dataset}.inter")
    return {**layer, "dataset": dataset}


def load_config(
    model: str,
    dataset: str,
    mg: bool = True,
    config_files: Iterable[Path] = (),
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build the resolved config of a run (grid keys still hold their lists).

    Args:
        model: a model name with a file in ``configs/model``.
        dataset: the dataset name; its YAML is optional (MMRec's defaults apply without one).
        mg: merge ``configs/mg.yaml`` (Mirror Gradient on).
        config_files: extra YAML files, merged in order after the shipped ones.
        overrides: ``--key=value`` pairs, already parsed; they win over every file.
    """
    models = available_models()
    if model not in models:
        raise UserError(
            f"unknown model '{model}'{closest(model, models)}; choose one of: {', '.join(models)}"
        )
    config: dict[str, Any] = {}
    grid_keys: list[str] = []
    _merge(config, grid_keys, read_yaml(CONFIG_DIR / "overall.yaml"))
    dataset_file = CONFIG_DIR / "dataset" / f"{dataset}.yaml"
    if dataset_file.is_file():
        _merge(config, grid_keys, read_yaml(dataset_file))
    _merge(config, grid_keys, read_yaml(CONFIG_DIR / "model" / f"{model}.yaml"))
    if mg:
        _merge(config, grid_keys, read_yaml(CONFIG_DIR / "mg.yaml"))
    for path in config_files:
        layer = read_yaml(path)
        check_known((k for k in layer if k != "hyper_parameters"), str(path))
        _merge(config, grid_keys, layer)
    overrides = dict(overrides or {})
    check_known(overrides, "command line")
    for key, value in overrides.items():
        # A list typed for a key that is not list-valued by nature asks for a grid over it.
        if isinstance(value, list) and key not in LIST_VALUED_KEYS:
            grid_keys.append(key)
    config.update(overrides)
    config["model"], config["dataset"], config["mg"] = model, dataset, bool(mg)
    if not mg:  # MG settings (from files or the command line) mean nothing without MG
        for key in MG_KEYS:
            config.pop(key, None)
        grid_keys = [k for k in grid_keys if k not in MG_KEYS]
    if config.get("inter_file_name") is None:
        config["inter_file_name"] = f"{dataset}.inter"
    ordered = ["seed"] + [k for k in grid_keys if k != "seed"]
    config["hyper_parameters"] = list(dict.fromkeys(ordered))
    return config


def grid_values(config: Mapping[str, Any], key: str) -> list[Any]:
    """The values a grid key takes: its list, or its one scalar."""
    value = config[key]
    return list(value) if isinstance(value, list) else [value]


def grid(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Expand the grid: one full config per combination, in the reference's order.

    A grid key holding a scalar counts as one value. Each combination also records its own
    grid values under ``params`` (an ordered dict key -> value).
    """
    keys = list(config["hyper_parameters"])
    for key in keys:
        if key not in config:
            raise UserError(f"hyper_parameters names '{key}', but no config file sets it")
    values = [grid_values(config, k) for k in keys]
    for key, options in zip(keys, values, strict=True):
        if not options:
            raise UserError(f"grid key '{key}' has an empty list of values")
    combos = []
    for chosen in itertools.product(*values):
        combo = dict(config)
        combo.update(zip(keys, chosen, strict=True))
        combo["params"] = dict(zip(keys, chosen, strict=True))
        combos.append(combo)
    return combos


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate(combo: Mapping[str, Any]) -> None:
    """Check one combination's shared keys, so a bad value stops the run before training starts."""

    def fail(key: str, wanted: str) -> None:
        raise UserError(f"config key '{key}' must be {wanted}, got {combo.get(key)!r}")

    for key in ("learning_rate",):
        if not _is_number(combo.get(key)) or combo[key] <= 0:
            fail(key, "a positive number")
    for key in ("weight_decay",):
        if not _is_number(combo.get(key)) or combo[key] < 0:
            fail(key, "a number >= 0")
    for key in ("epochs", "train_batch_size", "eval_batch_size", "eval_step", "embedding_size"):
        if not _is_int(combo.get(key)) or combo[key] < 1:
            fail(key, "an integer >= 1")
    if not _is_int(combo.get("stopping_step")) or combo["stopping_step"] < 0:
        fail("stopping_step", "an integer >= 0")
    if not _is_int(combo.get("seed")):
        fail("seed", "an integer")
    if str(combo.get("learner", "")).lower() not in LEARNERS:
        fail("learner", f"one of {', '.join(LEARNERS)}")
    schedule = combo.get("learning_rate_scheduler")
    if not (isinstance(schedule, list) and len(schedule) == 2 and all(map(_is_number, schedule))):
        fail("learning_rate_scheduler", "two numbers [a, b] (LR factor a ** (epoch / b))")
    if schedule[1] == 0:
        fail("learning_rate_scheduler", "[a, b] with b != 0")
    clip = combo.get("clip_grad_norm")
    if clip is not None and not (isinstance(clip, dict) and _is_number(clip.get("max_norm"))):
        fail("clip_grad_norm", "empty (~) or a mapping such as {max_norm: 5.0}")
    topk = combo.get("topk")
    if not (isinstance(topk, list) and topk and all(_is_int(k) and k > 0 for k in topk)):
        fail("topk", "a list of positive integers")
    metrics = combo.get("metrics")
    if not (
        isinstance(metrics, list) and metrics and all(str(m).lower() in METRICS for m in metrics)
    ):
        fail("metrics", f"a list drawn from {', '.join(METRICS)}")
    metric, _, k = str(combo.get("valid_metric", "")).lower().partition("@")
    if metric not in [str(m).lower() for m in metrics] or not k.isdigit() or int(k) not in topk:
        fail("valid_metric", "<metric>@<k> with the metric in 'metrics' and k in 'topk'")
    if combo.get("mg"):
        for key in ("alpha1", "alpha2"):
            if not _is_number(combo.get(key)):
                fail(key, "a number")
        if not _is_int(combo.get("beta")) or combo["beta"] < 1:
            fail("beta", "an integer >= 1")
        mode = combo.get("mg_mode", "reference")
        if mode not in ("reference", "algorithm1"):
            fail("mg_mode", "'reference' or 'algorithm1'")
        if mode == "algorithm1" and not combo["alpha1"] > combo["alpha2"]:
            raise UserError(
                f"mg_mode 'algorithm1' (the paper's Algorithm 1) requires alpha1 > alpha2, "
                f"got alpha1={combo['alpha1']} and alpha2={combo['alpha2']}"
            )


def identity(config: Mapping[str, Any]) -> str:
    """A short stable hash of everything that can change a run's results."""
    relevant = {k: v for k, v in config.items() if k not in NON_IDENTITY_KEYS}
    text = json.dumps(relevant, sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def dump(config: Mapping[str, Any], path: Path) -> None:
    """Write a config as YAML (readable, and loadable again with ``--config``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(dict(config), sort_keys=False), encoding="utf-8")
