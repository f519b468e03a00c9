"""SLMRec (Tao et al., IEEE TMM 2022), as in MMRec. Needs image and text features.

    LGN(X_u, X_i) = mean_{l=0..L} A^l [X_u ; X_i]            A: the 'pre' normalised adjacency
    (iu, ii) = LGN(E_user, E_item)
    (vu, vi) = LGN(E_user, v_dense(norm(V)))                the same E_user in all three [R]
    (tu, ti) = LGN(E_user, t_dense(norm(T)))                features row-L2-normalised [R]
    user = user_after([iu || vu || tu]),  item = item_after([ii || vi || ti])   (concat fusion)
    main = CE(norm(user[u]) norm(item[p])^T / temp, diag)   in-batch negatives; batch row 2 unused
    FAC:  a = g_i_iv(ii[p]),  l_v = CE(a g_v_iv(vi[p])^T / ssl_temp, diag)
          l_t = CE(g_iva_ivat(g_iv_iva(a)) g_t_ivat(ti[p])^T / ssl_temp, diag)
    L = main + ssl_alpha * (l_v + l_t);  score = sigmoid(<user, item>)

The batch's positives repeat items: each CE is computed over its distinct items (columns, and
for FAC rows too) with their counts, the same loss on a smaller product (on a CPU; see
``group_entries``). Validation and test score from the last training forward [R: stale].
``g_a_iva`` (audio) is never used but is in the state_dict [D]; ``reg`` is never read [D].
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
from mgrec.models.losses import info_nce
from mgrec.models.ops import buffer_of, gemm_rows, group_entries, linear

SSL_TASKS = ("FAC",)  # the reference's FD / FM / FD+FM read a missing config key and crash
FUSION_MODES = ("concat", "mean")


def _linear_with_default_bias(fan_in: int, fan_out: int) -> nn.Linear:
    """``nn.Linear`` whose weight is re-drawn xavier-uniform (the bias keeps torch's default)."""
    layer = nn.Linear(fan_in, fan_out)
    nn.init.xavier_uniform_(layer.weight)
    return layer


class SLMRec(Recommender):
    """LightGCN over id, image and text item embeddings with a fine-and-coarse SSL task."""

    name = "SLMRec"
    paper_order = 5
    modalities = "both"
    stale_scores = True
    v_feat: torch.Tensor  # buffers
    t_feat: torch.Tensor
    g_i_iv: nn.Linear  # the FAC heads, created by name in __init__
    g_v_iv: nn.Linear
    g_iv_iva: nn.Linear
    g_a_iva: nn.Linear
    g_iva_ivat: nn.Linear
    g_t_ivat: nn.Linear
    config_schema = {
        "recdim": "int+", "layer_num": "int0", "temp": "number+", "ssl_temp": "number+",
        "ssl_alpha": "number+",
    }  # fmt: skip

    @classmethod
    def check_config(cls, config: Mapping[str, Any]) -> None:
        super().check_config(config)
        for key in ("temp", "ssl_temp"):
            if config[key] <= 0:
                raise UserError(f"config key '{key}' must be > 0 for SLMRec, got {config[key]!r}")
        allowed = {
            "ssl_task": (SSL_TASKS, "FD, FM and FD+FM are not runnable in the reference"),
            "mm_fusion_mode": (FUSION_MODES, ""),
            "init": (("xavier",), "the reference's 'normal' init crashes"),
            "adj_type": (("pre",), "only the symmetric 'pre' normalisation is implemented"),
        }
        for key, (choices, why) in allowed.items():
            if config.get(key) not in choices:
                raise UserError(
                    f"config key '{key}' must be one of {', '.join(map(repr, choices))} for "
                    f"SLMRec, got {config.get(key)!r}" + (f" ({why})" if why else "")
                )

    def __init__(self, config: Mapping[str, Any], data: ModelData) -> None:
        super().__init__(config, data)
        d = config["recdim"]
        self.n_layers = config["layer_num"]
        self.temp = float(config["temp"])
        self.ssl_temp = float(config["ssl_temp"])
        self.ssl_alpha = float(config["ssl_alpha"])
        self.fusion = config["mm_fusion_mode"]
        self.norm_adj = data.norm_adj()  # = the 'pre' variant at float32 (docs/MODELS.md: graphs)
        # Modules are created in the reference's order, so its RNG draws and state_dict order
        # are reproduced: each default init is followed by a xavier-uniform weight.
        self.embedding_user = nn.Embedding(self.n_users, d)
        self.embedding_item = nn.Embedding(self.n_items, d)
        nn.init.xavier_uniform_(self.embedding_user.weight)
        nn.init.xavier_uniform_(self.embedding_item.weight)
        # Features are L2-normalised once [R]; buffers follow .to(device) but are not saved.
        image, text = data.image_features("SLMRec"), data.text_features("SLMRec")
        self.register_buffer("v_feat", gemm_rows(F.normalize(image, dim=1)), persistent=False)
        self.register_buffer("t_feat", gemm_rows(F.normalize(text, dim=1)), persistent=False)
        self.v_dense = _linear_with_default_bias(self.v_feat.shape[1], d)
        self.t_dense = _linear_with_default_bias(self.t_feat.shape[1], d)
        fused = 3 * d if self.fusion == "concat" else d  # the reference sizes both as 3d
        self.embedding_item_after_GCN = nn.Linear(fused, d)
        self.embedding_user_after_GCN = nn.Linear(fused, d)
        nn.init.xavier_uniform_(self.embedding_item_after_GCN.weight)
        nn.init.xavier_uniform_(self.embedding_user_after_GCN.weight)
        # FAC heads: every default init first, then every xavier, in this order.
        shapes = {
            "g_i_iv": (d, d), "g_v_iv": (d, d), "g_iv_iva": (d, d), "g_a_iva": (d, d),
            "g_iva_ivat": (d, d // 2), "g_t_ivat": (d, d // 2),
        }  # fmt: skip
        for name, (fan_in, fan_out) in shapes.items():
            setattr(self, name, nn.Linear(fan_in, fan_out))
        for name in shapes:
            nn.init.xavier_uniform_(getattr(self, name).weight)

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        """LGN of the three inputs side by side: users [U, 3d] = [iu || vu || tu] and items
        [I, 3d] = [ii || vi || ti].

        The columns of a graph product are independent, so one product of the three blocks
        equals the reference's three separate propagations.
        """
        user = self.embedding_user.weight
        v_item = linear(self.v_dense, self.v_feat)
        t_item = linear(self.t_dense, self.t_feat)
        x = torch.cat(
            [
                torch.cat([user, user, user], dim=1),  # the same user embedding thrice [R]
                torch.cat([self.embedding_item.weight, v_item, t_item], dim=1),
            ]
        )
        out = graphs.layer_mean(self.norm_adj, x, self.n_layers)
        return out[: self.n_users], out[self.n_users :]

    def fuse(self, blocks: torch.Tensor) -> torch.Tensor:
        """[n, 3d] (id, v, t blocks) -> [n, 3d] for concat fusion or their mean [n, d]."""
        if self.fusion == "concat":
            return blocks
        return blocks.unflatten(1, (3, -1)).mean(dim=1)

    def forward(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """User [U, d] and item [I, d] representations, and the items' LGN blocks [I, 3d]."""
        user_blocks, item_blocks = self.propagate()
        user = self.embedding_user_after_GCN(self.fuse(user_blocks))
        item = self.embedding_item_after_GCN(self.fuse(item_blocks))
        return user, item, item_blocks

    def fac_loss(self, item_blocks: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """Fine-and-coarse alignment of the batch items' LGN blocks: id <-> image, then
        (id, image) <-> text. No normalisation, unlike the main loss. Shape [].

        ``item_blocks`` [n, 3d] are the batch's distinct items, ``counts`` [n] how often each
        occurs: rows and columns of the reference's [B, B] logits repeat with the items, so
        the loss is the same on the [n, n] logits of distinct items, counted ``counts`` times.
        """
        ii, vi, ti = item_blocks.chunk(3, dim=1)
        a = self.g_i_iv(ii)
        v_logits, t_logits = buffer_of(self, "image logits"), buffer_of(self, "text logits")
        loss_v = info_nce(
            a, self.g_v_iv(vi), self.ssl_temp, counts=counts, weights=counts, buffer=v_logits
        )
        c = self.g_iva_ivat(self.g_iv_iva(a))
        loss_t = info_nce(
            c, self.g_t_ivat(ti), self.ssl_temp, counts=counts, weights=counts, buffer=t_logits
        )
        return loss_v + loss_t

    def calculate_loss(self, batch: torch.Tensor) -> torch.Tensor:
        users, pos = batch[0], batch[1]  # row 2 (sampled negatives) is ignored [R]
        user, item, item_blocks = self.forward()
        self.remember(user, item)  # scored at validation/test unless fresh_eval [R]
        # The positives' columns of the in-batch logits repeat with the items: each distinct
        # item is one column, its softmax term counted as often as it occurs.
        items, column, counts = group_entries(pos)
        main = info_nce(
            F.normalize(user.index_select(0, users), dim=1),
            F.normalize(item.index_select(0, items), dim=1),
            self.temp,
            targets=column,
            counts=counts,
            buffer=buffer_of(self, "logits"),
        )
        return main + self.ssl_alpha * self.fac_loss(item_blocks.index_select(0, items), counts)

    def inference_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        user, item, _ = self.forward()
        return user, item

    def full_sort_predict(self, users: torch.Tensor) -> torch.Tensor:
        """``sigmoid(<user, item>)`` [len(users), I], recomputed from the parameters.

        The sigmoid keeps the ranking, so ``scorer`` (the evaluator's path) leaves it out.
        """
        return torch.sigmoid(super().full_sort_predict(users))
