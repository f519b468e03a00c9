"""Loss helpers with the reference's exact reductions (they differ per model, see docs/MODELS.md)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mgrec.models.ops import ReusableBuffer, plain_backward


def bpr_log_gamma(pos: torch.Tensor, neg: torch.Tensor, gamma: float = 1e-10) -> torch.Tensor:
    """``-mean(log(gamma + sigmoid(pos - neg)))`` (MMRec's BPRLoss, VBPR). Shape []."""
    return -torch.log(gamma + torch.sigmoid(pos - neg)).mean()


def bpr_log(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """``-mean(log(sigmoid(pos - neg)))`` with no epsilon (MMGCN, GRCN). Shape []."""
    return -torch.log(torch.sigmoid(pos - neg)).mean()


def gather_rows(table: torch.Tensor, *ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``table[ids_1], table[ids_2], ...`` with one gather, so the backward scatters into one
    zero table instead of one per index (the same sums). table [N, d]; ids int64 [B_k]."""
    rows = table.index_select(0, torch.cat(ids))
    return rows.split([len(i) for i in ids])


def node_bpr_log(
    rep: torch.Tensor, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor
) -> torch.Tensor:
    """``bpr_log`` on rows of one node table: rep [N, d]; users, pos, neg are node ids [B]."""
    e_u, e_p, e_n = gather_rows(rep, users, pos, neg)
    return bpr_log(rowwise_dot(e_u, e_p), rowwise_dot(e_u, e_n))


def bpr_logsigmoid(pos: torch.Tensor, neg: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """``-logsigmoid(pos - neg)``, averaged (FREEDOM) or summed over the batch (LayerGCN [R]).
    Shape []."""
    losses = -F.logsigmoid(pos - neg)
    return losses.sum() if reduction == "sum" else losses.mean()


def bpr_log2(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """``-mean(log2(sigmoid(pos - neg)))`` (DualGNN, DRAGON: base 2 [R]). Shape [].

    Written as the reference computes it: a margin below about -100 makes sigmoid 0 and the
    loss infinite, which (as in the reference) ends the combination with a non-finite loss.
    """
    return -torch.log2(torch.sigmoid(pos - neg)).mean()


def interleaved_square_mean(
    table: torch.Tensor, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor
) -> torch.Tensor:
    """MMGCN/GRCN's id-embedding regulariser: the mean over the reference's (user, item) rows
    (each user twice, items interleaved p, n) of ``table[user]^2 + table[item]^2``. Shape []."""
    user_rows = users.repeat_interleave(2)
    item_rows = torch.stack([pos, neg], dim=1).reshape(-1)
    e_user, e_item = gather_rows(table, user_rows, item_rows)
    return (e_user**2 + e_item**2).mean()


def emb_norm_loss(*embeddings: torch.Tensor) -> torch.Tensor:
    """Sum of Frobenius norms (not squared) over the row count of the last tensor. Shape [1]."""
    total = torch.zeros(1, device=embeddings[-1].device)
    for embedding in embeddings:
        total = total + torch.norm(embedding, p=2)
    return total / embeddings[-1].shape[0]


def half_squared_l2(*embeddings: torch.Tensor) -> torch.Tensor:
    """``sum_k 0.5 * sum(E_k ** 2)``, no averaging (MMRec's L2Loss). Shape [1]."""
    total = torch.zeros(1, device=embeddings[-1].device)
    for embedding in embeddings:
        total = total + 0.5 * torch.sum(embedding**2)
    return total


def rowwise_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``<a_r, b_r>`` per row: [B, D], [B, D] -> [B]."""
    return (a * b).sum(dim=1)


def _plain_cosine(online: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(online, target.detach(), dim=-1)


class _CosineToTarget(torch.autograd.Function):
    """``_plain_cosine``: the row cosines of ``online`` [n, d] with a fixed ``target`` [n, d]
    (no gradient), with torch's eps (1e-8) on each norm, in closed form.

    ``F.cosine_similarity`` takes ~10 element-wise passes forward and ~15 backward; BM3 calls
    it six times a step. With u = t / max(|t|, eps), n = max(|o|, eps) and c = <o, u> / n,
    dc/do = u / n - c o / (n |o|) (the norm's gradient, 0 where o = 0; the clamp has none, as
    in torch's formula).
    """

    @staticmethod
    def forward(ctx, online: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raw_norm = online.norm(dim=1)
        norm = raw_norm.clamp_min(1e-8)
        unit = target / target.norm(dim=1, keepdim=True).clamp_min(1e-8)
        cosine = (online * unit).sum(dim=1) / norm
        ctx.save_for_backward(online, target, unit, cosine, norm, raw_norm)
        return cosine

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        online, target, unit, cosine, norm, raw_norm = ctx.saved_tensors
        if torch.is_grad_enabled():  # differentiated twice: autograd on the plain formula
            return plain_backward(_plain_cosine, (online, target), grad, (True, False))
        along = grad / norm
        radial = torch.where(raw_norm > 0, along * cosine / raw_norm, 0.0)
        grad_online = unit * along.unsqueeze(1)
        grad_online.addcmul_(online, radial.unsqueeze(1), value=-1.0)
        return grad_online, None


def cosine_to_target(online: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``F.cosine_similarity(online, target.detach(), dim=-1)``: [n, d], [n, d] -> [n], with a
    faster backward (``_CosineToTarget``); the gradient reaches ``online`` only."""
    return _CosineToTarget.apply(online, target.detach())


def _plain_info_nce(
    a: torch.Tensor,
    b: torch.Tensor,
    temperature: float,
    targets: torch.Tensor,
    log_counts: torch.Tensor | None,
    weights: torch.Tensor | None,
) -> torch.Tensor:
    logits = a @ b.T / temperature
    if log_counts is None:
        losses = F.cross_entropy(logits, targets, reduction="none")
    else:  # column c counted counts[c] times in the softmax; the target's logit counted once
        target = logits.gather(1, targets.unsqueeze(1)).squeeze(1)
        losses = torch.logsumexp(logits + log_counts, dim=1) - target
    return losses.mean() if weights is None else (losses * weights).sum() / weights.sum()


class _InfoNCE(torch.autograd.Function):
    """``_plain_info_nce`` with a single [R, C] buffer and the gradient in closed form.

    torch's cross-entropy of a [B, B] product allocates six [B, B] tensors (logits, scaled
    logits, log-softmax, the one-hot gradient and two backward results); at B = 2048 each is
    16 MB, and fresh large allocations are a large part of the cost on a CPU. Here the logits
    become the softmax P in place and are kept for the backward. With s_r = g w_r / (W t)
    (W = sum of the row weights), dL/dlogit_rc = s_r t (P_rc - [c = target_r]), so
    dA = s (P b - b[targets]) and dB = P^T (s a) - sum over rows r -> target_r of s_r a_r.
    """

    @staticmethod
    def forward(
        ctx,
        a: torch.Tensor,
        b: torch.Tensor,
        temperature: float,
        targets: torch.Tensor,
        log_counts: torch.Tensor | None,
        weights: torch.Tensor | None,
        buffer: ReusableBuffer | None,
    ) -> torch.Tensor:
        shape = (a.shape[0], b.shape[0])
        probs = a.new_empty(shape) if buffer is None else buffer.empty(shape, a)
        torch.mm(a, b.T, out=probs)
        probs.div_(temperature)
        target = probs.gather(1, targets.unsqueeze(1)).squeeze(1)
        if log_counts is not None:
            probs.add_(log_counts)
        top = probs.amax(dim=1)
        probs.sub_(top.unsqueeze(1)).exp_()
        total = probs.sum(dim=1)
        probs.div_(total.unsqueeze(1))
        # -log_softmax at the targets, in log_softmax's order of operations
        losses = (top - target) + total.log()
        ctx.temperature = temperature
        ctx.save_for_backward(a, b, probs, targets, log_counts, weights)
        return losses.mean() if weights is None else (losses * weights).sum() / weights.sum()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        a, b, probs, targets, log_counts, weights = ctx.saved_tensors
        t = ctx.temperature
        if torch.is_grad_enabled():  # differentiated twice: autograd on the plain formula
            inputs = (a, b, t, targets, log_counts, weights)
            return (*plain_backward(_plain_info_nce, inputs, grad, ctx.needs_input_grad[:6]), None)
        if weights is None:
            scale = (grad / (t * a.shape[0])).expand(a.shape[0])
        else:
            scale = weights * (grad / (t * weights.sum()))
        scale = scale.unsqueeze(1)
        grad_a = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_a = torch.addmm(b[targets], probs, b, beta=-1).mul_(scale)
        if ctx.needs_input_grad[1]:
            scaled_a = a * scale
            at_targets = torch.zeros_like(b).index_add_(0, targets, scaled_a)
            grad_b = torch.addmm(at_targets, probs.T, scaled_a, beta=-1)
        return grad_a, grad_b, None, None, None, None, None


def info_nce(
    a: torch.Tensor,
    b: torch.Tensor,
    temperature: float = 1.0,
    targets: torch.Tensor | None = None,
    counts: torch.Tensor | None = None,
    weights: torch.Tensor | None = None,
    buffer: ReusableBuffer | None = None,
) -> torch.Tensor:
    """In-batch softmax cross-entropy (SLMRec's losses): the mean over rows r of
    ``CE(a_r b^T / temperature, targets_r)`` (targets default to the diagonal). Shape [].

    ``counts`` [C]: column c stands for ``counts[c]`` identical columns (its softmax term is
    counted that many times); ``weights`` [R]: row r stands for ``weights[r]`` identical rows
    (the mean is weighted). With both, a [B, B] loss over a batch with repeated items equals
    the same loss over its distinct items, computed on an [n, n] product. ``buffer``: memory
    to reuse for the [R, C] logits kept for the backward (see ``ReusableBuffer``).
    """
    if targets is None:
        targets = torch.arange(len(a), device=a.device)
    log_counts = None if counts is None else counts.to(a.dtype).log()
    weights = None if weights is None else weights.to(a.dtype)
    return _InfoNCE.apply(a, b, float(temperature), targets, log_counts, weights, buffer)
