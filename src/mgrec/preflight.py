"""A run's settings and inputs, checked before torch is imported: a mistake is answered in a
fraction of a second, never after minutes of loading.

What can be known without importing a model: every combination's shared keys
(``config.validate``), the kinds of the model's own keys as its class declares them
(``registry``: the class body's ``config_schema``), and the dataset's files for the features the
model needs. A model's own further checks (``Recommender.check_config``) and the data's
contents are checked when the run builds it, before anything is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mgrec import config as configuration
from mgrec.data.files import EMBEDDED_NAME, check_files, dataset_dir
from mgrec.models import registry
from mgrec.models.schema import check_keys


def check_run(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Check a resolved config (``config.load_config``); returns its combinations."""
    combos = configuration.grid(config)
    entry = registry.find(str(config["model"]))
    for combo in combos:
        configuration.validate(combo)
        if entry.schema is not None:
            check_keys(combo, **entry.schema)
    embedded_to_make = config["dataset"] == EMBEDDED_NAME and not dataset_dir(config).is_dir()
    if not embedded_to_make:
        check_files(config, entry.modalities or "any")
    return combos
