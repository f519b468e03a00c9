"""Time and peak memory of the user-graph builder at Elec's shape (a script, not a test).

    python benchmarks/user_graph.py                       # 192,403 users, 63,001 items, 1.69M rows
    python benchmarks/user_graph.py --users 35598 --items 18357 --rows 296337   # sports-shaped

Interactions are generated with a power-law item popularity (like Amazon's long tail), split by
the reference's rule; the graph is built over the training rows, as for DualGNN/DRAGON, and
written in the reference's pickled-dict format. Prints the figures and, with --output, writes
them as JSON.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from mgrec.data import user_graph  # noqa: E402
from mgrec.data.split import split_labels  # noqa: E402


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux reports KiB


def interactions(n_users: int, n_items: int, n_rows: int, alpha: float, seed: int):
    """Distinct (user, item) rows: >= 5 per user, items drawn by a power-law popularity."""
    rng = np.random.default_rng(seed)
    counts = 5 + rng.exponential(max(n_rows / n_users - 5, 0.1), n_users).astype(np.int64)
    users = np.repeat(np.arange(n_users), counts)
    popularity = 1.0 / (np.arange(n_items) + 10.0) ** alpha
    items = rng.choice(n_items, size=len(users), p=popularity / popularity.sum())
    pairs = np.unique(users * n_items + items)
    return pairs // n_items, pairs % n_items, rng


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--users", type=int, default=192403)
    parser.add_argument("--items", type=int, default=63001)
    parser.add_argument("--rows", type=int, default=1689188)
    parser.add_argument(
        "--alpha", type=float, default=0.9, help="power-law exponent of item popularity"
    )
    parser.add_argument("--output", help="JSON file for the figures")
    args = parser.parse_args()

    users, items, rng = interactions(args.users, args.items, args.rows, args.alpha, seed=11)
    order, labels = split_labels(users, rng)
    train = labels == 0
    train_users, train_items = users[order][train], items[order][train]
    degree = np.bincount(train_items, minlength=args.items)
    before = peak_rss_gb()
    start = time.perf_counter()
    graph = user_graph.build(train_users, train_items, args.users)
    build_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        user_graph.save_reference(Path(folder) / "user_graph_dict.npy", graph)
        save_s = time.perf_counter() - start
        file_mb = (Path(folder) / "user_graph_dict.npy").stat().st_size / 2**20
    figures = {
        "users": args.users,
        "items": args.items,
        "rows": int(len(users)),
        "train_rows": int(train.sum()),
        "max_item_degree": int(degree.max()),
        "candidate_pairs": int((degree.astype(np.int64) ** 2).sum()),
        "mean_neighbours": float(graph.lengths.mean()),
        "build_s": round(build_s, 2),
        "save_reference_file_s": round(save_s, 2),
        "file_mb": round(file_mb, 1),
        "peak_rss_gb_before_build": round(before, 2),
        "peak_rss_gb": round(peak_rss_gb(), 2),
    }
    for key, value in figures.items():
        print(f"{key:26} {value}")
    if args.output:
        Path(args.output).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
