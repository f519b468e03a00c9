"""MGCN (Yu et al., ACM MM 2023), as in MMRec: multi-view graph convolution with purified features.

    Ṽ = E_item ⊙ g_v(image_trs(image_embedding)),  T̃ = E_item ⊙ g_t(text_trs(text_embedding))
    C = mean_{l=0..n_ui_layers} Â^l [E_user ; E_item]                        the content view
    V = [R G_v^{n_layers} Ṽ ; G_v^{n_layers} Ṽ],  T likewise with G_t        item-item views [N, d]
    (α_V, α_T) = softmax([q(V), q(T)]) per row,  Cm = α_V V + α_T T
    side = (g_ip(C) ⊙ (V - Cm) + g_tp(C) ⊙ (T - Cm) + Cm) / 3
    (U_o, I_o) = C + side
    L = -mean(logsigmoid(<U_o[u], I_o[p]> - <U_o[u], I_o[n]>))
        + reg_weight * ½(|U_o[u]|² + |I_o[p]|² + |I_o[n]|²) / train_batch_size    [R: not B]
        + cl_loss * (NCE(side_I[p], C_I[p]) + NCE(side_U[u], C_U[u]))

g(x) = σ(W x + b) (the four gates), q(x) = w^T tanh(W x + b) (``query_common``);
NCE(X, Y) = mean_b -log softmax_b'(<x̂_b, ŷ_b'> / 0.2)_b with row-normalised x̂, ŷ (in-batch);
Â = D^-1/2 A D^-1/2 over the training counts (no self-loops) and R its user -> item block [U, I];
G_m = D^-1/2 kNN(cos F_m) D^-1/2, frozen, from the raw features, with the row sums of the kept
cosine values at both ends [R]. G_m is built in row blocks (``graphs.normalised_knn_graph``),
never as a dense I x I similarity. Users reach the item-item views only through R [R].

On a CPU the fusion after the three views (attention, gates, side) runs on the rows the batch
reads only (its distinct users and items), the in-batch InfoNCE terms on the batch's distinct
users / positives (a repeated row is one row and one column of the logits, counted as often as
it occurs: the same loss on an [n, n] product instead of [B, B]), and the trainable feature
tables' gradients [I, D] are written over kept memory (``_TableProjection``); the values and
gradients are the same.
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
from mgrec.models.losses import bpr_logsigmoid, gather_rows, info_nce, rowwise_dot
from mgrec.models.ops import (
    ReusableBuffer,
    WeightGradBuffers,
    buffer_of,
    group_entries,
    merges_repeated_rows,
    plain_backward,
    weight_grad,
    weight_grad_buffers,
)

TEMPERATURE = 0.2  # hard-coded in the reference (its attribute tau = 0.5 is unused [D])


class _TableProjection(torch.autograd.Function):
    """``F.linear(table, weight, bias)`` of a whole trainable feature table [I, D] -> [I, out].

    Its input gradient is the table's gradient, [I, D] at every step (24 MB for 1,500 4,096-d
    images): made fresh, it is faulted in page by page each time; here it is written over
    kept memory (``ReusableBuffer``, released to autograd as the table's ``.grad``), and the
    weight gradient is ``weight_grad``'s. The same values and gradients as ``layer(table)``.
    """

    @staticmethod
    def forward(
        ctx,
        table: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        buffers: tuple[ReusableBuffer, WeightGradBuffers],
    ) -> torch.Tensor:
        ctx.save_for_backward(table, weight, bias)
        ctx.grad_buffer, ctx.weight_buffers = buffers
        return F.linear(table, weight, bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        table, weight, bias = ctx.saved_tensors
        needs = ctx.needs_input_grad
        if torch.is_grad_enabled():  # differentiated twice: autograd on the plain formula
            return (*plain_backward(F.linear, (table, weight, bias), grad, needs[:3]), None)
        grad = grad.contiguous()
        grad_table = grad_weight = grad_bias = None
        if needs[0]:
            grad_table = torch.mm(grad, weight, out=ctx.grad_buffer.empty(table.shape, table))
        if needs[1]:
            grad_weight = weight_grad(table, grad, ctx.weight_buffers)
        if bias is not None and needs[2]:
            grad_bias = grad.sum(0)
        return grad_table, grad_weight, grad_bias, None


def project_table(table: nn.Embedding, layer: nn.Linear) -> torch.Tensor:
    """``layer(table.weight)``: [I, D] -> [I, out] (see ``_TableProjection``)."""
    buffers = (buffer_of(table, "grad"), weight_grad_buffers(layer))
    return _TableProjection.apply(table.weight, layer.weight, layer.bias, buffers)


def gate(d: int) -> nn.Sequential:
    """g(x) = σ(W x + b), [n, d] -> [n, d]."""
    return nn.Sequential(nn.Linear(d, d), nn.Sigmoid())


class MGCN(Recommender):
    """Purified modality views over item-item graphs, fused with the user-item view."""

    name = "MGCN"
    modalities = "both"
    config_schema = {
        "embedding_size": "int+", "n_ui_layers": "int0", "n_layers": "int0", "knn_k": "int+",
        "reg_weight": "number+", "cl_loss": "number+", "train_batch_size": "int+",
    }  # fmt: skip

    def __init__(self, config: Mapping[str, Any], data: ModelData) -> None:
        super().__init__(config, data)
        d = config["embedding_size"]
        self.knn_k = int(config["knn_k"])
        if self.knn_k > self.n_items:
            raise UserError(f"knn_k={self.knn_k} exceeds the number of items ({self.n_items})")
        self.n_ui_layers = int(config["n_ui_layers"])
        self.n_layers = int(config["n_layers"])  # item-item layers
        self.reg_weight = float(config["reg_weight"])
        self.cl_weight = float(config["cl_loss"])
        self.batch_size = int(config["train_batch_size"])
        v_feat, t_feat = data.image_features("MGCN"), data.text_features("MGCN")
        adj, user_item = graphs.count_norm_adj(
            data.train_users.cpu().numpy(),
            data.train_items.cpu().numpy(),
            self.n_users,
            self.n_items,
            self.device,
        )
        self.norm_adj = graphs.SparseOp(adj, symmetric=True)
        self.user_item = graphs.SparseOp(user_item)  # R [U, I]
        # Registration order = the reference's state_dict order and RNG use.
        self.user_embedding = nn.Embedding(self.n_users, d)
        self.item_id_embedding = nn.Embedding(self.n_items, d)
        nn.init.xavier_uniform_(self.user_embedding.weight)
        nn.init.xavier_uniform_(self.item_id_embedding.weight)
        self.image_embedding = nn.Embedding.from_pretrained(v_feat.clone(), freeze=False)
        self.text_embedding = nn.Embedding.from_pretrained(t_feat.clone(), freeze=False)
        self.image_trs = nn.Linear(v_feat.shape[1], d)
        self.text_trs = nn.Linear(t_feat.shape[1], d)
        self.query_common = nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, 1, bias=False))
        self.gate_v = gate(d)
        self.gate_t = gate(d)
        self.gate_image_prefer = gate(d)
        self.gate_text_prefer = gate(d)
        # G_v, G_t: frozen, from the raw features (shared by the models built on these features)
        self.image_graph = self._frozen_graph(v_feat)
        self.text_graph = self._frozen_graph(t_feat)

    def _frozen_graph(self, features: torch.Tensor) -> graphs.SparseOp:
        """G_m [I, I] from the raw features [I, D] (``graphs.frozen_knn_graph``)."""
        rows, cols, values = graphs.frozen_knn_graph(features, self.knn_k)
        return graphs.SparseOp.from_entries(rows, cols, values, (self.n_items, self.n_items))

    def _item_item_view(self, graph: graphs.SparseOp, items: torch.Tensor) -> torch.Tensor:
        """[R G^{n_layers} x ; G^{n_layers} x]: x [I, d] -> [N, d]."""
        for _ in range(self.n_layers):
            items = graph @ items
        return torch.cat([self.user_item @ items, items], dim=0)

    def forward(
        self, rows: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(All, side, content), each [N, d] (users first); with ``rows`` (node ids [r]), those
        rows only, each [r, d]: the fusion after the three views is row by row, so a batch
        needs it on the rows it reads only (the same values and gradients)."""
        item_id = self.item_id_embedding.weight
        image = item_id * self.gate_v(project_table(self.image_embedding, self.image_trs))
        text = item_id * self.gate_t(project_table(self.text_embedding, self.text_trs))
        x = torch.cat([self.user_embedding.weight, item_id], dim=0)
        content = graphs.layer_mean(self.norm_adj, x, self.n_ui_layers)
        image = self._item_item_view(self.image_graph, image)
        text = self._item_item_view(self.text_graph, text)
        if rows is not None:
            content, image, text = (view.index_select(0, rows) for view in (content, image, text))
        attention = F.softmax(
            torch.cat([self.query_common(image), self.query_common(text)], dim=-1), dim=-1
        )
        common = attention[:, 0:1] * image + attention[:, 1:2] * text
        image_prefer = self.gate_image_prefer(content)
        text_prefer = self.gate_text_prefer(content)
        side = (image_prefer * (image - common) + text_prefer * (text - common) + common) / 3
        return content + side, side, content

    def calculate_loss(self, batch: torch.Tensor) -> torch.Tensor:
        users, pos, neg = batch[0], batch[1], batch[2]
        # The rows the batch reads, as node ids: on a CPU the fusion runs on the distinct ones
        # (``at``: where each batch entry's row is); elsewhere on every row, as the reference.
        nodes = torch.cat([users, pos + self.n_users, neg + self.n_users])
        rows, at = None, nodes
        if merges_repeated_rows(nodes.device):
            rows, at = torch.unique(nodes, return_inverse=True)
        everything, side, content = self.forward(rows)
        at_users, at_pos, at_neg = at.split(len(users))
        e_u, e_p, e_n = gather_rows(everything, at_users, at_pos, at_neg)
        loss = bpr_logsigmoid(rowwise_dot(e_u, e_p), rowwise_dot(e_u, e_n))
        # [R] divided by the configured batch size, not by B
        reg = (0.5 * (e_u**2).sum() + 0.5 * (e_p**2).sum() + 0.5 * (e_n**2).sum()) / self.batch_size
        if self.cl_weight == 0.0:
            return loss + self.reg_weight * reg
        contrast = self._nce(side, content, at_pos, "item")
        contrast = contrast + self._nce(side, content, at_users, "user")
        return loss + self.reg_weight * reg + self.cl_weight * contrast

    def _nce(self, a: torch.Tensor, b: torch.Tensor, ids: torch.Tensor, rows: str) -> torch.Tensor:
        """In-batch InfoNCE of the row-normalised views a[ids], b[ids] (a, b [n, d]; ids [B]
        row ids of a and b):
        a repeated row is also its own negative, i.e. one row and column of the logits counted
        as often as it occurs (``group_entries``: on a CPU, one per distinct id). Its logits
        over memory kept per ``rows`` (see ReusableBuffer). Shape []."""
        distinct, _, counts = group_entries(ids)
        return info_nce(
            F.normalize(a.index_select(0, distinct), dim=1),
            F.normalize(b.index_select(0, distinct), dim=1),
            TEMPERATURE,
            counts=counts,
            weights=counts,
            buffer=buffer_of(self, f"{rows} logits"),
        )

    def inference_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        everything, _, _ = self.forward()
        return everything[: self.n_users], everything[self.n_users :]
