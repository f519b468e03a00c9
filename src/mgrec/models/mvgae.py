"""MVGAE (Yi & Chen, IEEE TMM 2021), as in MMRec: a multimodal variational graph auto-encoder.

Three experts m: image (features V), text (T) and "collaborative" (C, a frozen random item
table [R]), each a graph network over S2 plus self-loops, from X_0 = norm([P_m ; MLP_m(F_m)])
(P_m: frozen random user preferences [U, 128] [R]):

    conv(X)    = dropout_0.1( norm( MeanAgg(X W) + b ) )     mean over S2 in-edges and self-loop
    X          = lrelu(g_1(lrelu(conv_1(X_0))))               (then conv_2/g_2 when n_layers > 1)
    mu_m       = g_4(lrelu(conv_4(X))) + lrelu(lin_4(X))      [N, d]
    lv_m       = g_5(lrelu(conv_5(X))) + lrelu(lin_5(X))      [N, d] log-variances
    (mu, lv)   = PoE(PoE(v, t), c)       PoE: tau_k = 1 / (exp(lv_k) + 1e-8),
                 mu = sum_k tau_k mu_k / sum_k tau_k,  lv = log(1 / sum_k tau_k)
    reparam    = mu + eps * 0.1 * exp(min(lv, 10) / 2)  in training, mu in eval   [R: the 0.1]
    recon(z)   = -sum_b log2 sigmoid( sigmoid(<s_u, s_p>) - sigmoid(max_b' <s_u, s_n_b'>) )
                 s = sigmoid(z) [N, d]; the hardest negative of the whole batch [R]; a sum [R];
                 item ids index s without the user offset, i.e. user rows [R]
    KL(mu, lv) = -0.5 * mean_rows sum_d (1 + lv' - mu^2 - exp(lv')),   lv' = min(lv, 10)
    L          = recon(z) + w KL(mu, lv) + sum_m [ recon(reparam(mu_m, lv_m)) + w KL(mu_m, lv_m) ]
    score(u,i) = <sigmoid(mu)_u, sigmoid(mu)_{U+i}>   from the last training forward [R: stale]

w is ``kl_weight``; the reference reads MG's ``beta`` as its KL weight when MG is on (the two
share a key there): ``kl_weight: mg_beta`` reproduces that. At d = 64 the reconstruction term
is exactly flat in float32 (sigmoid(~16) rounds to 1.0, so every row contributes log2(1/2) and
no gradient) [R]: the faithful model trains on the KL terms alone. ``corrected_recon: True``
offsets item ids into the joint table and computes the outer log-sigmoid of
sigmoid(a) - sigmoid(b) = sigmoid(-b) - sigmoid(-a) without cancellation near 1: its gradient
is then never exactly 0, though still about sigmoid'(16) ~ 1e-7 per row at d = 64, since the
double sigmoid saturates in exact arithmetic too (docs/MODELS.md 3.14 has measured recalls).

The reference gathers [2E + N, d] messages per convolution and a [B, B, d] tensor per
reconstruction [M]; here each layer's convolutions of the three experts are one sparse product
(the columns are independent), and the hardest negatives are found on a [B, B] product (of
the batch's distinct users and negatives, on a CPU).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from mgrec import graphs
from mgrec.errors import UserError
from mgrec.models.base import ModelData, Recommender
from mgrec.models.losses import gather_rows, rowwise_dot
from mgrec.models.ops import dropout, gemm_rows, group_entries, linear, rand_xavier_normal
from mgrec.models.schema import check_keys

LATENT = 128  # the experts' input width, hard-coded in the reference
MESSAGE_DROPOUT = 0.1  # inside every convolution, training mode only
NOISE_SCALE = 0.1  # the reparameterisation's extra factor [R]
MAX_LOG_VARIANCE = 10.0
MG_BETA = "mg_beta"  # kl_weight value: the KL weight is MG's beta (the reference's merged key)

_FROZEN_WARNING = (
    "a reference MVGAE checkpoint does not store its frozen random tensors (the collaborative "
    "item table and the user preferences), so its scores cannot be reproduced exactly: they are "
    "redrawn here, and match the reference's only for the same seed and data"
)


class MeanConv(nn.Module):
    """The reference's graph convolution: weight W [in, out] used as ``x @ W``, bias b [out];
    ``forward`` is ``norm(MeanAgg(x W) + b)`` (message dropout is applied by the caller)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_dim, out_dim))
        self.bias = nn.Parameter(torch.empty(out_dim))
        # PyG's uniform(in_dim) on both, then xavier-normal on the weight: the reference's RNG order
        bound = 1.0 / math.sqrt(in_dim)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)
        nn.init.xavier_normal_(self.weight)


