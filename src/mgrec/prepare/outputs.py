"""What a preparation leaves besides the dataset folder: its YAML file and the command that
trains on it."""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from mgrec.atomic import write_text
from mgrec.config import load_config
from mgrec.errors import UserError
from mgrec.prepare.options import DEFAULT_OUT, Options
from mgrec.prepare.pipeline import shown

TRAIN_MODEL = "DRAGON"  # the model the closing "train with:" line names


def dataset_yaml(name: str, out: Path, seed: int, ratings: Path) -> str:
    """The dataset's config file: MMRec's field and file names (and data_path if not data/)."""
    config: dict[str, Any] = {
        "USER_ID_FIELD": "userID",
        "ITEM_ID_FIELD": "itemID",
        "TIME_FIELD": "timestamp",
        "filter_out_cod_start_users": True,
        "inter_file_name": f"{name}.inter",
        "vision_feature_file": "image_feat.npy",
        "text_feature_file": "text_feat.npy",
        "user_graph_dict_file": "user_graph_dict.npy",
        "field_separator": "\t",
    }
    if out.resolve() != DEFAULT_OUT.resolve():
        config["data_path"] = str(out.resolve())
    header = (
        f"# Amazon '{name}', prepared by `mgrec prepare` from {ratings.name} "
        f"(5-core, split seed {seed}).\n"
    )
    return header + yaml.safe_dump(config, sort_keys=False, allow_unicode=True)


def write_config(options: Options) -> str:
    """Write ``<configs_dir>/<name>.yaml`` (an existing one is kept unless --force); say so."""
    path = options.configs_dir / f"{options.name}.yaml"
    if path.exists() and not options.force:
        return f"kept the existing {shown(path)} (--force replaces it)"
    write_text(path, dataset_yaml(options.name, options.out, options.seed, options.ratings))
    return f"wrote {shown(path)}"


def fitting_cutoffs(topk: Sequence[int], n_items: int) -> list[int]:
    """The cut-offs of ``topk`` a dataset of ``n_items`` items can rank (k <= n_items), in order;
    ``[n_items]`` when none can, so there is always one."""
    return [k for k in topk if k <= n_items] or [n_items]


def train_command(name: str, out: Path, n_items: int) -> str:
    """``python src/main.py --model DRAGON --dataset NAME`` as a shell command that runs on the
    dataset just written: ``--data_path`` when it is not in ``data/``, and, for a dataset with
    fewer items than the largest default cut-off, ``--topk`` (and ``--valid_metric`` when its
    cut-off is dropped) holding only the cut-offs that fit."""
    args = ["python", "src/main.py", "--model", TRAIN_MODEL, "--dataset", name]
    if out.resolve() != DEFAULT_OUT.resolve():
        args.append(f"--data_path={shown(out)}")
    try:  # the settings the training would use: the shipped defaults and the dataset's YAML
        config = load_config(TRAIN_MODEL, name)
        topk = [int(k) for k in config["topk"]]
        valid_metric = str(config["valid_metric"])
    except (UserError, KeyError, TypeError, ValueError):
        return shlex.join(args)  # the training will say what is wrong with the configs
    fitting = fitting_cutoffs(topk, n_items)
    if fitting != topk:
        args.append(f"--topk=[{','.join(map(str, fitting))}]")
        metric, _, cutoff = valid_metric.partition("@")
        if not cutoff.isdigit() or int(cutoff) not in fitting:
            args.append(f"--valid_metric={metric}@{max(fitting)}")
    return shlex.join(args)
