"""``--build_user_graph``: write a dataset's user graph (DualGNN/DRAGON) in the reference's
format into its folder."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mgrec.data import user_graph
from mgrec.data.dataset import load_dataset
from mgrec.data.synthetic import EMBEDDED_NAME, ensure_embedded
from mgrec.errors import UserError
from mgrec.paths import project_path
from mgrec.runs.logs import setup_logging

log = logging.getLogger("mgrec")


def build_user_graph_file(config: Mapping[str, Any], force: bool = False) -> Path:
    """Write the dataset's user graph into its folder (the one time mgrec writes there: the user
    asked; an existing file only with ``force``). Returns the file's path."""
    setup_logging()
    if config["dataset"] == EMBEDDED_NAME:
        ensure_embedded(project_path(config["data_path"]))
    data = load_dataset(config, modalities="none")
    path = data.path / str(config["user_graph_dict_file"])
    if path.exists() and not force:
        raise UserError(f"{path} exists; add --force to replace it")
    start = time.perf_counter()
    graph = user_graph.build(data.train.users, data.train.items, data.n_users)
    existed = path.is_file()
    user_graph.save_reference(path, graph)
    log.info(
        f"user graph of {data.n_users} users (top {user_graph.TOP_NEIGHBOURS} co-interaction "
        f"neighbours each) built in {time.perf_counter() - start:.1f}s; "
        f"{'replaced' if existed else 'wrote'}:"
    )
    return path
