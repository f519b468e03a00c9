"""SELFCFED_LGN (SelfCF with embedding dropout on a LightGCN encoder), as in MMRec. Uses no
item features and trains without negative items (batches [2, B]).

    A_drop   = edge dropout of A (2.2): a rate r = U[0, 1) drawn at every call [R]; each stored
               entry (each direction on its own [R]) kept iff its uniform draw >= r, the kept
               values scaled by 1 / (1 - r)
    (Ua, Ia) = mean_{l=0..L} A_drop^l [E_user ; E_item]          (A itself when scoring)
    u_on, i_on = Ua[u], Ia[i];   targets u_tg, i_tg = dropout_p(u_on), dropout_p(i_on)
               (no gradient; always in training mode [R])
    L = -1/2 mean_b cos(P u_on, i_tg) - 1/2 mean_b cos(P i_on, u_tg)
        + reg_weight * 1/2 (|u_on|^2 + |i_on|^2)          [R: propagated rows, summed]   shape [1]
    score(u, i) = <P Ua_u, Ia_i> + <Ua_u, P Ia_i>          [R: two asymmetric terms]

P is ``predictor`` (Linear d -> d). The reference draws the rate from NumPy and the edge mask
from torch's CPU generator, whatever the device [R]; so does this port. The reference's
encoder (and the model) load both feature files and never use them [D]: none are loaded here.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import nn

from mgrec import graphs
from mgrec.models.base import ModelData, Recommender
from mgrec.models.losses import cosine_to_target, half_squared_l2
from mgrec.models.ops import dropout

DROP_RATIO = 1.0  # the encoder's drop_ratio: the rate is uniform in [0, DROP_RATIO)


class EdgeDropout:
    """The normalised adjacency with its entries dropped at random (see the module docstring).

    The dropped graph is the full graph's pattern with dropped entries at 0, so the sparse
    product keeps its layout and only the values change per call (no re-sorting).

    Args:
        adjacency: the full graph A [N, N].
    """

    def __init__(self, adjacency: graphs.SparseOp) -> None:
        coo = adjacency.coo
        rows, cols = coo.indices()
        # The layout is not symmetric once entries are dropped: keep the transpose's own.
        self.pattern = graphs.SparseOp(coo, symmetric=False)
        n = coo.shape[0]
        self.transpose_order = torch.argsort(cols * n + rows, stable=True)
        self.values = coo.values()

    def __call__(self, rate: float, noise: torch.Tensor) -> graphs.SparseOp:
        """A with entry e kept iff ``noise[e] >= rate`` (entry order of ``A.coo``), the kept
        values scaled by 1 / (1 - rate)."""
        values = torch.where(noise >= rate, self.values / (1.0 - rate), 0.0)
        dropped = copy.copy(self.pattern)  # shares the layouts; new values in both orders
        dropped.values = values
        dropped.values_t = values.index_select(0, self.transpose_order)
        dropped._coo = None  # rebuilt from the new values if ever asked for
        return dropped


class LightGCNEncoder(nn.Module):
    """The reference's ``online_encoder``: its embeddings, listed item first (the reference's
    ParameterDict sorts its keys) but drawn user first."""

    def __init__(self, n_users: int, n_items: int, d: int) -> None:
        super().__init__()
        user = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_users, d)))
        item = nn.Parameter(nn.init.xavier_uniform_(torch.empty(n_items, d)))
        self.embedding_dict = nn.ParameterDict({"item_emb": item, "user_emb": user})


class SELFCFED_LGN(Recommender):  # noqa: N801 - the reference's model name
    """A LightGCN encoder whose online view predicts a dropped-out target view."""

    name = "SELFCFED_LGN"
    modalities = "none"
    training_randomness = (
        "edge dropout at a random rate and target dropout, drawn at every training step"
    )
    config_schema = {
        "embedding_size": "int+",
        "n_layers": "int0",
        "reg_weight": "number+",
        "dropout": "fraction",
    }

    def __init__(self, config: Mapping[str, Any], data: ModelData) -> None:
        super().__init__(config, data)
        d = config["embedding_size"]
        self.n_layers = config["n_layers"]
        self.reg_weight = float(config["reg_weight"])
        self.dropout = float(config["dropout"])
        self.online_encoder = LightGCNEncoder(self.n_users, self.n_items, d)
        self.predictor = nn.Linear(d, d)
        self.norm_adj = data.norm_adj()
        self.edge_dropout = EdgeDropout(self.norm_adj)

    def propagate(self, adj: graphs.SparseOp) -> torch.Tensor:
        """The layer mean over ``adj``: [N, d], users first."""
        tables = self.online_encoder.embedding_dict
        x = torch.cat([tables["user_emb"], tables["item_emb"]])
        return graphs.layer_mean(adj, x, self.n_layers)

    def forward(self, adj: graphs.SparseOp) -> tuple[torch.Tensor, torch.Tensor]:
        """The layer mean over ``adj``: users [U, d], items [I, d]."""
        out = self.propagate(adj)
        return out[: self.n_users], out[self.n_users :]

    def training_graph(self) -> graphs.SparseOp:
        """This call's dropped graph (the full one inside ``deterministic()``): the rate from
        NumPy's generator, the mask from torch's CPU generator, as the reference."""
        if self.is_deterministic:
            return self.norm_adj
        rate = float(np.random.random()) * DROP_RATIO
        noise = torch.rand(len(self.edge_dropout.values)).to(self.device)
        return self.edge_dropout(rate, noise)

    def calculate_loss(self, batch: torch.Tensor) -> torch.Tensor:
        users, items = batch[0], batch[1]
        p = 0.0 if self.is_deterministic else self.dropout
        b = len(users)
        with self.call_randomness():
            out = self.propagate(self.training_graph())
            # The batch's user rows then item rows [2B, d], in one gather, through the predictor
            # in one product, their cosines in one call: each step's kernels once, not per side.
            online = out.index_select(0, torch.cat([users, items + self.n_users]))
            with torch.no_grad():  # targets: dropout always in training mode [R]; one draw
                target = dropout(online, p)  # = the users' draw, then the items'
        # each side predicts the other's target: users against items' targets, items users'
        cosines = cosine_to_target(self.predictor(online), target.roll(b, 0))  # [2B]
        loss_ui, loss_iu = cosines[:b].mean(), cosines[b:].mean()
        reg = half_squared_l2(online)  # the user rows' and the item rows' squares together
        return -0.5 * (loss_ui + loss_iu) + self.reg_weight * reg

    def inference_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        """[P Ua || Ua] and [Ia || P Ia] [., 2d]: their dot products are the two score terms."""
        user_e, item_e = self.forward(self.norm_adj)
        return (
            torch.cat([self.predictor(user_e), user_e], dim=1),
            torch.cat([item_e, self.predictor(item_e)], dim=1),
        )
