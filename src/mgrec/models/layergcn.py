"""LayerGCN (Zhou et al., 2022), as in MMRec. Uses no item features.

    X_0 = [E_user ; E_item]
    X_l = c_l * (A X_{l-1}),  c_l = rowwise_cos(A X_{l-1}, X_0)      l = 1..L
    out = sum_{l=1..L} X_l                                           (layer 0 excluded)
    L = sum_batch -logsigmoid(<u,p> - <u,n>) + reg_weight * 0.5 * (|e_u|^2 + |e_p|^2 + |e_n|^2)

Training uses a degree-sensitively pruned graph, redrawn every epoch; with dropout > 0 the
reference alternates degree-sensitive (even epochs) and uniform (odd epochs) pruning [R].
The BPR term is a sum over the batch, not a mean [R]. Prediction uses the full graph.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from mgrec import graphs
from mgrec.models.base import ModelData
from mgrec.models.losses import bpr_logsigmoid, gather_rows, half_squared_l2, rowwise_dot
from mgrec.models.ops import plain_backward
from mgrec.models.pruning import EdgePruning


def _plain_refine(y: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
    cosine = (y * unit).sum(dim=1) / y.norm(dim=1).clamp_min(1e-8)
    return cosine.unsqueeze(1) * y


class _Refine(torch.autograd.Function):
    """z = c * y per row, c = <y, e> / max(|y|, 1e-8), e a unit row (``_plain_refine``).

    LayerGCN's step is made of element-wise passes over [N, d] tables; autograd needs about
    twice as many for this formula as its closed-form backward: with n = max(|y|, 1e-8),
    a = <g, y> / n and b = a c / n (0 where |y| < 1e-8, the clamp's zero gradient),
    dy = c g + a e - b y and de = a y.
    """

    @staticmethod
    def forward(ctx, y: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
        raw_norm = y.norm(dim=1)
        norm = raw_norm.clamp_min(1e-8)
        cosine = (y * unit).sum(dim=1) / norm
        ctx.save_for_backward(y, unit, cosine, norm, raw_norm)
        return cosine.unsqueeze(1) * y

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        y, unit, cosine, norm, raw_norm = ctx.saved_tensors
        if torch.is_grad_enabled():  # differentiated twice: autograd on the plain formula
            return plain_backward(_plain_refine, (y, unit), grad, ctx.needs_input_grad)
        a = (grad * y).sum(dim=1) / norm
        b = torch.where(raw_norm >= 1e-8, a * cosine / norm, 0.0)
        grad_y = grad * cosine.unsqueeze(1)
        grad_y.addcmul_(unit, a.unsqueeze(1)).addcmul_(y, b.unsqueeze(1), value=-1.0)
        grad_unit = y * a.unsqueeze(1) if ctx.needs_input_grad[1] else None
        return grad_y, grad_unit


def refine(y: torch.Tensor, unit: torch.Tensor) -> torch.Tensor:
    """LayerGCN's layer refinement: rows of y [N, d] scaled by their cosine with the unit rows
    ``unit`` [N, d] of the ego embeddings."""
    return _Refine.apply(y, unit)


class LayerGCN(EdgePruning):
    """Layer-refined graph convolution over the user-item graph."""

    name = "LayerGCN"
    paper_order = 9
    modalities = "none"
    config_schema = {
        "embedding_size": "int+",
        "n_layers": "int+",
        "reg_weight": "number+",
        "dropout": "fraction",
    }

    def __init__(self, config: Mapping[str, Any], data: ModelData) -> None:
        super().__init__(config, data)
        d = config["embedding_size"]
        self.n_layers = config["n_layers"]
        self.reg_weight = float(config["reg_weight"])
        self.user_embeddings = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_users, d)))
        self.item_embeddings = nn.Parameter(nn.init.xavier_uniform_(torch.empty(self.n_items, d)))
        self.init_pruning(data, config["dropout"], alternate=True)

    def forward(self, adj: graphs.SparseOp) -> tuple[torch.Tensor, torch.Tensor]:
        """User [U, d] and item [I, d] representations propagated over ``adj``."""
        ego = torch.cat([self.user_embeddings, self.item_embeddings], dim=0)
        # rowwise_cos(x, ego) = <x, ego / |ego|> / |x| (eps 1e-8, as F.cosine_similarity),
        # with ego's unit rows computed once for all layers.
        ego_unit = ego / ego.norm(dim=1, keepdim=True).clamp_min(1e-8)
        x, out = ego, None
        for _ in range(self.n_layers):
            x = refine(adj @ x, ego_unit)
            out = x if out is None else out + x
        assert out is not None  # n_layers >= 1 (config schema)
        return out[: self.n_users], out[self.n_users :]

    def calculate_loss(self, batch: torch.Tensor) -> torch.Tensor:
        users, pos, neg = batch[0], batch[1], batch[2]
        user_all, item_all = self.forward(self.masked_adj)
        e_u = user_all.index_select(0, users)
        e_p, e_n = gather_rows(item_all, pos, neg)
        mf = bpr_logsigmoid(rowwise_dot(e_u, e_p), rowwise_dot(e_u, e_n), reduction="sum")
        reg = half_squared_l2(
            self.user_embeddings.index_select(0, users),
            *gather_rows(self.item_embeddings, pos, neg),
        )
        return mf + self.reg_weight * reg

    def inference_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward(self.norm_adj)
