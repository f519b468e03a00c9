"""What every model is given, and the small interface the trainer and evaluator rely on."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from mgrec import graphs
from mgrec.data.dataset import RecData
from mgrec.data.files import MODALITY_NAMES
from mgrec.data.user_graph import UserGraph
from mgrec.errors import UserError
from mgrec.evaluator import FactorScorer
from mgrec.models.ops import buffer_of
from mgrec.models.schema import check_keys
from mgrec.rng import seeded

Scorer = Callable[[torch.Tensor], torch.Tensor]
"""A model's scoring function: users [b] (int64) -> scores [b, n_items] for every item."""


class BlockScorer(Protocol):
    """What ``Recommender.scorer`` returns: scores of every item for users [b] (``scorer(users)``
    -> [b, I]) and of any contiguous range of items (``block(users, start, stop)`` -> [b, stop -
    start]), so an evaluator can stream items in bounded memory."""

    def __call__(self, users: torch.Tensor) -> torch.Tensor: ...

    def block(self, users: torch.Tensor, start: int, stop: int) -> torch.Tensor: ...


@dataclass
class ModelData:
    """Everything a model may know about the data at construction (no disk access).

    Attributes:
        n_users, n_items: id ranges (max id + 1 over all splits).
        train_users, train_items: int64 [E] training rows in file order (duplicates kept).
        v_feat, t_feat: float32 [I, Dv] / [I, Dt] image / text features, or None; models read
            them through ``image_features()`` / ``text_features()``, which say what is missing.
        device: where the model lives.
        user_graph: the user-user graph (DualGNN, DRAGON), or None.
        item_graph: the frozen kNN item graph [I, I] (FREEDOM, DRAGON), or None.
    """

    n_users: int
    n_items: int
    train_users: torch.Tensor
    train_items: torch.Tensor
    v_feat: torch.Tensor | None
    t_feat: torch.Tensor | None
    device: torch.device
    user_graph: UserGraph | None = None
    item_graph: graphs.SparseOp | None = None

    @classmethod
    def from_dataset(cls, data: RecData, device: torch.device) -> ModelData:
        """The dataset's training rows and features as tensors on ``device`` (graphs unset)."""

        def feature(m: str) -> torch.Tensor | None:
            array = data.feature(m)
            return None if array is None else torch.as_tensor(array, device=device)

        return cls(
            n_users=data.n_users,
            n_items=data.n_items,
            train_users=torch.as_tensor(data.train.users, device=device),
            train_items=torch.as_tensor(data.train.items, device=device),
            v_feat=feature("v"),
            t_feat=feature("t"),
            device=device,
        )

    @property
    def has_image(self) -> bool:
        return self.v_feat is not None

    @property
    def has_text(self) -> bool:
        return self.t_feat is not None

    def _required(self, tensor: torch.Tensor | None, modality: str, model: str) -> torch.Tensor:
        if tensor is None:
            raise UserError(f"{model} needs {MODALITY_NAMES[modality]} features")
        return tensor

    def image_features(self, model: str = "this model") -> torch.Tensor:
        """[I, Dv]; a user error naming ``model`` when the dataset has none."""
        return self._required(self.v_feat, "v", model)

    def text_features(self, model: str = "this model") -> torch.Tensor:
        """[I, Dt]; a user error naming ``model`` when the dataset has none."""
        return self._required(self.t_feat, "t", model)

    def neighbour_graph(self, model: str = "this model") -> UserGraph:
        """The user-user graph, with one entry per user."""
        graph = self.user_graph
        if graph is None or graph.n_users != self.n_users:
            raise UserError(f"{model} needs a user graph with one entry per user ({self.n_users})")
        return graph

    def knn_graph(self, model: str = "this model") -> graphs.SparseOp:
        """The frozen kNN item graph [I, I]."""
        if self.item_graph is None:
            raise UserError(f"{model} needs the frozen kNN item graph (built by the experiment)")
        return self.item_graph

    def edges(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The user -> item edge list S [2, E] and the bidirectional S2 [2, 2E] (items offset by U)."""
        return graphs.user_item_edges(self.train_users, self.train_items, self.n_users)

    def norm_adj(self) -> graphs.SparseOp:
        """The symmetric-normalised bipartite adjacency over distinct training pairs, [N, N]."""
        adj = graphs.bipartite_norm_adj(
            self.train_users.cpu().numpy(),
            self.train_items.cpu().numpy(),
            self.n_users,
            self.n_items,
            self.device,
        )
        return graphs.SparseOp(adj, symmetric=True)


class Recommender(nn.Module):
    """Base of all models. The trainer uses ``pre_epoch_processing`` and ``calculate_loss``;
    the evaluator uses ``scorer``. Subclasses set the class attributes below.

    **Declaring a model.** A concrete model sets ``name`` in its class body (this is what makes
    a class in ``mgrec/models/`` a built-in model: see ``registry``), and ``paper_order`` when it
    appears in the paper's tables. A model from outside the package may ship its defaults as
    ``config_file`` (a YAML file, relative to its module's folder) or ``default_config``.

    Attributes:
        name: the model's name (``--model``); set by concrete models only.
        paper_order: its row in the paper's tables (1 = first), or None.
        config_file: (models from outside mgrec) their YAML defaults, beside their module.
        default_config: (models from outside mgrec) their defaults as a mapping, when they
            ship no YAML file; may hold ``hyper_parameters`` (the grid keys).
        trainable: False for a model that is built from the data and trains nothing
            (ItemKNNCBF): a run evaluates it once.
        modalities: features the model needs: "any" (image and/or text), "both" or "none".
        needs_user_graph: whether the model reads the user-user graph.
        needs_item_graph: whether the model reads the frozen kNN item graph (``knn_k``,
            ``mm_image_weight``).
        training_randomness: what is random in its training besides the batches (for outputs
            and docs); "" when nothing is.
        config_schema: the model's config keys and their kinds (see ``check_keys``).
        state_aliases: extra state_dict names that hold the same tensor as another key
            (alias -> canonical), as the reference's DualGNN/DRAGON register.
        optional_state: keys that may be absent from a reference checkpoint, with the warning
            to log when they are (MMGCN's frozen random tensors).

    Models whose reference scores validation and test from the representation cached by the
    last training forward (MMGCN, GRCN, DualGNN, SLMRec) store it with ``remember`` and set
    ``stale_scores``; ``fresh_eval`` (config key, default False) recomputes instead. What the
    scores depend on besides the parameters (that cache, a per-epoch draw scoring reads) is
    saved with a checkpoint through ``scoring_state``/``load_scoring_state``, so ``--resume``
    scores exactly as the run did.

    **Randomness.** A model owns its training-time randomness (edge pruning, target dropout,
    sampled neighbours) and offers two ways to remove it, for analysis:
    ``with model.deterministic():`` switches it off (full graphs, no dropout, neighbour lists
    padded without drawing), and ``with model.training_draw(seed, draw):`` fixes it to one
    reproducible draw (per-epoch draws made once with ``seed``; per-call draws repeat the same
    numbers at every call), so a loss stays a deterministic function of the parameters. Both
    restore the model's own state on exit. Subclasses with randomness implement the hooks
    ``_epoch_state``/``_set_epoch_state`` (what ``pre_epoch_processing`` sets),
    ``_fix_epoch`` (its deterministic version) and, for per-call draws, wrap them in
    ``call_randomness()``; the trainer never needs to know.
    """

    name: ClassVar[str]
    paper_order: ClassVar[int | None] = None
    config_file: ClassVar[str | None] = None
    default_config: ClassVar[Mapping[str, Any]] = {}
    trainable: ClassVar[bool] = True
    modalities: ClassVar[str] = "any"
    needs_user_graph: ClassVar[bool] = False
    needs_item_graph: ClassVar[bool] = False
    training_randomness: ClassVar[str] = ""
    config_schema: ClassVar[dict[str, str]] = {}
    state_aliases: ClassVar[dict[str, str]] = {}
    optional_state: ClassVar[dict[str, str]] = {}
    stale_scores: ClassVar[bool] = False

    @classmethod
    def check_config(cls, config: Mapping[str, Any]) -> None:
        """Validate the model's keys (see ``check_keys``) before anything is trained."""
        check_keys(config, **cls.config_schema)

    def __init__(self, config: Mapping[str, Any], data: ModelData) -> None:
        super().__init__()
        self.n_users = data.n_users
        self.n_items = data.n_items
        self.device = data.device
        self.fresh_eval = bool(config.get("fresh_eval", False))
        self.training_cache: tuple[torch.Tensor, torch.Tensor] | None = None
        self.is_deterministic = False
        self._call_seed: int | None = None

    # --- what the trainer calls ------------------------------------------------------------------

    def pre_epoch_processing(self) -> None:
        """Per-epoch work before training (edge pruning, neighbour sampling). Default: none."""

    def calculate_loss(self, batch: torch.Tensor) -> torch.Tensor:
        """The loss of one batch [3, B] (users, positives, negatives) or [2, B]; 0-d or [1].

        Must not modify ``batch``: the MG trainer evaluates the same batch twice.
        """
        raise NotImplementedError

    def training_state(self) -> dict[str, Any]:
        """State beyond the parameters that carries from one epoch to the next (plain data), so a
        resumed run continues exactly (LayerGCN's alternating pruning mode). Default: none."""
        return {}

    def load_training_state(self, state: Mapping[str, Any]) -> None:
        """Put back what ``training_state`` returned."""

    # --- scoring -------------------------------------------------------------------------------

    def inference_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """User and item representations [U, D], [I, D] whose dot products are the scores,
        recomputed from the current parameters."""
        raise NotImplementedError

    def remember(self, user_e: torch.Tensor, item_e: torch.Tensor) -> None:
        """Keep the representation of this training forward (detached) for stale scoring."""
        self.training_cache = (user_e.detach(), item_e.detach())

    def full_sort_predict(self, users: torch.Tensor) -> torch.Tensor:
        """Scores [len(users), I] of every item for the given users, recomputed from the
        parameters (train items not masked)."""
        user_e, item_e = self.inference_embeddings()
        return user_e[users] @ item_e.T

    def scorer(self) -> BlockScorer:
        """Scores of users for every item, with representations computed once for all batches.

        Reproduces the reference's stale scoring (the last training forward's representation)
        for the models that have it, unless ``fresh_eval`` is set.
        """
        if self.stale_scores and not self.fresh_eval and self.training_cache is not None:
            user_e, item_e = self.training_cache
        else:
            user_e, item_e = self.inference_embeddings()
        return FactorScorer(user_e, item_e, buffer_of(self, "scores"))

    def prepare_scoring(self, state: Mapping[str, torch.Tensor] | None = None) -> None:
        """Score from the parameters, as the reference's quick_eval does after loading a
        checkpoint: representations always recomputed, the per-epoch state drawn once. Given
        ``state`` (what ``scoring_state`` returned when the checkpoint's metrics were
        computed), score exactly as the run did instead."""
        self.pre_epoch_processing()
        if state is None:
            self.fresh_eval = True
        else:
            self.load_scoring_state(state)

    def scoring_state(self) -> dict[str, torch.Tensor]:
        """What the scores depend on besides the parameters, as CPU tensors (saved with a
        checkpoint, so that it scores as the run that wrote it did): the representation of the
        last training forward when scores come from it (``stale_scores`` without
        ``fresh_eval``; the reference's ``result_embed``), ``cached_users`` [U, D] and
        ``cached_items`` [I, D]. Models with per-epoch draws that scoring reads add them."""
        if not self.stale_scores or self.fresh_eval or self.training_cache is None:
            return {}
        user_e, item_e = self.training_cache
        return {
            "cached_users": user_e.detach().to("cpu", copy=True),
            "cached_items": item_e.detach().to("cpu", copy=True),
        }

    def load_scoring_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Put back what ``scoring_state`` returned (on the model's device)."""
        if "cached_users" in state and "cached_items" in state:
            self.training_cache = (
                state["cached_users"].to(self.device),
                state["cached_items"].to(self.device),
            )

    # --- randomness ----------------------------------------------------------------------------

    @property
    def randomness(self) -> str:
        """What is random in this model's training besides the batches ("" if nothing)."""
        return self.training_randomness

    def _epoch_state(self) -> dict[str, Any]:
        """What ``pre_epoch_processing`` sets (attribute -> value), to be put back later."""
        return {}

    def _set_epoch_state(self, state: Mapping[str, Any]) -> None:
        for name, value in state.items():
            setattr(self, name, value)

    def _fix_epoch(self) -> None:
        """Set the per-epoch state without drawing (full graph, unrandomised neighbour lists)."""

    def _draw_epoch(self, draw: int) -> None:
        """Make the per-epoch draws for draw number ``draw`` (the random generators are seeded)."""
        self.pre_epoch_processing()

    @contextlib.contextmanager
    def _restoring(self) -> Iterator[None]:
        saved = (self._epoch_state(), self.training_cache, self.is_deterministic, self._call_seed)
        try:
            yield
        finally:
            epoch, self.training_cache, self.is_deterministic, self._call_seed = saved
            self._set_epoch_state(epoch)

    @contextlib.contextmanager
    def deterministic(self) -> Iterator[None]:
        """Inside the block, training-time randomness is off: full graphs instead of pruned
        ones, no dropout, neighbour lists padded without drawing. Restored on exit."""
        with self._restoring():
            self.is_deterministic = True
            self._call_seed = None
            self._fix_epoch()
            yield

    @contextlib.contextmanager
    def training_draw(self, seed: int, draw: int = 0) -> Iterator[None]:
        """Inside the block, training-time randomness is fixed to one draw: the per-epoch draws
        are made once with ``seed`` (``draw`` chooses among alternating schemes, LayerGCN's), and
        per-call draws (BM3's target dropout) repeat at every call. Restored on exit."""
        with self._restoring():
            self.is_deterministic = False
            with seeded(seed, self.device):
                self._draw_epoch(draw)
            self._call_seed = seed
            yield

    @contextlib.contextmanager
    def call_randomness(self) -> Iterator[None]:
        """Wraps a model's per-call draws: inside ``training_draw`` they are re-seeded at every
        call (the same numbers each time); otherwise they come from the global generators."""
        if self._call_seed is None:
            yield
        else:
            with seeded(self._call_seed, self.device):
                yield


def add_feature_tables(
    model: nn.Module,
    data: ModelData,
    width: int,
    init: Callable[[torch.Tensor], object] | None = None,
    need: str = "any",
) -> tuple[bool, bool]:
    """BM3's, FREEDOM's and DRAGON's trainable feature tables and their projections.

    Registers, image first (the reference's state_dict and RNG order): ``image_embedding``
    (an ``nn.Embedding`` initialised with a copy of the raw features, trainable, as the
    reference) and ``image_trs`` (``nn.Linear`` [Dv -> width], its weight re-initialised with
    ``init`` right after it is created, when given), then ``text_embedding`` / ``text_trs``.
    ``need`` "both" requires both modalities. Returns (has image, has text).
    """
    name = type(model).__name__
    has_v, has_t = data.has_image, data.has_text
    if need == "both":
        data.image_features(name), data.text_features(name)
    for modality, present, features in (
        ("image", has_v, data.v_feat),
        ("text", has_t, data.t_feat),
    ):
        if not present or features is None:
            continue
        table = nn.Embedding.from_pretrained(features.clone(), freeze=False)
        projection = nn.Linear(features.shape[1], width)
        if init is not None:
            init(projection.weight)
        setattr(model, f"{modality}_embedding", table)
        setattr(model, f"{modality}_trs", projection)
    return has_v, has_t
