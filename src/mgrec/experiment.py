"""The composition root: one resolved combination (a plain dict) in, everything a trial needs out.

Nothing else builds datasets, devices, evaluators, training batches, model inputs or models: the
grid loop, ``--resume``, robustness, flatness, studies, the benchmarks and the tests all come
here. For a combination ``combo``::

    combo -> RecData          load and validate <data_path>/<dataset> (the embedded one made on
                              first use); fingerprints of the files read
          -> device           cuda:<gpu_id> when use_gpu and CUDA is visible, else the CPU
          -> Evaluator x 2    valid and test, full ranking with the configured masking rule
          -> TrainBatches     shuffled batches, negatives sampled on the device
          -> ModelData        the data as tensors on the device, plus the graphs the model needs
                              (user graph; frozen kNN item graph), read from or built into cache/
          -> Recommender      seeded; a state_dict loaded strictly when given

``ExperimentBuilder`` builds the experiments of many combinations (a grid) and reuses what they
share (the loaded data, the device tensors, the graphs, the evaluators, the batches) whenever the
settings each part depends on agree, so a grid loads its data once.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import platform
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import torch

from mgrec import checkpoint, graphs, models
from mgrec.data import user_graph
from mgrec.data.cache import Cache
from mgrec.data.dataset import RecData, load_dataset
from mgrec.data.sampler import TrainBatches
from mgrec.data.synthetic import EMBEDDED_NAME, ensure_embedded
from mgrec.errors import UserError
from mgrec.evaluator import Evaluator
from mgrec.models import ModelData, Recommender
from mgrec.paths import project_path
from mgrec.rng import init_seed

log = logging.getLogger("mgrec")

# The settings each shared part depends on (besides the parts it is built from).
DATA_KEYS = (
    "model", "data_path", "dataset", "inter_file_name", "USER_ID_FIELD", "ITEM_ID_FIELD",
    "inter_splitting_label", "field_separator", "filter_out_cod_start_users",
    "vision_feature_file", "text_feature_file",
)  # fmt: skip
DEVICE_KEYS = ("use_gpu", "gpu_id")
EVALUATOR_KEYS = ("topk", "metrics", "eval_batch_size", "test_mask_valid")
BATCH_KEYS = ("train_batch_size", "use_neg_sampling")
MODEL_DATA_KEYS = ("user_graph_dict_file", "cache_dir", "knn_k", "mm_image_weight")

T = TypeVar("T")


# glibc raises its mmap threshold each time a large block is freed (up to 32 MB), after which
# blocks of that size come from the heap; the evaluator's thousands of 16 MB score blocks,
# interleaved with small kept tensors, then fragment it: at Elec's shape a full ranking after
# two training steps peaked at 11.3 GB of host memory instead of 1.0 GB. A fixed threshold sends
# every block from 4 MB up to mmap and back to the OS on free (the scorers keep their score
# block's memory across blocks, so a ranking does not fault in a fresh block each time).
MMAP_THRESHOLD_BYTES = 4 << 20
_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
# Fixing the mmap threshold also stops glibc's dynamic trim threshold (2x the mmap threshold),
# leaving its 128 KiB default: the heap's top is then handed back to the OS whenever a step's
# medium tensors (0.1-4 MB) are freed, and faulted in again at the next step (SELFCFED_LGN's
# CPU epoch at 3,000 x 1,500: 0.031-0.044 s -> 0.050-0.072 s). Twice the mmap threshold, the
# dynamic rule's value, keeps them.
TRIM_THRESHOLD_BYTES = 2 * MMAP_THRESHOLD_BYTES
_M_TRIM_THRESHOLD = -1
_heap_bounded = False


def bound_host_heap() -> bool:
    """Fix glibc's mmap threshold at ``MMAP_THRESHOLD_BYTES`` and its trim threshold at
    ``TRIM_THRESHOLD_BYTES`` for this process, once (not when the user set
    ``MALLOC_MMAP_THRESHOLD_``). Whether it is set (False off glibc)."""
    global _heap_bounded
    if _heap_bounded:
        return True
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        _heap_bounded = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))
        if _heap_bounded and "MALLOC_TRIM_THRESHOLD_" not in os.environ:
            libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    except (OSError, AttributeError):
        return False
    return _heap_bounded


def configure_torch(config: Mapping[str, Any]) -> None:
    """Process-wide torch settings a combination asks for: ``threads`` (intra-op threads) and
    ``deterministic`` (deterministic kernels, see docs/reliability.md); and a bounded host heap
    (``bound_host_heap``)."""
    bound_host_heap()
    threads = config.get("threads")
    if threads is not None:
        torch.set_num_threads(int(threads))
    deterministic = bool(config.get("deterministic"))
    if deterministic:
        # cuBLAS needs a fixed workspace for reproducible results; read when CUDA initialises.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    if deterministic != torch.are_deterministic_algorithms_enabled():
        torch.use_deterministic_algorithms(deterministic)  # (costly to call: imports the compiler)
    if torch.backends.cudnn.is_available():
        torch.backends.cudnn.deterministic = deterministic
        torch.backends.cudnn.benchmark = False


def resolve_device(config: Mapping[str, Any]) -> torch.device:
    """``cuda:<gpu_id>`` when ``use_gpu`` and CUDA is available, else the CPU.

    TF32 stays off: parity with the reference needs full float32 matmuls.
    """
    if config.get("use_gpu") and torch.cuda.is_available():
        gpu = int(config.get("gpu_id") or 0)
        if gpu >= torch.cuda.device_count():
            raise UserError(
                f"gpu_id={gpu}, but only {torch.cuda.device_count()} GPU(s) are visible"
            )
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        return torch.device(f"cuda:{gpu}")
    return torch.device("cpu")


def model_class(name: str) -> type[Recommender]:
    """The model class ``name`` refers to (see ``models.registry``), or a user error."""
    return models.registry.load(name)


def check_combination(combo: Mapping[str, Any]) -> None:
    """Validate one combination (shared keys and the model's own) before anything is written."""
    from mgrec import config as configuration

    configuration.validate(combo)
    model_class(str(combo["model"])).check_config(combo)


def load_data(config: Mapping[str, Any]) -> RecData:
    """Load and validate the dataset a config names (creating the embedded one on first use)."""
    if config["dataset"] == EMBEDDED_NAME:
        ensure_embedded(project_path(config["data_path"]))
    return load_dataset(config, model_class(str(config["model"])).modalities)


def build_evaluators(
    data: RecData, config: Mapping[str, Any], device: torch.device
) -> dict[str, Evaluator]:
    """The valid and test evaluators. Validation masks the training items; the test split masks
    them too and, with ``test_mask_valid``, the user's validation items (RecBole's rule)."""
    also_masked = {"valid": data.valid} if config.get("test_mask_valid") else None
    common: dict[str, Any] = dict(
        n_items=data.n_items,
        topk=config["topk"],
        metrics=config["metrics"],
        batch_size=config["eval_batch_size"],
        device=device,
    )
    return {
        "valid": Evaluator(data.valid, data.train, **common),
        "test": Evaluator(data.test, data.train, also_masked=also_masked, **common),
    }


def build_batches(data: RecData, config: Mapping[str, Any], device: torch.device) -> TrainBatches:
    """One epoch of training batches per iteration, seeded per combination by the trial."""
    return TrainBatches(
        data.train,
        data.n_items,
        int(config["train_batch_size"]),
        negatives=bool(config["use_neg_sampling"]),
        device=device,
    )


def frozen_item_graph(
    model_data: ModelData,
    k: int,
    image_weight: float,
    cache: Cache | None,
    sources: Mapping[str, str],
) -> graphs.SparseOp:
    """FREEDOM/DRAGON's kNN item graph from the raw features, [I, I]: from the cache when an
    entry for (k, image weight, the feature files' fingerprints) exists, else built (and stored,
    unless ``cache`` is None)."""
    if k > model_data.n_items:
        raise UserError(f"knn_k={k} exceeds the number of items ({model_data.n_items})")
    v_feat, t_feat = model_data.v_feat, model_data.t_feat

    def build() -> dict[str, np.ndarray]:
        graph = graphs.mixed_modality_graph(v_feat, t_feat, int(k), float(image_weight))
        return {"indices": graph.indices().cpu().numpy(), "values": graph.values().cpu().numpy()}

    if cache is None:
        stored = build()
    else:
        features = {m: sources[m] for m in ("v", "t") if m in sources}
        params = {"k": int(k), "image_weight": float(image_weight), "features": features}
        # k entries per item and modality (the two modalities' graphs are summed, coalesced)
        n_items, most = model_data.n_items, model_data.n_items * int(k) * len(features)
        stored = cache.get_or_build(
            "item-knn", params, build, check=graphs.check_edge_arrays(n_items, n_items, most)
        )
    indices = torch.as_tensor(stored["indices"], device=model_data.device)
    values = torch.as_tensor(stored["values"], device=model_data.device)
    return graphs.SparseOp(graphs.sparse(indices, values, model_data.n_items))


def build_model_data(
    data: RecData, config: Mapping[str, Any], device: torch.device, use_cache: bool = True
) -> tuple[ModelData, list[str]]:
    """What a model is built from: the data as tensors on the device and, if the model needs
    them, the user graph (the dataset's own file, or built into the cache) and the frozen kNN
    item graph (cached). ``use_cache`` False builds derived graphs without storing them (for
    shifted features, whose graphs would never be read again). Also returns log notes."""
    cls = model_class(str(config["model"]))
    cache = Cache(project_path(config["cache_dir"])) if use_cache else None
    model_data = ModelData.from_dataset(data, device)
    notes: list[str] = []
    if cls.needs_user_graph:
        model_data.user_graph, where = user_graph.for_dataset(
            data, str(config["user_graph_dict_file"]), cache
        )
        notes.append(where)
    if cls.needs_item_graph:
        model_data.item_graph = frozen_item_graph(
            model_data, int(config["knn_k"]), float(config["mm_image_weight"]), cache, data.sources
        )
    return model_data, notes


def evaluate(model: Recommender, evaluator: Evaluator) -> dict[str, float]:
    """Score every item for the evaluator's users with the model in eval mode."""
    model.eval()
    with torch.no_grad():
        return evaluator.evaluate(model.scorer())


@dataclass
class Experiment:
    """Everything one combination needs, built from its config by ``build`` or an
    ``ExperimentBuilder``: what a trial trains and evaluates."""

    config: dict[str, Any]
    data: RecData
    device: torch.device
    model_data: ModelData
    evaluators: dict[str, Evaluator]
    batches: TrainBatches
    notes: list[str] = field(default_factory=list)

    @property
    def inputs(self) -> dict[str, str]:
        """Fingerprints of the files this combination read (interactions, features, user graph)."""
        return dict(self.data.sources)

    def build_model(
        self, state: Mapping[str, torch.Tensor] | None = None, source: str = "state_dict"
    ) -> Recommender:
        """A fresh model, seeded with the combination's seed (as the reference does before every
        combination); ``state`` (a state_dict) is loaded strictly, naming ``source`` in errors."""
        init_seed(int(self.config["seed"]))
        model = model_class(str(self.config["model"]))(self.config, self.model_data)
        model = model.to(self.device)
        if state is not None:
            for note in checkpoint.load_strict(model, state, source):
                log.info(note)
        return model

    def evaluate(self, model: Recommender, split: str) -> dict[str, float]:
        """``split``'s metrics ("valid" or "test") of ``model``."""
        return evaluate(model, self.evaluators[split])


class ExperimentBuilder:
    """Builds the experiments of many combinations, sharing the parts whose settings agree.

    Each part (data, evaluators, batches, model inputs) is kept for the last settings it was
    built with, and rebuilt (after dropping the old one, to bound memory) when they change, as
    is every part built from it: a grid that varies only model and training keys loads its data
    once.
    """

    def __init__(self) -> None:
        self._parts: dict[str, tuple[str, Any]] = {}
        self._versions: dict[str, int] = {}

    def _part(
        self,
        name: str,
        config: Mapping[str, Any],
        keys: tuple[str, ...],
        make: Callable[[], T],
        after: tuple[str, ...] = (),
    ) -> T:
        """The part ``name`` for ``config``'s values of ``keys`` and the current versions of the
        parts it is built from (``after``): kept, or made anew."""
        settings = [[config.get(k) for k in keys], [self._versions.get(d, 0) for d in after]]
        key = json.dumps(settings, default=str)
        kept = self._parts.get(name)
        if kept is not None and kept[0] == key:
            return kept[1]  # type: ignore[no-any-return]
        self._parts.pop(name, None)
        value = make()
        self._parts[name] = (key, value)
        self._versions[name] = self._versions.get(name, 0) + 1
        return value

    def build(self, combo: Mapping[str, Any]) -> Experiment:
        """The experiment of one combination."""
        config = dict(combo)
        configure_torch(config)
        device = resolve_device(config)
        data: RecData = self._part("data", config, DATA_KEYS, lambda: load_data(config))
        evaluators: dict[str, Evaluator] = self._part(
            "evaluators", config, (*EVALUATOR_KEYS, *DEVICE_KEYS),
            lambda: build_evaluators(data, config, device), after=("data",),
        )  # fmt: skip
        batches: TrainBatches = self._part(
            "batches", config, (*BATCH_KEYS, *DEVICE_KEYS),
            lambda: build_batches(data, config, device), after=("data",),
        )  # fmt: skip
        model_data, notes = self._part(
            "model_data", config, (*MODEL_DATA_KEYS, *DEVICE_KEYS),
            lambda: build_model_data(data, config, device), after=("data",),
        )  # fmt: skip
        return Experiment(config, data, device, model_data, evaluators, batches, list(notes))


def build(combo: Mapping[str, Any], data: RecData | None = None) -> Experiment:
    """The experiment of one combination, sharing nothing with other builds. ``data`` replaces
    the dataset the config names (robustness: the same dataset with shifted features); derived
    graphs are then built afresh and not cached."""
    if data is None:
        return ExperimentBuilder().build(combo)
    config = dict(combo)
    configure_torch(config)
    device = resolve_device(config)
    model_data, notes = build_model_data(data, config, device, use_cache=False)
    return Experiment(
        config, data, device, model_data, build_evaluators(data, config, device),
        build_batches(data, config, device), notes,
    )  # fmt: skip


@dataclass
class Restored:
    """A checkpoint brought back: the experiment it was built in, the model with its parameters
    (scoring from them, or as the run that wrote it did: see ``restore``), the file's stored
    payload, and ``as_stored``: whether the checkpoint's scoring state was put back."""

    experiment: Experiment
    model: Recommender
    stored: dict[str, Any]
    as_stored: bool = False


def restore(
    stored: Mapping[str, Any],
    combo: Mapping[str, Any],
    source: str,
    data: RecData | None = None,
    as_stored: bool = False,
) -> Restored:
    """The one way from a checkpoint to a model: build ``combo``'s experiment (on ``data``
    instead of the dataset it names, when given: shifted features), build the model, load the
    stored ``state_dict`` strictly (``source`` names it in errors) and score from the
    parameters. ``stored`` is what ``checkpoint.read`` returned.

    ``as_stored`` (``--resume``) scores as the run that wrote the checkpoint did, so that its
    stored metrics are reproduced: the scoring state saved at its best epoch
    (``Recommender.scoring_state``: the representation ``fresh_eval: false`` scored from,
    DRAGON/DualGNN's neighbour padding draw) is put back, when the checkpoint holds one and is
    evaluated on the dataset and data files it was trained on. Otherwise (and always for
    ``data``: shifted features must be scored afresh) scores come from the parameters."""
    built = build(combo, data=data)
    model = built.build_model(stored["state_dict"], source)
    scoring = stored.get("scoring")
    usable = (
        as_stored
        and data is None
        and isinstance(scoring, Mapping)
        and combo.get("dataset") == stored.get("dataset")
        and built.inputs == stored.get("inputs")
    )
    # From the parameters (the reference's quick_eval), or from the run's own scoring state.
    model.prepare_scoring(scoring if usable else None)
    return Restored(built, model, dict(stored), as_stored=bool(usable))


def checkpoint_combo(stored: Mapping[str, Any], paths: Mapping[str, Any]) -> dict[str, Any]:
    """The combination to rebuild an mgrec checkpoint with: its stored config, with the
    path-like keys taken from ``paths`` (a config built from the YAML files and the user's
    layers: never from the file)."""
    from mgrec.config import with_paths

    if stored.get("config") is None:
        raise UserError("a bare state_dict holds no config: give the model and its settings")
    return with_paths(stored["config"], paths)
