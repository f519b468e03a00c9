"""Loss helpers with the reference's exact reductions (they differ per model, see MODELS.md)."""

from __future__ import annotations

import torch


def bpr_log_gamma(pos: torch.Tensor, neg: torch.Tensor, gamma: float = 1e-10) -> torch.Tensor:
    """``-mean(log(gamma + sigmoid(pos - neg)))`` (MMRec's BPRLoss, VBPR). Shape []."""
    return -torch.log(gamma + torch.sigmoid(pos - neg)).mean()


def bpr_log(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """``-mean(log(sigmoid(pos - neg)))`` with no epsilon (MMGCN, GRCN). Shape []."""
    return -torch.log(torch.sigmoid(pos - neg)).mean()


def node_bpr_log(
    rep: torch.Tensor, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor
) -> torch.Tensor:
    """``bpr_log`` on rows of one node table: rep [N, d]; users, pos, neg are node ids [B]."""
    e_u = rep[users]
    return bpr_log(rowwise_dot(e_u, rep[pos]), rowwise_dot(e_u, rep[neg]))


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
    return (table[user_rows] ** 2 + table[item_rows] ** 2).mean()


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