def _xavier_linear(in_dim: int, out_dim: int) -> nn.Linear:
    """``nn.Linear`` (default init drawn first) with its weight re-drawn xavier-normal."""
    layer = nn.Linear(in_dim, out_dim)
    nn.init.xavier_normal_(layer.weight)
    return layer


class Expert(nn.Module):
    """One expert's parameters (the reference's ``v_gcn`` / ``t_gcn`` / ``c_gcn``), created in
    its state_dict and RNG order. ``preference`` [U, 128] is a frozen random buffer [R].

    ``linear_layer1`` and ``linear_layer2`` are never used [D]; ``conv_embed_2`` / ``g_layer2``
    only when n_layers > 1 (``g_layer2`` keeps torch's default init [R]).
    """

    preference: torch.Tensor  # buffer

    def __init__(self, n_users: int, feature_dim: int, d: int) -> None:
        super().__init__()
        self.register_buffer("preference", rand_xavier_normal(n_users, LATENT))
        self.MLP = _xavier_linear(feature_dim, LATENT)
        self.conv_embed_1 = MeanConv(LATENT, d)
        self.linear_layer1 = _xavier_linear(LATENT, d)
        self.g_layer1 = _xavier_linear(d, d)
        self.conv_embed_2 = MeanConv(d, d)
        self.linear_layer2 = _xavier_linear(d, d)
        self.g_layer2 = nn.Linear(d, d)
        self.conv_embed_4 = MeanConv(d, d)
        self.linear_layer4 = _xavier_linear(d, d)
        self.g_layer4 = _xavier_linear(d, d)
        self.conv_embed_5 = MeanConv(d, d)
        self.linear_layer5 = _xavier_linear(d, d)
        self.g_layer5 = _xavier_linear(d, d)

    def inputs(self, features: torch.Tensor) -> torch.Tensor:
        """X_0 = norm([P ; MLP(F)]): features [I, D] -> [N, 128]."""
        return F.normalize(torch.cat([self.preference, linear(self.MLP, features)]))


