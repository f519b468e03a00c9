"""LATTICE (Zhang et al., ACM MM 2021), as in MMRec: a learned item-item graph over the features.

    O_m = Lap(kNN(cos(F_m)))                   frozen, from the raw features F_m (m = v, t)
    V = image_trs(image_embedding),  T = text_trs(text_embedding)            [I, f]
    L_m = kNN(cos(V)), kNN(cos(T))             learned: top-k cosine *values* per row
    w = softmax(modal_weight)
    S = (1 - λ) Lap(w_0 L_v + w_1 L_t) + λ (w_0 O_v + w_1 O_t)        [R: learned weights on O]
    h = S^{n_layers} E_item
    (U_o, I_o') = mean_{l=0..len(weight_size)} P^l [E_user ; E_item],   I_o = I_o' + norm(h)
    L = -mean(logsigmoid(<U_o[u], I_o[p]> - <U_o[u], I_o[n]>))
        + reg_weight * ½(|U_o[u]|² + |I_o[p]|² + |I_o[n]|²) / train_batch_size   [R: not B]

cos(X) = norm(X) norm(X)^T (no epsilon); Lap(X) = D^-1/2 X D^-1/2 with D the row sums of X at
both ends [R]; P = D^-1 (A + Id), the row-normalised user-item graph with self-loops [R]. With
one modality, S = (1 - λ) Lap(L_m) + λ O_m and ``modal_weight`` is unused.

S is rebuilt, with its gradient, on the first batch of every epoch only; the epoch's later batches
(and the mirror pass of batch 0) use it as a constant, so the feature branch and ``modal_weight``
learn on one step per epoch [R]. Every scoring rebuilds S from the current parameters [R].

Every graph here is sparse (k or 2k entries per row, 4k for S), its top-k computed in row blocks
(``graphs.row_topk``): never a dense I x I matrix, the same values and gradients.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mgrec import graphs
from mgrec.errors import UserError
from mgrec.models.base import ModelData, Recommender
from mgrec.models.losses import bpr_logsigmoid, gather_rows, rowwise_dot
from mgrec.models.ops import linear

Entries = tuple[torch.Tensor, torch.Tensor, torch.Tensor]
"""A sparse [I, I] matrix as (rows, cols, values), each [nnz]; a repeated (i, j) is a sum."""


class ItemGraph:
    """A sparse item-item matrix [I, I] whose entries may carry gradients: ``graph @ x`` [I, d]
    is differentiable in x and in the entries' values (repeated entries are summed)."""

    def __init__(self, edges: graphs.EdgeList, values: torch.Tensor) -> None:
        self.edges, self.values = edges, values

    @classmethod
    def from_entries(cls, parts: list[Entries], n_items: int) -> ItemGraph:
        """The sum of the given sparse matrices."""
        rows = torch.cat([p[0] for p in parts])
        cols = torch.cat([p[1] for p in parts])
        values = torch.cat([p[2] for p in parts])
        # EdgeList keeps its entries by (row, col); order the values the same way.
        order = torch.argsort(rows * n_items + cols, stable=True)
        edges = graphs.EdgeList(cols[order], rows[order], n_items)
        return cls(edges, values[order])

    def detached(self) -> ItemGraph:
        """The same matrix as a constant."""
        return ItemGraph(self.edges, self.values.detach())

    def __matmul__(self, x: torch.Tensor) -> torch.Tensor:
        return graphs.weighted_sum(self.edges, x, self.values)


def learned_knn(x: torch.Tensor, k: int) -> Entries:
    """``kNN(cos(x))``: each row's top-``k`` cosine similarities, kept as values, with the
    gradient a dense ``topk`` passes back to x [I, f] (through the kept entries only)."""
    normed = graphs.l2_rows(x)
    rows, cols, values = graphs.row_topk(normed.detach(), normed.detach(), k)
    return rows, cols, graphs.gathered_dots(normed, cols, values, k)


