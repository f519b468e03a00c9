"""Full-ranking evaluation: every item scored for every evaluated user, known items masked.

Users are evaluated in the order they first appear in the split (as the reference). They are
streamed in blocks, and so are the items when the scorer can score a range of items
(:class:`ItemBlockScorer`, e.g. :class:`FactorScorer`); block sizes follow a memory budget, and
one score block is alive at a time. Everything runs on the scores' device with no per-user
Python: the masked (user, item) pairs are overwritten with :data:`MASK_SCORE` by one flat
``index_fill_``, the top max(topk) items of every row are selected (see :func:`top_items`),
candidates of successive item blocks are merged, and hits are found by binary search over
sorted (row, item) keys. The small hit matrix then goes to the host, where the metrics are
averaged in float64 exactly as the reference does.

Ranking rule (the same whatever the block sizes): items by decreasing score; equal scores by
increasing item id; NaN ranks above every number (as ``torch.topk``/``torch.sort`` do); a
masked item scores exactly :data:`MASK_SCORE`, so it ties with (and, by id, may precede) an
unmasked item scoring the same, and ranks below only higher scores.

Blocks change which matrix products the scorer computes, not the ranking of given scores:
a BLAS may round ``u @ items[a:b].T`` differently from the same entries of ``u @ items.T`` in
the last bit, exactly as a different ``batch_size`` already could.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, cast, runtime_checkable

import numpy as np
import torch

from mgrec.data.dataset import Split
from mgrec.errors import UserError
from mgrec.metrics import METRIC_FUNCTIONS

# The reference writes this score at training positives before ranking.
MASK_SCORE = -1e10

ScoreFunction = Callable[[torch.Tensor], torch.Tensor]
"""What is evaluated: users [b] (int64) -> scores [b, n_items] for every item (a model's
``scorer()``, or any function, e.g. a popularity baseline). The evaluator writes into the
returned tensor, so it must not be a view of data the caller keeps."""

Ranking = Literal["auto", "chunked", "direct"]

# Items per group of the chunked selection (see _top_chunked); a row is ranked by the chunked
# path when it has at least _CHUNKED_MIN_WIDTH items and _MIN_GROUPS_PER_K * k groups,
# otherwise by torch.topk with a tie check (_top_direct).
_GROUP = 8
_MIN_GROUPS_PER_K = 8
_CHUNKED_MIN_WIDTH = 12288
# Scores per row slice of the chunked selection (16 MB of float32).
_CACHE_ELEMENTS = 1 << 22
# Bytes per score assumed when sizing blocks (float32).
_SCORE_BYTES = 4
# The most scores per block on CPU (16 MB), and the users per block below which an
# ItemBlockScorer's items are streamed rather than rows shortened.
_CPU_BLOCK_ELEMENTS = 1 << 22
_BLOCK_USERS = 64
# Item blocks' candidates are merged whenever they reach this many times the depth.
_MERGE_COLUMNS = 8
# Transient bytes per element of the exact selection (_select): bool masks and an int32 cumsum.
_SELECT_BYTES = 24


@runtime_checkable
class ItemBlockScorer(Protocol):
    """A scorer that can score any contiguous range of items, so the evaluator can stream items.

    ``block(users, item_start, item_stop)`` returns scores [len(users), item_stop - item_start]
    (float) of items ``item_start .. item_stop - 1`` for ``users`` [b] (int64). The evaluator
    writes into the returned tensor. Anything with such a method qualifies (duck-typed).
    """

    def block(self, users: torch.Tensor, item_start: int, item_stop: int) -> torch.Tensor: ...


class BlockMemory(Protocol):
    """Memory a scorer may write its blocks over (``models.ops.ReusableBuffer``): ``empty``
    gives an uninitialised contiguous tensor of ``shape`` with ``like``'s dtype and device,
    never over memory that a tensor handed out earlier still uses."""

    def empty(self, shape: Sequence[int], like: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class FactorScorer:
    """Dot-product scores from factor tables: ``user_factors[users] @ item_factors[a:b].T``.

    Callable like a :data:`ScoreFunction` (all items, the same product as
    ``lambda users: user_factors[users] @ item_factors.T``) and an :class:`ItemBlockScorer`.

    Attributes:
        user_factors: [n_users, d] user representations.
        item_factors: [n_items, d] item representations.
        memory: where ``block`` writes its scores, reused once the evaluator has released the
            previous block (with the host heap bounded, a fresh 16 MB block is faulted in page
            by page: ~40 % of a CPU ranking at Elec's shape); None: fresh memory.
    """

    user_factors: torch.Tensor
    item_factors: torch.Tensor
    memory: BlockMemory | None = None

    def __call__(self, users: torch.Tensor) -> torch.Tensor:
        """Scores [b, n_items] of all items for ``users`` [b]."""
        return self.user_factors[users] @ self.item_factors.T

    def block(self, users: torch.Tensor, item_start: int, item_stop: int) -> torch.Tensor:
        """Scores [b, item_stop - item_start] of items item_start .. item_stop - 1."""
        rows, items = self.user_factors[users], self.item_factors[item_start:item_stop]
        if self.memory is None:
            return rows @ items.T
        out = self.memory.empty((len(users), item_stop - item_start), rows)
        return torch.mm(rows, items.T, out=out)


def first_appearance_order(users: np.ndarray) -> np.ndarray:
    """Distinct users in the order they first appear (pandas ``unique`` order)."""
    distinct, first = np.unique(users, return_index=True)
    return distinct[np.argsort(first, kind="stable")]


def _grouped_keys(
    users: np.ndarray, items: np.ndarray, row_of_user: np.ndarray, n_items: int
) -> np.ndarray:
    """Sorted keys row * n_items + item of the (user, item) rows whose user is evaluated."""
    rows = row_of_user[users]
    keep = rows >= 0
    return np.sort(rows[keep].astype(np.int64) * n_items + items[keep])


def _select(
    values: torch.Tensor, k: int, kth: torch.Tensor | None = None, nan_free: bool = False
) -> torch.Tensor:
    """Positions [r, k], increasing, of the k largest entries of each row of ``values`` [r, C].

    The exact rule every path reproduces: larger values first, NaN above every number, equal
    values (NaN included) by lower position. Costs a few passes over ``values``. ``kth``
    [r, 1]: each row's k-th largest value (``torch.topk``'s, NaN counting as the largest),
    when the caller has it already; ``nan_free``: the caller knows ``values`` has no NaN (three
    passes fewer).
    """
    rows, width = values.shape
    if k >= width:
        return torch.arange(width, device=values.device).expand(rows, width)
    if kth is None:
        kth = torch.topk(values, k, dim=1).values[:, -1:]  # [r, 1]; NaN counts as the largest
    if nan_free:
        above, tie = values > kth, values == kth
    else:
        nan = values.isnan()
        kth_nan = kth.isnan()
        above = ((values > kth) | nan) & ~kth_nan  # fewer than k per row: all taken
        tie = torch.where(kth_nan, nan, values == kth)
    # count_nonzero: no [r, C] integer copy of the mask, as a sum of bools would make
    rank_dtype = torch.int16 if width < 2**15 else torch.int32  # half the memory when it fits
    need = (k - torch.count_nonzero(above, dim=1).unsqueeze(1)).to(rank_dtype)
    take = above | (tie & (tie.cumsum(dim=1, dtype=rank_dtype) <= need))
    return take.nonzero()[:, 1].view(rows, k)


def _select_rows(
    scores: torch.Tensor,
    rows: torch.Tensor | None,
    k: int,
    max_elements: int,
    kth: torch.Tensor | None = None,
    nan_free: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_select` on ``scores[rows]`` (all rows if None) in chunks of at most
    ``max_elements`` entries (``kth`` [len(rows), 1]: those rows' k-th values, if known;
    ``nan_free``: as for ``_select``). Returns (values [r, k], positions [r, k])."""
    count = scores.shape[0] if rows is None else len(rows)
    step = max(1, max_elements // max(1, scores.shape[1]))
    values, positions = [], []
    for start in range(0, count, step):
        part = scores[start : start + step] if rows is None else scores[rows[start : start + step]]
        pos = _select(part, k, None if kth is None else kth[start : start + step], nan_free)
        values.append(part.gather(1, pos))
        positions.append(pos)
        del part
    return torch.cat(values), torch.cat(positions)


def _top_direct(
    scores: torch.Tensor, k: int, max_elements: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.topk(k + 1)``; rows whose k-th and (k+1)-th scores are not strictly ordered (a tie
    at the boundary, or NaN) are redone by the exact selection."""
    rows, width = scores.shape
    if k >= width:
        pos = torch.arange(width, device=scores.device).expand(rows, width).contiguous()
        return scores.clone(), pos  # a copy: the block itself is freed after ranking
    top = torch.topk(scores, k + 1, dim=1)
    positions = torch.sort(top.indices[:, :k], dim=1).values
    odd = (~(top.values[:, k - 1] > top.values[:, k])).nonzero()[:, 0]
    kth = top.values[:, k - 1 : k]  # the k-th value, as topk(k) gives it
    # topk ranks NaN first: a block without NaN in its first column has none (checked on a
    # CPU only, where it costs no device sync)
    nan_free = scores.device.type == "cpu" and not bool(top.values[:, 0].isnan().any())
    del top
    if len(odd):
        positions[odd] = _select_rows(scores, odd, k, max_elements, kth[odd], nan_free)[1]
    return scores.gather(1, positions), positions


def _top_chunked(
    scores: torch.Tensor, k: int, max_elements: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The same selection as :func:`_select`, reading each score once (one max reduction).

    Items are split into m = width // 8 strided groups (group j: items j, j + m, ...) and each
    group's maximum is taken; the smallest of the k largest maxima of 2k coarse groups is a
    bound t <= the row's k-th largest score. Every item scoring >= t lies in a group whose
    maximum is >= t: those groups (about k) are gathered and their items >= t are the
    candidates (with the < 8 items left over). A row whose candidates have distinct k-th and
    (k+1)-th scores has a unique top-k set, found by ``torch.topk``; with a tie there, all the
    tied items are >= t and among the candidates, which are then ordered by id for the exact
    selection. Rows with a NaN (or inf and -inf: the check is a sum), or so many ties that the
    bound selects over half the groups, take the exact selection on the whole row. Narrow
    rows (under ``_CHUNKED_MIN_WIDTH`` items), where per-row costs dominate, use
    :func:`_top_direct`.
    """
    rows, width = scores.shape
    groups = width // _GROUP
    if k >= width or width < _CHUNKED_MIN_WIDTH or groups < _MIN_GROUPS_PER_K * k:
        return _top_direct(scores, k, max_elements)
    device = scores.device
    flat = scores.view(-1)
    main = scores[:, : _GROUP * groups].view(rows, _GROUP, groups)
    rest = scores[:, _GROUP * groups :]  # fewer than _GROUP items, always candidates
    group_max = main.amax(dim=1)  # [rows, groups]
    per_coarse = groups // (2 * k)
    coarse = group_max[:, : 2 * k * per_coarse].view(rows, per_coarse, 2 * k).amax(dim=1)
    bound = torch.topk(coarse, k, dim=1, sorted=False).values.amin(dim=1, keepdim=True)
    del coarse
    odd = (group_max.sum(dim=1) + rest.sum(dim=1)).isnan()
    group_row, group = (group_max >= bound).nonzero(as_tuple=True)
    del group_max
    odd |= torch.bincount(group_row, minlength=rows) > groups // 2
    if bool(odd.any()):
        keep = ~odd[group_row]
        group_row, group = group_row[keep], group[keep]
    # The selected groups' items: [n_selected, _GROUP] flat positions, then those >= bound.
    member = torch.arange(_GROUP, device=device) * groups
    position = (group_row * width + group).unsqueeze(1) + member
    taken = flat.index_select(0, position.view(-1)).view(position.shape) >= bound[group_row]
    which, slot_in_group = taken.nonzero(as_tuple=True)
    cand_row = group_row[which]
    cand_position = position[which, slot_in_group]
    del position, taken, which, slot_in_group
    # Ragged candidates (grouped by row) -> [rows, width'] padded with -inf / item id `width`,
    # then the < _GROUP leftover items as extra columns.
    count = torch.bincount(cand_row, minlength=rows)
    slot = torch.arange(len(cand_row), device=device) - (torch.cumsum(count, 0) - count)[cand_row]
    padded = int(count.max()) if rows else 0
    pad_value = torch.full((rows, padded), -torch.inf, dtype=scores.dtype, device=device)
    pad_item = torch.full((rows, padded), width, dtype=torch.int64, device=device)
    pad_value[cand_row, slot] = flat.index_select(0, cand_position)
    pad_item[cand_row, slot] = cand_position - cand_row * width
    if rest.shape[1]:
        rest_item = torch.arange(_GROUP * groups, width, device=device).expand(rows, -1)
        pad_value = torch.cat([pad_value, rest], dim=1)
        pad_item = torch.cat([pad_item, rest_item], dim=1)
    if pad_value.shape[1] < k + 1:  # only when every row is odd
        fill = k + 1 - pad_value.shape[1]
        pad_value = torch.nn.functional.pad(pad_value, (0, fill), value=-torch.inf)
        pad_item = torch.nn.functional.pad(pad_item, (0, fill), value=width)
    top = torch.topk(pad_value, k + 1, dim=1)
    tied = ~(top.values[:, k - 1] > top.values[:, k]) & ~odd
    top_item, order = torch.sort(pad_item.gather(1, top.indices[:, :k]), dim=1)
    top_value = top.values[:, :k].gather(1, order)
    del top, order
    tied_rows = tied.nonzero()[:, 0]
    if len(tied_rows):
        item_sorted, by_item = torch.sort(pad_item[tied_rows], dim=1)
        value_sorted = pad_value[tied_rows].gather(1, by_item)
        chosen = _select(value_sorted, k)
        top_value[tied_rows] = value_sorted.gather(1, chosen)
        top_item[tied_rows] = item_sorted.gather(1, chosen)
    odd_rows = odd.nonzero()[:, 0]
    if len(odd_rows):
        top_value[odd_rows], top_item[odd_rows] = _select_rows(scores, odd_rows, k, max_elements)
    return top_value, top_item


def top_items(
    scores: torch.Tensor, k: int, ranking: Ranking = "auto", max_elements: int = 1 << 24
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best items of each row of ``scores`` [b, n], as a set: (values [b, k], items [b, k]).

    Items come in increasing id, not rank order. The set follows the module's ranking rule
    (ties by lower id, NaN first), identical for every ``ranking``:
    ``"chunked"`` reads the scores once and selects among a few candidates (fast on CPU),
    ``"direct"`` is ``torch.topk`` with a tie check, ``"auto"`` is chunked on CPU, direct
    elsewhere. ``max_elements`` bounds the rows redone by the exact selection at once.
    """
    k = min(k, scores.shape[1])
    if ranking == "auto":
        ranking = "chunked" if scores.device.type == "cpu" else "direct"
    if ranking == "chunked":
        # Row slices of ~16 MB, so that the gathers after the max reduction hit the cache.
        step = max(1, _CACHE_ELEMENTS // max(1, scores.shape[1]))
        if scores.shape[0] <= step:
            return _top_chunked(scores, k, max_elements)
        parts = [
            _top_chunked(scores[start : start + step], k, max_elements)
            for start in range(0, scores.shape[0], step)
        ]
        return torch.cat([v for v, _ in parts]), torch.cat([i for _, i in parts])
    if ranking == "direct":
        return _top_direct(scores, k, max_elements)
    raise ValueError(f"unknown ranking {ranking!r}")


def rank_order(values: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """Items [b, k] of a :func:`top_items` set in rank order (score down, then id up)."""
    order = torch.sort(values, dim=1, descending=True, stable=True).indices
    return items.gather(1, order)


class Evaluator:
    """Evaluate a scorer on one split (valid or test).

    Args:
        split: the rows to evaluate (relevant items per user; duplicates count in pos_len).
        train: the training rows, masked out of every ranking.
        n_items: number of item ids.
        topk: the cut-offs (ranking depth is max(topk)).
        metrics: metric names (recall, ndcg, precision, map; any case).
        batch_size: the most users scored at once.
        device: where ranking happens (normally the model's device).
        also_masked: further splits masked like ``train``, by name, e.g. ``{"valid": valid}``
            when ranking for the test split (RecBole's and Cornac's protocol; the reference masks
            training items only, so a user's validation items stay ranked and count as misses).
            A masked item that is also relevant is never ranked but still counts in pos_len.
        memory_budget_mb: the evaluator's working memory: half for one score block (float32),
            half for the ranking's transients. Users per block = min(batch_size, what fits);
            on CPU blocks are also kept to 16 MB (faster). With an :class:`ItemBlockScorer`
            items are streamed too when full rows of 64 users (or batch_size, if smaller)
            would not fit. A block has at least one user and one item whatever the budget.
            Not counted: the scorer's own temporaries, the model, the split's keys.
        item_block_size: the most items per block for an :class:`ItemBlockScorer` (default: as
            the budget allows; a plain scorer always gives full rows).
        ranking: the top-k selection, see :func:`top_items` (same results for every choice).

    Attributes:
        mask_rule: which splits are masked, e.g. "train" or "train+valid".
    """

    def __init__(
        self,
        split: Split,
        train: Split,
        n_items: int,
        topk: Sequence[int],
        metrics: Sequence[str],
        batch_size: int = 4096,
        device: torch.device | str = "cpu",
        *,
        also_masked: Mapping[str, Split] | None = None,
        memory_budget_mb: float = 512,
        item_block_size: int | None = None,
        ranking: Ranking = "auto",
    ) -> None:
        self.device = torch.device(device)
        self.n_items = int(n_items)
        self.topk = list(topk)
        self.metrics = [m.lower() for m in metrics]
        self.batch_size = int(batch_size)
        self.memory_budget_mb = float(memory_budget_mb)
        self.item_block_size = None if item_block_size is None else int(item_block_size)
        if ranking not in ("auto", "chunked", "direct"):
            raise UserError(f"ranking must be auto, chunked or direct, not {ranking!r}")
        self.ranking: Ranking = ranking
        if max(self.topk) > self.n_items:
            raise UserError(
                f"topk asks for {max(self.topk)} items but there are only {self.n_items}"
            )
        if self.batch_size < 1 or (self.item_block_size is not None and self.item_block_size < 1):
            raise UserError("batch_size and item_block_size must be positive")
        extra = dict(also_masked or {})
        self.mask_rule = "+".join(["train", *extra])
        users = first_appearance_order(split.users)
        self.n_users = len(users)
        masked = [train, *extra.values()]
        n_all = int(max(s.users.max(initial=0) for s in [split, *masked])) + 1
        row_of_user = np.full(n_all, -1, dtype=np.int64)
        row_of_user[users] = np.arange(self.n_users)
        self.users = torch.as_tensor(users, device=self.device)
        self.pos_len = torch.as_tensor(
            np.bincount(row_of_user[split.users], minlength=self.n_users), device=self.device
        )
        self.relevant_keys = torch.as_tensor(
            _grouped_keys(split.users, split.items, row_of_user, self.n_items), device=self.device
        )
        masked_keys = np.unique(
            np.concatenate(
                [_grouped_keys(s.users, s.items, row_of_user, self.n_items) for s in masked]
            )
        )
        self.masked_keys = torch.as_tensor(masked_keys, device=self.device)
        # Where each row's masked keys start in the sorted key array, for block slicing.
        self.masked_offsets = np.searchsorted(
            masked_keys, np.arange(self.n_users + 1) * self.n_items
        )

    @property
    def _budget_elements(self) -> int:
        """Scores in one block: half the budget."""
        return max(1, int(self.memory_budget_mb * 2**20) // (2 * _SCORE_BYTES))

    @property
    def _select_elements(self) -> int:
        """Entries ranked at once by the exact selection: its transients fit the other half."""
        return max(1, int(self.memory_budget_mb * 2**20) // (2 * _SELECT_BYTES))

    def block_shape(self, item_blocks: bool) -> tuple[int, int]:
        """(users, items) per score block; items is n_items unless ``item_blocks``.

        A block holds at most half the budget of float32 scores, and on CPU at most
        ``_CPU_BLOCK_ELEMENTS`` (16 MB: such blocks are multiplied and ranked faster, their
        memory being reused rather than mapped afresh per block). With an
        :class:`ItemBlockScorer`, rows are shortened (items streamed) only when full rows of
        ``_BLOCK_USERS`` users (or batch_size, if smaller) would not fit.
        """
        elements = self._budget_elements
        if self.device.type == "cpu":
            elements = min(elements, _CPU_BLOCK_ELEMENTS)
        users_cap = max(1, min(self.batch_size, self.n_users))
        items = self.n_items
        if item_blocks:
            if self.item_block_size is not None:
                items = min(items, self.item_block_size)
            wanted_users = min(users_cap, _BLOCK_USERS)
            if wanted_users * items > elements:
                items = max(1, elements // wanted_users)
        return max(1, min(users_cap, elements // items)), items

    def _hits(self, first_row: int, top_items: torch.Tensor) -> torch.Tensor:
        rows = torch.arange(first_row, first_row + len(top_items), device=self.device)
        keys = rows.unsqueeze(1) * self.n_items + top_items
        if len(self.relevant_keys) == 0:
            return torch.zeros_like(keys, dtype=torch.bool)
        pos = torch.searchsorted(self.relevant_keys, keys).clamp_(max=len(self.relevant_keys) - 1)
        return self.relevant_keys[pos] == keys

    def _rank_block(
        self,
        scores: torch.Tensor,
        masked_row: torch.Tensor,
        masked_item: torch.Tensor,
        item_start: int,
        depth: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mask, then select the block's best ``depth`` items: (values [b, k], item ids [b, k]).

        ``scores`` [b, w] covers items item_start .. item_start + w - 1; ``masked_row`` and
        ``masked_item`` are the block's users' masked pairs (row in block, item id).
        """
        rows, width = scores.shape
        if width < self.n_items:
            inside = (masked_item >= item_start) & (masked_item < item_start + width)
            masked_row, masked_item = masked_row[inside], masked_item[inside]
        flat = masked_row * width + (masked_item - item_start)
        scores.view(-1).index_fill_(0, flat, MASK_SCORE)
        values, items = top_items(scores, depth, self.ranking, self._select_elements)
        return values, items + item_start

    def _merge(
        self, found: list[tuple[torch.Tensor, torch.Tensor]], depth: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The best ``depth`` of the candidates of successive item blocks (values, ids [b, k]).

        Blocks come in item order and each lists its ids increasing, so concatenated the ids
        increase along each row and the selection's lower-position rule is the lower-id rule.
        """
        if len(found) == 1:
            return found[0]
        values = torch.cat([v for v, _ in found], dim=1)
        items = torch.cat([i for _, i in found], dim=1)
        kept, positions = top_items(values, depth, self.ranking, self._select_elements)
        return kept, items.gather(1, positions)

    @torch.no_grad()
    def hits(self, scorer: ScoreFunction | ItemBlockScorer) -> np.ndarray:
        """Bool [n_users, max(topk)]: is the item ranked r-th relevant? Computed on the device.

        ``scorer`` is a :data:`ScoreFunction` (users are streamed) or an
        :class:`ItemBlockScorer` (users and items are streamed).
        """
        depth = max(self.topk)
        block = scorer.block if isinstance(scorer, ItemBlockScorer) else None
        users_per_block, items_per_block = self.block_shape(block is not None)
        # Filled in place, so nothing made for one block outlives the next block: a small
        # tensor kept per block (a list of per-block hits) would sit in the memory freed by a
        # score block and split it, and with blocks served from glibc's heap (a process whose
        # mmap threshold rose above the block size) every split one stays mapped: 10.5 GB
        # more host memory for a full ranking at Elec's shape (benchmarks/RESULTS.md).
        hits = torch.empty((self.n_users, depth), dtype=torch.bool, device=self.device)
        for start in range(0, self.n_users, users_per_block):
            stop = min(start + users_per_block, self.n_users)
            users = self.users[start:stop]
            keys = self.masked_keys[self.masked_offsets[start] : self.masked_offsets[stop]]
            masked_row, masked_item = keys // self.n_items - start, keys % self.n_items
            found: list[tuple[torch.Tensor, torch.Tensor]] = []  # per item block, ids rising
            for item_start in range(0, self.n_items, items_per_block):
                item_stop = min(item_start + items_per_block, self.n_items)
                if block is not None:
                    scores = block(users, item_start, item_stop)
                else:
                    scores = cast(ScoreFunction, scorer)(users)
                scores = scores.to(self.device).contiguous()
                if not scores.is_floating_point():
                    scores = scores.float()
                if scores.shape != (stop - start, item_stop - item_start):
                    raise ValueError(
                        f"the scorer returned scores of shape {tuple(scores.shape)} for "
                        f"{stop - start} users and items {item_start}..{item_stop - 1}"
                    )
                found.append(self._rank_block(scores, masked_row, masked_item, item_start, depth))
                del scores  # one score block alive at a time
                if sum(values.shape[1] for values, _ in found) >= _MERGE_COLUMNS * depth:
                    found = [self._merge(found, depth)]
            best = self._merge(found, depth)
            hits[start:stop] = self._hits(start, rank_order(*best))
            del found, best
        return hits.cpu().numpy()

    def evaluate(self, scorer: ScoreFunction | ItemBlockScorer) -> dict[str, float]:
        """Rank all items for every user; return ``{"recall@5": ..., ...}`` (unrounded)."""
        hits = self.hits(scorer)
        pos_len = self.pos_len.cpu().numpy()
        result = {}
        for name in self.metrics:
            per_rank = METRIC_FUNCTIONS[name](hits, pos_len)
            for k in self.topk:
                result[f"{name}@{k}"] = float(per_rank[k - 1])
        return result
