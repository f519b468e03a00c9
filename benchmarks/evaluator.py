"""Micro-benchmark of full-ranking evaluation: matrix product vs ranking (a script, not a test).

    python benchmarks/evaluator.py                       # 4,000 users x 30,000 items x 64-d
    python benchmarks/evaluator.py --users 2000 --items 63001 --budget_mb 256 --threads 1

Random factors and a random split (``--train_per_user`` masked items and one relevant item
per user). It times, on one thread by default, the evaluator before this rewrite (a verbatim
copy of its loop: ``index_put_`` mask, ``torch.topk``, binary search; with ``--batch_size``
users per block, then with the new block size) and the current one with a plain callable and
with a :class:`~mgrec.evaluator.FactorScorer` (which may stream items), fresh memory for each
score block and blocks over kept memory (``models.ops.ReusableBuffer``, as models score; with
``--bound_heap`` the process bounds its heap as a run does, so a fresh 16 MB block is faulted
in page by page). For each it prints
the process CPU seconds spent inside the scorer (the matrix products), the rest (masking,
top-k, merging, hits: "ranking"), ranking / matmul and ranking per score, best of
``--repeats``, and checks that every variant gives the same hit matrix as the old path.
CPU seconds, not wall time, so that a shared machine perturbs the figures less.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from mgrec import experiment  # noqa: E402
from mgrec.data.dataset import Split  # noqa: E402
from mgrec.evaluator import MASK_SCORE, Evaluator, FactorScorer  # noqa: E402
from mgrec.models.ops import ReusableBuffer  # noqa: E402


def old_hits(
    evaluator: Evaluator, scorer: Callable[[torch.Tensor], torch.Tensor], batch_size: int
) -> np.ndarray:
    """The evaluator's loop before streaming (train-only masking), for comparison."""
    depth = max(evaluator.topk)
    n_items = evaluator.n_items
    keys_all, offsets = evaluator.masked_keys, evaluator.masked_offsets
    batches = []
    for start in range(0, evaluator.n_users, batch_size):
        stop = min(start + batch_size, evaluator.n_users)
        scores = scorer(evaluator.users[start:stop]).to(evaluator.device)
        keys = keys_all[offsets[start] : offsets[stop]]
        scores[keys // n_items - start, keys % n_items] = MASK_SCORE
        top_items = torch.topk(scores, depth, dim=1).indices
        batches.append(evaluator._hits(start, top_items))
    return torch.cat(batches).cpu().numpy()


class Timed:
    """Wraps a scorer and adds up the seconds spent in its calls (the matrix products)."""

    def __init__(self, scorer: FactorScorer, blocks: bool) -> None:
        self.scorer, self.seconds = scorer, 0.0
        if blocks:
            self.block = self._block

    def __call__(self, users: torch.Tensor) -> torch.Tensor:
        start = time.process_time()
        scores = self.scorer(users)
        self.seconds += time.process_time() - start
        return scores

    def _block(self, users: torch.Tensor, item_start: int, item_stop: int) -> torch.Tensor:
        start = time.process_time()
        scores = self.scorer.block(users, item_start, item_stop)
        self.seconds += time.process_time() - start
        return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=4000)
    parser.add_argument("--items", type=int, default=30000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--depth", type=int, default=50, help="max(topk)")
    parser.add_argument("--train_per_user", type=int, default=20)
    parser.add_argument("--batch_size", type=int, default=4096)
    parser.add_argument("--budget_mb", type=float, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--bound_heap", action="store_true", help="bound the heap as a run does")
    args = parser.parse_args()
    if args.bound_heap:
        experiment.bound_host_heap()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    n_users, n_items = args.users, args.items
    n_train = n_users * args.train_per_user
    train = Split(rng.integers(0, n_users, n_train), rng.integers(0, n_items, n_train))
    split = Split(np.arange(n_users), rng.integers(0, n_items, n_users))
    generator = torch.Generator().manual_seed(0)
    factors = FactorScorer(
        torch.randn(n_users, args.dim, generator=generator),
        torch.randn(n_items, args.dim, generator=generator),
    )
    topk = sorted({1, 5, 10, 20, args.depth} & set(range(1, args.depth + 1)))
    evaluator = Evaluator(
        split, train, n_items, topk, ["recall"], args.batch_size, memory_budget_mb=args.budget_mb
    )

    new_users = evaluator.block_shape(False)[0]
    kept = FactorScorer(factors.user_factors, factors.item_factors, ReusableBuffer())
    variants: dict[str, tuple[bool, FactorScorer, Callable[[Timed], np.ndarray]]] = {
        "old": (False, factors, lambda timed: old_hits(evaluator, timed, args.batch_size)),
        "old, new block size": (
            False,
            factors,
            lambda timed: old_hits(evaluator, timed, new_users),
        ),
        "new, callable": (False, factors, lambda timed: evaluator.hits(timed)),
        "new, FactorScorer": (True, factors, lambda timed: evaluator.hits(timed)),
        "new, kept block": (True, kept, lambda timed: evaluator.hits(timed)),
    }
    print(
        f"{n_users} users x {n_items} items x {args.dim}-d, depth {args.depth}, "
        f"{args.threads} thread(s), torch {torch.__version__}, heap "
        f"{'bound' if args.bound_heap else 'not bound'}; "
        f"new blocks: callable {evaluator.block_shape(False)}, "
        f"FactorScorer {evaluator.block_shape(True)} (users, items)"
    )
    print(
        f"{'path':<20} {'matmul s':>9} {'ranking s':>10} {'ranking/matmul':>15} "
        f"{'ranking ns/score':>17}  same hits"
    )
    reference = None
    for name, (blocks, scorer, run) in variants.items():
        best: tuple[float, float] | None = None
        for _ in range(args.repeats):
            timed = Timed(scorer, blocks)
            start = time.process_time()
            hits = run(timed)
            total = time.process_time() - start
            figures = (timed.seconds, total - timed.seconds)
            if best is None or sum(figures) < sum(best):
                best = figures
        if reference is None:
            reference = hits
        assert best is not None
        same = bool(np.array_equal(hits, reference))
        per_score = best[1] / (n_users * n_items) * 1e9
        print(
            f"{name:<20} {best[0]:>9.3f} {best[1]:>10.3f} {best[1] / best[0]:>15.2f} "
            f"{per_score:>17.2f}  {same}"
        )


if __name__ == "__main__":
    main()
