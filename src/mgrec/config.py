"""Layered YAML configuration and the hyper-parameter grid.

Order (later wins), as the reference: ``configs/overall.yaml``, ``configs/dataset/<name>.yaml``,
``configs/model/<Model>.yaml``, ``configs/mg.yaml`` (unless ``--not_mg``), any ``--config`` files,
then ``--key=value`` overrides. Each file's ``hyper_parameters`` list is appended in file order,
``seed`` first; list values of those keys form the grid, the last key varying fastest.

A config is a plain ``dict``: easy to print, save beside results and store in checkpoints.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import itertools
import json
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, NoReturn

import yaml

from mgrec.errors import UserError, closest
from mgrec.models import registry
from mgrec.paths import CONFIG_DIR, USER_DATASET_CONFIG_DIR, dataset_config_file

# Keys whose value is a list by nature; a list given for any other key on the command line
# becomes a grid dimension.
LIST_VALUED_KEYS = frozenset(
    {"metrics", "topk", "learning_rate_scheduler", "hyper_parameters", "weight_size"}
)
# Keys that say where files go, which device runs or how work is scheduled: they do not change a
# combination's results, so they are left out of its identity (re-running elsewhere still skips
# finished work). The data a combination read is part of its record (fingerprints), not its key.
NON_IDENTITY_KEYS = frozenset(
    {
        "gpu_id", "use_gpu", "results_dir", "checkpoint_dir", "cache_dir", "save_checkpoints",
        "save_every", "keep_training_state", "threads", "tensorboard", "run_info", "executor",
        "ray_address", "gpus_per_trial", "cpus_per_trial", "max_retries", "eval_batch_size",
        "data_path",  # the data's identity is its fingerprints, recorded with each result
    }
)  # fmt: skip
# Keys naming files or folders. A checkpoint's stored config never supplies them (a crafted
# checkpoint could point them anywhere); they come from the YAML files and the command line.
PATH_KEYS = (
    "data_path", "dataset", "inter_file_name", "vision_feature_file", "text_feature_file",
    "user_graph_dict_file", "results_dir", "checkpoint_dir", "cache_dir",
)  # fmt: skip
# Folder-valued keys: typed on the command line, they are resolved from the working directory.
DIRECTORY_KEYS = ("data_path", "results_dir", "checkpoint_dir", "cache_dir")
# Keys a saved config.yaml holds that are records, not settings: ignored when it is read back.
RECORD_KEYS = ("params", "run_info")
# Keys that say what runs: a saved config.yaml read back with --config sets them, unless the
# command line names them (--model, --dataset, --not_mg).
RUN_KEYS = ("model", "dataset", "mg", "strategy")
LEARNERS = ("adam", "sgd", "adagrad", "rmsprop")
MG_KEYS = ("alpha1", "alpha2", "beta", "mg_mode")
# Training strategies (``--strategy``): the reference's default is MG; ``--not_mg`` means plain.
STRATEGIES = ("plain", "mg", "sam", "asam")
SAM_STRATEGIES = ("sam", "asam")
SAM_KEYS = ("rho",)
METRICS = ("recall", "ndcg", "precision", "map")


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """A safe YAML loader (libyaml's when present: ~10x faster) that also reads ``1e-4`` (no
    dot) as a float, as the reference does."""


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
    """Read one YAML mapping (a copy: callers may change it); a malformed file is a user error
    naming the file."""
    try:
        stat = path.stat()
    except OSError as exc:
        raise UserError(f"{path}: cannot read the config file ({exc.strerror})") from exc
    return copy.deepcopy(_read_yaml(path, stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=256)
def _read_yaml(path: Path, mtime_ns: int, size: int) -> dict[str, Any]:
    """``read_yaml``, once per version of a file."""
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
    """Every model ``--model`` accepts by name (the registry's built-in models and plugins)."""
    return registry.names()


def model_layer(model: str) -> dict[str, Any]:
    """A model's default settings: its YAML file, or the ``default_config`` its class ships."""
    path = registry.config_file(model)
    if path is not None:
        return read_yaml(path)
    return dict(registry.load(model).default_config)


def key_defaults(model: str | None = None) -> dict[str, Any]:
    """Every key defined by any shipped YAML file (and, for a model from outside mgrec, by its
    defaults and its ``config_schema``), with the first value a file gives it: the vocabulary
    of valid overrides."""
    defaults: dict[str, Any] = {"mg": True, **{k: None for k in (*RUN_KEYS, *RECORD_KEYS)}}
    layers = [
        read_yaml(p) for p in [*CONFIG_DIR.rglob("*.yaml"), *USER_DATASET_CONFIG_DIR.glob("*.yaml")]
    ]
    if model is not None and registry.is_external(model):
        layers.append(model_layer(model))
        layers.append(dict.fromkeys(registry.load(model).config_schema))
    for layer in layers:
        for key, value in layer.items():
            defaults.setdefault(key, value)
    return defaults


def known_keys(model: str | None = None) -> set[str]:
    """The keys a ``--key=value`` override may set (see ``key_defaults``)."""
    return set(key_defaults(model))


def boolean_keys(model: str | None = None) -> set[str]:
    """The keys whose shipped value is true or false: a bare ``--key`` sets them true."""
    return {k for k, v in key_defaults(model).items() if isinstance(v, bool)}


DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def check_dataset_name(name: str, flag: str = "--dataset") -> str:
    """A dataset is a plain folder name under ``data_path`` (it also names the .inter and the
    YAML file): never a path, so results and checkpoints cannot land inside a dataset folder."""
    if not DATASET_NAME.fullmatch(str(name or "")):
        raise UserError(
            f"{flag} {name!r}: a dataset name may hold only letters, digits, '_', '.' and '-', "
            "and must start with a letter or digit; put the folder under data_path and pass "
            "--data_path=DIR for another location"
        )
    return str(name)


def check_known(keys: Iterable[str], where: str, model: str | None = None) -> None:
    """Raise a user error for the first key no shipped config (nor ``model``'s defaults)
    defines, naming the closest one."""
    vocabulary = known_keys(model)
    for key in keys:
        if key not in vocabulary:
            raise UserError(f"{where}: unknown config key '{key}'{closest(key, vocabulary)}")


def _merge(config: dict[str, Any], grid_keys: list[str], layer: Mapping[str, Any]) -> None:
    layer = dict(layer)
    grid_keys.extend(layer.pop("hyper_parameters", None) or [])
    config.update(layer)


def read_layer(path: Path, model: str | None = None) -> dict[str, Any]:
    """A user's YAML file (``--config``): its keys checked against the known ones; the record
    keys of a saved ``config.yaml`` (``params``, ``run_info``) dropped."""
    layer = read_yaml(path)
    for key in RECORD_KEYS:
        layer.pop(key, None)
    check_known((k for k in layer if k != "hyper_parameters"), str(path), model)
    return layer


def run_settings(config_files: Iterable[Path]) -> dict[str, Any]:
    """``model``, ``dataset`` and ``mg`` as the ``--config`` files set them (the last file wins),
    so a run's saved ``config.yaml`` given back with ``--config`` runs the same thing."""
    settings: dict[str, Any] = {}
    for path in config_files:
        layer = read_yaml(path)
        settings.update({k: layer[k] for k in RUN_KEYS if k in layer})
    return settings


def load_config(
    model: str,
    dataset: str,
    mg: bool = True,
    config_files: Iterable[Path] = (),
    overrides: Mapping[str, Any] | None = None,
    strategy: str | None = None,
) -> dict[str, Any]:
    """Build the resolved config of a run (grid keys still hold their lists).

    Args:
        model: a model name with a file in ``configs/model``.
        dataset: the dataset name; its YAML is optional (MMRec's defaults apply without one).
        mg: merge ``configs/mg.yaml`` (Mirror Gradient on).
        config_files: extra YAML files, merged in order after the shipped ones.
        overrides: ``--key=value`` pairs, already parsed; they win over every file.
        strategy: the training strategy (``STRATEGIES``); when given (here or as
            ``overrides["strategy"]``) it wins over ``mg``. sam/asam merge ``configs/sam.yaml``.
    """
    check_model(model)
    check_dataset_name(dataset)
    strategy = run_strategy(model, mg, strategy, overrides)
    mg = strategy == "mg"
    config: dict[str, Any] = {}
    grid_keys: list[str] = []
    _merge(config, grid_keys, read_yaml(CONFIG_DIR / "overall.yaml"))
    dataset_file = dataset_config_file(dataset)
    if dataset_file is not None:
        _merge(config, grid_keys, read_yaml(dataset_file))
    _merge(config, grid_keys, model_layer(model))
    if mg:
        _merge(config, grid_keys, read_yaml(CONFIG_DIR / "mg.yaml"))
    if strategy in SAM_STRATEGIES:
        _merge(config, grid_keys, read_yaml(CONFIG_DIR / "sam.yaml"))
    layer, layer_grid_keys = user_layer(config_files, overrides, model)
    grid_keys += layer_grid_keys
    config.update(layer)
    config["model"], config["dataset"], config["mg"] = model, dataset, bool(mg)
    grid_keys = _keep_strategy_keys(config, grid_keys, strategy)
    if config.get("inter_file_name") is None:
        config["inter_file_name"] = f"{dataset}.inter"
    ordered = ["seed"] + [k for k in grid_keys if k != "seed"]
    config["hyper_parameters"] = list(dict.fromkeys(ordered))
    return config


def check_model(model: str) -> str:
    """``model`` if it names a known model or an importable ``module:Class``, else a user error
    listing the choices."""
    entry = registry.find(model)
    if entry.kind != "built-in":
        registry.load(model)  # a bad import path or class is one line now, not mid-run
    return model


def user_layer(
    config_files: Iterable[Path] = (),
    overrides: Mapping[str, Any] | None = None,
    model: str | None = None,
) -> tuple[dict[str, Any], list[str]]:
    """The user's own settings: the ``--config`` files merged in order, then the ``--key=value``
    overrides (checked against the known keys). Returns the merged layer (without
    ``hyper_parameters`` and the run keys) and the grid keys it adds: the files'
    ``hyper_parameters`` and every override given a list for a key that is not list-valued."""
    layer: dict[str, Any] = {}
    grid_keys: list[str] = []
    for path in config_files:
        _merge(layer, grid_keys, read_layer(path, model))
    overrides = dict(overrides or {})
    check_known(overrides, "command line", model)
    for key, value in overrides.items():
        # A list typed for a key that is not list-valued by nature asks for a grid over it.
        if isinstance(value, list) and key not in LIST_VALUED_KEYS:
            grid_keys.append(key)
    layer.update(overrides)
    for key in RUN_KEYS:
        layer.pop(key, None)
    return layer, grid_keys


def checkpoint_config(
    saved: Mapping[str, Any],
    dataset: str | None = None,
    config_files: Iterable[Path] = (),
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The combination to evaluate an mgrec checkpoint with (``--resume``).

    The checkpoint's stored config gives the model, its sizes and settings; ``dataset`` (when
    given) evaluates it on another dataset with that dataset's YAML. Path-like keys
    (``PATH_KEYS``) are never taken from the checkpoint: they come from the YAML files and the
    user's layers, as for a new run. The user's ``--config`` files and overrides apply last.
    """
    model = check_model(str(saved.get("model")))
    dataset = check_dataset_name(dataset if dataset is not None else str(saved.get("dataset")))
    mg = bool(saved.get("mg", True))
    fresh = load_config(
        model, dataset, mg, config_files, overrides, strategy=strategy_name({"mg": mg, **saved})
    )
    combo = with_paths({k: v for k, v in saved.items() if k not in RECORD_KEYS}, fresh)
    if dataset != saved.get("dataset"):  # the other dataset's own settings (fields, sizes)
        dataset_file = dataset_config_file(dataset)
        if dataset_file is not None:
            layer = read_yaml(dataset_file)
            layer.pop("hyper_parameters", None)
            combo.update(layer)
    layer, _ = user_layer(config_files, overrides, model)
    combo.update(layer)
    combo["model"], combo["dataset"] = model, dataset
    return combo


def with_paths(saved: Mapping[str, Any], source: Mapping[str, Any]) -> dict[str, Any]:
    """``saved`` (a checkpoint's stored config) with every path-like key taken from ``source``
    (a config built from the YAML files and the user's layers), never from ``saved``."""
    combo = {k: v for k, v in saved.items() if k not in PATH_KEYS}
    combo.update({k: source[k] for k in PATH_KEYS if k in source})
    return combo


def settings_warnings(
    config_files: Iterable[Path],
    overrides: Mapping[str, Any] | None,
    mg: bool,
    gpu_visible: Callable[[], bool],
    model: str | None = None,
    strategy: str | None = None,
) -> list[str]:
    """Warnings for settings the user gave that will not act: MG keys without MG, SAM keys
    without SAM (``strategy``: the run's, default from ``mg``), ``use_gpu`` typed on the command
    line with no GPU visible (asked only then: it imports torch; a saved config.yaml's
    ``use_gpu`` is the default, not a request)."""
    layer, _ = user_layer(config_files, overrides, model)
    strategy = strategy or ("mg" if mg else "plain")
    warnings = sam_warnings(layer, strategy, model)
    given_mg = [k for k in MG_KEYS if k in layer]
    if model is not None and not registry.trains(model):
        if given_mg:
            raise UserError(
                f"{model} trains nothing, so Mirror Gradient has nothing to act on: drop "
                f"{', '.join(given_mg)} (it runs without MG)"
            )
        if mg:
            warnings.append(
                f"{model} trains nothing, so Mirror Gradient has nothing to act on: it is "
                "evaluated once, without MG"
            )
    elif not mg and given_mg:
        flag = "--not_mg" if strategy == "plain" else f"--strategy={strategy}"
        warnings.append(f"{flag}: {', '.join(given_mg)} given but ignored (Mirror Gradient is off)")
    if (overrides or {}).get("use_gpu") and not gpu_visible():
        warnings.append("use_gpu is set but no CUDA GPU is visible: training runs on the CPU")
    return warnings


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

    def fail(key: str, wanted: str) -> NoReturn:
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
    validate_strategy(combo)
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


# --- training strategies (plain, mg, sam, asam) -------------------------------------------------


def strategy_name(config: Mapping[str, Any]) -> str:
    """A config's training strategy: its ``strategy`` key (sam, asam), else ``mg`` true ->
    "mg", false -> "plain". MG and plain configs carry no ``strategy`` key, so their identities
    (and run folders) are those they had before strategies existed."""
    return str(config.get("strategy") or ("mg" if config.get("mg") else "plain"))


STRATEGY_LABELS = {"plain": "no MG", "mg": "MG", "sam": "SAM", "asam": "ASAM"}


def strategy_label(config: Mapping[str, Any]) -> str:
    """How reports name a config's strategy: "MG", "no MG", "SAM", "ASAM"."""
    return STRATEGY_LABELS[strategy_name(config)]


def check_strategy(value: Any, where: str = "--strategy") -> str:
    """``value`` as one of ``STRATEGIES`` (case-insensitive), else a one-line user error."""
    name = value.lower() if isinstance(value, str) else None
    if name not in STRATEGIES:
        hint = closest(str(value), STRATEGIES) if isinstance(value, str) else ""
        raise UserError(
            f"{where}: the strategy must be one of {', '.join(STRATEGIES)} (one per run), got "
            f"{value!r}{hint}"
        )
    return str(name)


def run_strategy(
    model: str, mg: bool, strategy: str | None, overrides: Mapping[str, Any] | None
) -> str:
    """``load_config``'s strategy: ``strategy``, else ``overrides["strategy"]`` (Python callers),
    else from ``mg``; "plain" for a model that trains nothing (nothing to act on)."""
    given = strategy if strategy is not None else (overrides or {}).get("strategy")
    name = check_strategy(given) if given is not None else ("mg" if mg else "plain")
    return name if registry.trains(model) else "plain"


def resolve_strategy(not_mg: bool, overrides: dict[str, Any], from_files: Mapping[str, Any]) -> str:
    """The command line's strategy: ``--strategy``, ``--not_mg`` (plain) and ``--mg=...`` (popped
    from ``overrides``), else the ``--config`` files' ``strategy`` and ``mg`` (``from_files``: a
    saved config.yaml runs what it ran), else MG (the reference's default). ``--not_mg`` wins
    over ``--mg`` as before; a strategy that contradicts either is a user error."""
    given, mg_given = overrides.pop("strategy", None), overrides.pop("mg", None)
    if given is not None:
        strategy = check_strategy(given)
        if not_mg and strategy != "plain":
            raise UserError(f"--not_mg means --strategy=plain, not {strategy}: give one of them")
        if mg_given is not None and bool(mg_given) != (strategy == "mg"):
            raise UserError(
                f"--mg={mg_given} contradicts --strategy={strategy} (mg true is strategy mg, "
                "false is plain): give one of them"
            )
        return strategy
    if not_mg:
        return "plain"
    if mg_given is not None:
        return "mg" if mg_given else "plain"
    if from_files.get("strategy") is not None:
        strategy = check_strategy(from_files["strategy"], "strategy in a --config file")
        if "mg" in from_files and bool(from_files["mg"]) != (strategy == "mg"):
            raise UserError(
                f"the --config files say strategy: {strategy} and mg: {from_files['mg']}, which "
                "contradict (mg true is strategy mg): fix one of them"
            )
        return strategy
    return "mg" if from_files.get("mg", True) else "plain"


def _keep_strategy_keys(config: dict[str, Any], grid_keys: list[str], strategy: str) -> list[str]:
    """Drop the settings of the strategies not run (MG's keys without MG, SAM's without SAM:
    from files or the command line, they mean nothing) and record sam/asam as ``strategy``.
    Returns the grid keys left."""
    unused = [
        *([] if strategy == "mg" else MG_KEYS),
        *([] if strategy in SAM_STRATEGIES else SAM_KEYS),
    ]
    for key in unused:
        config.pop(key, None)
    config.pop("strategy", None)
    if strategy in SAM_STRATEGIES:
        config["strategy"] = strategy
    return [k for k in grid_keys if k not in unused]


def sam_warnings(layer: Mapping[str, Any], strategy: str, model: str | None) -> list[str]:
    """``settings_warnings``' part for SAM: SAM's keys given without SAM, SAM asked of a model
    that trains nothing."""
    given = [k for k in SAM_KEYS if k in layer]
    if model is not None and not registry.trains(model):
        if given:
            raise UserError(
                f"{model} trains nothing, so SAM has nothing to act on: drop {', '.join(given)}"
            )
        if strategy in SAM_STRATEGIES:
            return [f"{model} trains nothing, so {strategy} has nothing to act on: it is "
                    "evaluated once, without it"]  # fmt: skip
        return []
    if strategy not in SAM_STRATEGIES and given:
        return [f"strategy {strategy}: {', '.join(given)} given but ignored (SAM is off)"]
    return []


def validate_strategy(combo: Mapping[str, Any]) -> None:
    """``validate``'s part for the strategy: a known name, ``rho`` > 0 for sam/asam, and the
    package that implements SAM installed (one line now, not a traceback mid-run)."""
    strategy = combo.get("strategy")
    if strategy is None:
        return
    if strategy not in STRATEGIES:
        check_strategy(strategy, "config key 'strategy'")
    if strategy not in SAM_STRATEGIES:
        return
    rho: Any = combo.get("rho")
    if not _is_number(rho) or rho <= 0:
        raise UserError(f"config key 'rho' must be a number > 0 (SAM's radius), got {rho!r}")
    import importlib.util

    if importlib.util.find_spec("pytorch_optimizer") is None:
        raise UserError(f'strategy: {strategy} needs pytorch-optimizer: pip install -e ".[sam]"')


def _hash(values: Mapping[str, Any]) -> str:
    text = json.dumps(dict(values), sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:10]


def identity(combo: Mapping[str, Any]) -> str:
    """A short stable hash of every setting that can change a combination's results (not where
    its files go, nor which grid it came from: the same settings reached from a grown grid are
    the same combination)."""
    skipped = NON_IDENTITY_KEYS | {"hyper_parameters", "params"}
    return _hash({k: v for k, v in combo.items() if k not in skipped})


def run_identity(config: Mapping[str, Any]) -> str:
    """A short stable hash of a run's settings apart from the values of its grid keys: a run whose
    grid grows (``--reg_weight=[0.1,0.01]``, then ``[0.1,0.01,0.001]``) keeps its folder, where
    the finished combinations are found one by one."""
    skipped = NON_IDENTITY_KEYS | {"hyper_parameters", "params", *config["hyper_parameters"]}
    return _hash({k: v for k, v in config.items() if k not in skipped})


def to_yaml(config: Mapping[str, Any]) -> str:
    """A config as YAML text (readable, and loadable again with ``--config``)."""
    return yaml.safe_dump(dict(config), sort_keys=False)