class LATTICE(Recommender):
    """Latent item-item structure learned from the features, on top of LightGCN."""

    name = "LATTICE"
    modalities = "any"
    config_schema = {
        "embedding_size": "int+", "feat_embed_dim": "int+", "knn_k": "int+", "n_layers": "int0",
        "lambda_coeff": "number", "reg_weight": "number+", "train_batch_size": "int+",
    }  # fmt: skip
    # created when the modality is present
    image_embedding: nn.Embedding
    image_trs: nn.Linear
    text_embedding: nn.Embedding
    text_trs: nn.Linear

    @classmethod
    def check_config(cls, config: Mapping[str, Any]) -> None:
        super().check_config(config)
        if config.get("cf_model", "lightgcn") != "lightgcn":
            raise UserError(
                f"LATTICE supports cf_model 'lightgcn' only (the reference's default), "
                f"got {config.get('cf_model')!r}"
            )
        sizes = config.get("weight_size")
        if not isinstance(sizes, list) or not all(
            isinstance(s, int) and not isinstance(s, bool) for s in sizes
        ):
            raise UserError(
                f"config key 'weight_size' must be a list of integers for LATTICE (its length is "
                f"the number of user-item layers), got {sizes!r}"
            )

    def __init__(self, config: Mapping[str, Any], data: ModelData) -> None:
        super().__init__(config, data)
        d, f = config["embedding_size"], config["feat_embed_dim"]
        self.knn_k = int(config["knn_k"])
        if self.knn_k > self.n_items:
            raise UserError(f"knn_k={self.knn_k} exceeds the number of items ({self.n_items})")
        self.n_layers = int(config["n_layers"])  # item-graph layers
        self.n_ui_layers = len(config["weight_size"])
        self.lambda_coeff = float(config["lambda_coeff"])
        self.reg_weight = float(config["reg_weight"])
        self.batch_size = int(config["train_batch_size"])
        if not (data.has_image or data.has_text):
            data.image_features("LATTICE")  # names what is missing
        self.norm_adj = graphs.SparseOp(
            graphs.row_norm_adj_self_loops(
                data.train_users.cpu().numpy(),
                data.train_items.cpu().numpy(),
                self.n_users,
                self.n_items,
                self.device,
            )
        )
        # Registration order = the reference's state_dict order and RNG use.
        self.modal_weight = nn.Parameter(torch.tensor([0.5, 0.5]))
        self.user_embedding = nn.Embedding(self.n_users, d)
        self.item_id_embedding = nn.Embedding(self.n_items, d)
        nn.init.xavier_uniform_(self.user_embedding.weight)
        nn.init.xavier_uniform_(self.item_id_embedding.weight)
        raw = {"image": data.v_feat, "text": data.t_feat}
        present = {m: feat for m, feat in raw.items() if feat is not None}
        self.modality_names = list(present)
        for m, feat in present.items():  # trainable copies of the features
            setattr(
                self, f"{m}_embedding", nn.Embedding.from_pretrained(feat.clone(), freeze=False)
            )
        for m, feat in present.items():
            setattr(self, f"{m}_trs", nn.Linear(feat.shape[1], f))
        # O_m: frozen, from the raw features (shared by the models built on these features)
        self.original = [graphs.frozen_knn_graph(feat, self.knn_k) for feat in present.values()]
        # The learned S: rebuilt on an epoch's first batch, then kept as a constant.
        self.build_graph = True
        self.item_graph: ItemGraph | None = None

    # --- the item graph -----------------------------------------------------------------------

    def build_item_graph(self) -> ItemGraph:
        """S from the current parameters (see the module docstring), differentiable."""
        learned = []
        for m in self.modality_names:
            table: nn.Embedding = getattr(self, f"{m}_embedding")
            projected = linear(getattr(self, f"{m}_trs"), table.weight)  # [I, f]
            learned.append(learned_knn(projected, self.knn_k))
        if len(learned) == 2:
            weights = F.softmax(self.modal_weight, dim=0)
            learned = [(r, c, w * v) for (r, c, v), w in zip(learned, weights, strict=True)]
            original = [(r, c, w * v) for (r, c, v), w in zip(self.original, weights, strict=True)]
        else:  # one modality: modal_weight unused
            original = list(self.original)
        rows = torch.cat([r for r, _, _ in learned])
        cols = torch.cat([c for _, c, _ in learned])
        mixed = graphs.sym_norm_values(
            rows, cols, torch.cat([v for _, _, v in learned]), self.n_items
        )
        lam = self.lambda_coeff
        parts = [(rows, cols, (1 - lam) * mixed)] + [(r, c, lam * v) for r, c, v in original]
        return ItemGraph.from_entries(parts, self.n_items)

    # --- model ----------------------------------------------------------------------------------

    def forward(self, build: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """User [U, d] and item [I, d] representations; ``build`` rebuilds S (with its gradient),
        otherwise the last S is used as a constant."""
        if build or self.item_graph is None:
            graph = self.build_item_graph()
            self.item_graph = graph.detached()  # for the epoch's later batches
        else:
            graph = self.item_graph
        h = self.item_id_embedding.weight
        for _ in range(self.n_layers):
            h = graph @ h
        x = torch.cat([self.user_embedding.weight, self.item_id_embedding.weight], dim=0)
        out = graphs.layer_mean(self.norm_adj, x, self.n_ui_layers)
        return out[: self.n_users], out[self.n_users :] + F.normalize(h, p=2, dim=1)

    def pre_epoch_processing(self) -> None:
        """The epoch's first batch rebuilds S."""
        self.build_graph = True

    def calculate_loss(self, batch: torch.Tensor) -> torch.Tensor:
        users, pos, neg = batch[0], batch[1], batch[2]
        build, self.build_graph = self.build_graph, False
        user_all, item_all = self.forward(build)
        e_u = user_all.index_select(0, users)
        e_p, e_n = gather_rows(item_all, pos, neg)
        loss = bpr_logsigmoid(rowwise_dot(e_u, e_p), rowwise_dot(e_u, e_n))
        # [R] divided by the configured batch size, not by B
        reg = (0.5 * (e_u**2).sum() + 0.5 * (e_p**2).sum() + 0.5 * (e_n**2).sum()) / self.batch_size
        return loss + self.reg_weight * reg

    def inference_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward(build=True)  # [R] scoring always rebuilds S

    # --- state (no randomness: the flag and S are what an epoch sets) --------------------------

    def _epoch_state(self) -> dict[str, Any]:
        return {"build_graph": self.build_graph, "item_graph": self.item_graph}

    def _fix_epoch(self) -> None:
        # deterministic() / training_draw(): a block starts as an epoch's first batch (S rebuilt
        # from the parameters), so its loss is a function of the parameters alone.
        self.build_graph = True