def product_of_experts(
    first: tuple[torch.Tensor, torch.Tensor], second: tuple[torch.Tensor, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The Gaussian product of two experts (mu, log-variance), each [N, d]."""
    precisions = [1.0 / (torch.exp(lv) + 1e-8) for _, lv in (first, second)]
    total = precisions[0] + precisions[1]
    mu = (first[0] * precisions[0] + second[0] * precisions[1]) / total
    return mu, torch.log(1.0 / total)


def kl_divergence(mu: torch.Tensor, log_variance: torch.Tensor) -> torch.Tensor:
    """-0.5 * mean over rows of sum_d (1 + lv' - mu^2 - exp(lv')), lv' = min(lv, 10). Shape []."""
    lv = log_variance.clamp(max=MAX_LOG_VARIANCE)
    return -0.5 * torch.mean(torch.sum(1 + lv - mu.pow(2) - lv.exp(), dim=1))


def hardest_negatives(s: torch.Tensor, users: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """For each batch row b, the negative n_b' of the whole batch with the largest
    <s[u_b], s[n_b']>: row ids [B] of s [N, d]. Found on the [users, negatives] product, once
    per distinct user and negative where rows are merged (a CPU: ``group_entries``)."""
    user_rows, user_at, _ = group_entries(users)
    neg_rows, _, _ = group_entries(neg)
    best = (s.index_select(0, user_rows) @ s.index_select(0, neg_rows).T).argmax(dim=1)
    return neg_rows[best].index_select(0, user_at)


def reconstruction(
    z: torch.Tensor, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, stable: bool
) -> torch.Tensor:
    """-sum_b log2 sigmoid(sigmoid(<s_u, s_p>) - sigmoid(max_b' <s_u, s_n_b'>)), s = sigmoid(z).

    z [N, d]; users, pos, neg: row ids of z [B]. The hardest negative's score is recomputed as
    a row dot product, so the gradient reaches that negative only, as ``max`` gives it.
    ``stable``: the outer log-sigmoid of sigmoid(-b) - sigmoid(-a) (the same difference,
    without the cancellation when both sigmoids round to 1), via ``logsigmoid``. Shape [].
    """
    s = torch.sigmoid(z)
    with torch.no_grad():
        hardest = hardest_negatives(s, users, neg)
    s_u, s_p, s_n = gather_rows(s, users, pos, hardest)
    pos_dot, neg_dot = rowwise_dot(s_u, s_p), rowwise_dot(s_u, s_n)
    if stable:
        margin = torch.sigmoid(-neg_dot) - torch.sigmoid(-pos_dot)
        return -(F.logsigmoid(margin) / math.log(2.0)).sum()
    margin = torch.sigmoid(pos_dot) - torch.sigmoid(neg_dot)
    return -torch.log2(torch.sigmoid(margin)).sum()


class MVGAE(Recommender):
    """Three graph experts fused by a product of Gaussians, trained as a variational
    auto-encoder of the user-item graph."""

    name = "MVGAE"
    modalities = "both"
    stale_scores = True
    training_randomness = (
        "reparameterisation noise and message dropout, drawn at every training step"
    )
    config_schema = {"embedding_size": "int+", "n_layers": "int+"}
    optional_state = {
        "collaborative": _FROZEN_WARNING,
        "v_gcn.preference": _FROZEN_WARNING,
        "t_gcn.preference": _FROZEN_WARNING,
        "c_gcn.preference": _FROZEN_WARNING,
    }
    collaborative: torch.Tensor  # buffers
    v_feat: torch.Tensor
    t_feat: torch.Tensor

    @classmethod
    def check_config(cls, config: Mapping[str, Any]) -> None:
        super().check_config(config)
        cls.kl_weight_of(config)
        if not isinstance(config.get("corrected_recon"), bool):
            raise UserError(
                f"config key 'corrected_recon' must be True or False for MVGAE, got "
                f"{config.get('corrected_recon')!r}"
            )

    @staticmethod
    def kl_weight_of(config: Mapping[str, Any]) -> float:
        """The KL weight: ``kl_weight``, or MG's ``beta`` for ``kl_weight: mg_beta`` (the
        reference, where the two share one key)."""
        if config.get("kl_weight") == MG_BETA:
            if not config.get("mg") or "beta" not in config:
                raise UserError(
                    "kl_weight 'mg_beta' takes Mirror Gradient's beta as MVGAE's KL weight (the "
                    "reference's merged key), but MG is off: give kl_weight a number"
                )
            return float(config["beta"])
        check_keys(config, kl_weight="number+")
        return float(config["kl_weight"])

    def __init__(self, config: Mapping[str, Any], data: ModelData) -> None:
        super().__init__(config, data)
        d = config["embedding_size"]
        self.n_layers = config["n_layers"]
        self.kl_weight = self.kl_weight_of(config)
        self.corrected = bool(config["corrected_recon"])
        n_nodes = self.n_users + self.n_items
        _, both_ways = data.edges()
        loops = torch.arange(n_nodes, device=both_ways.device).expand(2, n_nodes)
        self.mean_agg = graphs.mean_aggregation(torch.cat([both_ways, loops], 1), n_nodes)
        self.register_buffer("v_feat", gemm_rows(data.image_features("MVGAE")), persistent=False)
        self.register_buffer("t_feat", gemm_rows(data.text_features("MVGAE")), persistent=False)
        # Created in the reference's RNG order: collaborative, v_gcn, t_gcn, c_gcn, result_embed.
        self.register_buffer("collaborative", rand_xavier_normal(self.n_items, d))
        self.v_gcn = Expert(self.n_users, self.v_feat.shape[1], d)
        self.t_gcn = Expert(self.n_users, self.t_feat.shape[1], d)
        self.c_gcn = Expert(self.n_users, d, d)
        # The reference's initial cache: drawn only to keep torch's RNG in step with it.
        rand_xavier_normal(n_nodes, d)

    def _convolve(
        self, pairs: list[tuple[MeanConv, torch.Tensor]], noisy: bool
    ) -> list[torch.Tensor]:
        """conv(x) for every (conv, x) pair, x [N, in]: one sparse product for all of them (its
        columns are independent), then bias, row normalisation and message dropout."""
        projected = [x @ conv.weight for conv, x in pairs]
        aggregated = self.mean_agg @ torch.cat(projected, dim=1)
        parts = aggregated.split([p.shape[1] for p in projected], dim=1)
        out = []
        for (conv, _), h in zip(pairs, parts, strict=True):
            h = F.normalize(h + conv.bias)
            out.append(dropout(h, MESSAGE_DROPOUT) if noisy else h)
        return out

    def forward(
        self, noisy: bool
    ) -> tuple[tuple[torch.Tensor, torch.Tensor], list[tuple[torch.Tensor, torch.Tensor]]]:
        """The fused (mu, lv) [N, d] and the three experts' (mu_m, lv_m), image, text,
        collaborative; ``noisy``: with message dropout."""
        experts = (self.v_gcn, self.t_gcn, self.c_gcn)
        features = (self.v_feat, self.t_feat, self.collaborative)
        xs = [e.inputs(f) for e, f in zip(experts, features, strict=True)]
        layers = [("conv_embed_1", "g_layer1"), ("conv_embed_2", "g_layer2")]
        for conv, gate in layers[: min(self.n_layers, 2)]:  # a third layer never runs
            pairs = [(getattr(e, conv), x) for e, x in zip(experts, xs, strict=True)]
            hs = self._convolve(pairs, noisy)
            xs = [
                F.leaky_relu(getattr(e, gate)(F.leaky_relu(h)))
                for e, h in zip(experts, hs, strict=True)
            ]
        pairs = []
        for e, x in zip(experts, xs, strict=True):
            pairs += [(e.conv_embed_4, x), (e.conv_embed_5, x)]
        hs = self._convolve(pairs, noisy)
        moments = []
        for k, (e, x) in enumerate(zip(experts, xs, strict=True)):
            mu = e.g_layer4(F.leaky_relu(hs[2 * k])) + F.leaky_relu(e.linear_layer4(x))
            lv = e.g_layer5(F.leaky_relu(hs[2 * k + 1])) + F.leaky_relu(e.linear_layer5(x))
            moments.append((mu, lv))
        fused = product_of_experts(product_of_experts(moments[0], moments[1]), moments[2])
        return fused, moments

    @staticmethod
    def reparameterise(mu: torch.Tensor, log_variance: torch.Tensor, noisy: bool) -> torch.Tensor:
        """mu + eps * 0.1 * exp(min(lv, 10) / 2) (eps ~ N(0, 1)) when noisy, else mu."""
        if not noisy:
            return mu
        std = torch.exp(0.5 * log_variance.clamp(max=MAX_LOG_VARIANCE))
        return mu + torch.randn_like(mu) * NOISE_SCALE * std

    def calculate_loss(self, batch: torch.Tensor) -> torch.Tensor:
        users, pos, neg = batch[0], batch[1], batch[2]
        if self.corrected:  # into the item rows of the joint table
            pos, neg = pos + self.n_users, neg + self.n_users
        # Noise and dropout in training mode, as the reference (eval mode: the noise-free loss).
        noisy = self.training and not self.is_deterministic
        with self.call_randomness():
            (mu, lv), experts = self.forward(noisy)
            cached = torch.sigmoid(mu.detach())
            self.remember(cached[: self.n_users], cached[self.n_users :])
            terms = [(self.reparameterise(mu, lv, noisy), mu, lv)]
            terms += [(self.reparameterise(m, v, noisy), m, v) for m, v in experts]
        loss = torch.zeros((), device=mu.device)
        for z, m, v in terms:
            recon = reconstruction(z, users, pos, neg, stable=self.corrected)
            loss = loss + (recon + self.kl_weight * kl_divergence(m, v))
        return loss

    def inference_embeddings(self) -> tuple[torch.Tensor, torch.Tensor]:
        (mu, _), _ = self.forward(noisy=False)
        rep = torch.sigmoid(mu)
        return rep[: self.n_users], rep[self.n_users :]
