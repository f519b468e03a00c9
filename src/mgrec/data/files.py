"""Which files a dataset must have for a model, checked without reading them (no numpy, no
torch): the command line answers a missing folder or file at once, and ``load_dataset`` starts
from the same checks."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mgrec.errors import UserError
from mgrec.paths import project_path

DOWNLOAD_HINT = (
    "MMRec's data README (github.com/enoche/MMRec/tree/master/data) links the Amazon downloads"
)
EMBEDDED_NAME = "synthetic"  # the dataset made on first use (data/synthetic.py)
MODALITIES = {"v": "vision_feature_file", "t": "text_feature_file"}
MODALITY_NAMES = {"v": "image", "t": "text"}


def dataset_dir(config: Mapping[str, Any]) -> Path:
    return project_path(config["data_path"]) / str(config["dataset"])


def present(file: Path) -> bool:
    return file.exists() or file.is_symlink()


def check_files(config: Mapping[str, Any], modalities: str = "any") -> Path:
    """The dataset folder, after checking it holds the interaction file and the feature files
    ``modalities`` needs ("any": image and/or text, "both", "none"); a user error otherwise."""
    folder = dataset_dir(config)
    if not folder.is_dir():
        raise UserError(
            f"{folder}: dataset folder not found; put {config['inter_file_name']}, "
            f"{config['vision_feature_file']} and {config['text_feature_file']} there "
            f"(or pass --data_path=DIR); {DOWNLOAD_HINT}"
        )
    inter_file = folder / str(config["inter_file_name"])
    if not inter_file.is_file():
        raise UserError(
            f"{inter_file}: interaction file not found; the dataset folder must hold "
            f"{config['inter_file_name']} (tab-separated userID, itemID, x_label); {DOWNLOAD_HINT}"
        )
    files = {m: folder / str(config[key]) for m, key in MODALITIES.items()}
    model = config.get("model", "this model")
    if modalities == "any" and not any(present(f) for f in files.values()):
        wanted = [config[key] for key in MODALITIES.values()]
        raise UserError(
            f"{folder}: {model} needs item features, but neither {wanted[0]} nor {wanted[1]} "
            "exists there; add at least one feature file"
        )
    if modalities == "both":
        for modality, file in files.items():
            if not present(file):
                raise UserError(
                    f"{file}: {model} needs both image and text features; "
                    f"this {MODALITY_NAMES[modality]} feature file is missing"
                )
    return folder
