"""Tests written against bugs that once survived the suite (issue 19): each was planted in the code,
seen to make its test here fail, and removed again.

- the user-graph unpickler admitting more than its allow-list (any ``numpy.*`` global);
- the checkpoint reader loading with ``weights_only=False`` (a booby-trapped ``--resume``);
- the code-identity staleness check removed (a results row from other code counted finished);
- a NaN in Mirror Gradient's mirror pass not reported (the epoch and combination end as NaN);
- BM3's target dropout removed (checked by its statistics);
- FREEDOM's and LayerGCN's degree-sensitive edge pruning made uniform (checked by its statistics).
"""

from __future__ import annotations

import json
import math
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from conftest import build_golden_model, golden_batch, trained
from mgrec import graphs, provenance
from mgrec.cli import main
from mgrec.data import user_graph
from mgrec.errors import UserError
from mgrec.models import bm3
from mgrec.optim.mirror import MirrorGradient
from mgrec.trainer import Trainer


def outputs(tmp_path: Path) -> list[str]:
    return [f"--results_dir={tmp_path / 'results'}", f"--checkpoint_dir={tmp_path / 'ckpt'}",
            f"--cache_dir={tmp_path / 'cache'}", "--use_gpu=False", "--threads=1"]  # fmt: skip


def nothing_ran(trap: Path) -> bool:
    """The folder a trap would write into is still empty."""
    return not any(trap.iterdir())


# --- a. the user-graph unpickler admits only its allow-list ------------------------------------


def opcodes(value: object) -> bytes:
    """Pickle opcodes that push ``value`` (str, float, list, tuple, an empty dict), without the
    memo, so they can be spliced into another pickle."""
    if isinstance(value, str):
        encoded = value.encode()
        return b"X" + struct.pack("<I", len(encoded)) + encoded
    if isinstance(value, float):
        return b"G" + struct.pack(">d", value)
    if isinstance(value, list):
        return b"]" + b"".join(opcodes(v) + b"a" for v in value)
    if isinstance(value, tuple):
        return b"(" + b"".join(opcodes(v) for v in value) + b"t"
    assert value == {}
    return b"}"


def call_opcodes(module: str, name: str, *args: object) -> bytes:
    """Opcodes that push the result of ``module.name(*args)``: GLOBAL, the args, REDUCE."""
    return b"c" + f"{module}\n{name}\n".encode() + opcodes(tuple(args)) + b"R"


def reduce_pickle(module: str, name: str, *args: object) -> bytes:
    """A pickle that calls ``module.name(*args)`` when loaded."""
    return b"\x80\x03" + call_opcodes(module, name, *args) + b"."


def trapped_npy(path: Path, payload: bytes) -> Path:
    """A ``.npy`` file of a pickled object array (the reference's format) holding ``payload``."""
    with open(path, "wb") as handle:
        header = {"descr": "|O", "fortran_order": False, "shape": ()}
        np.lib.format.write_array_header_1_0(handle, header)
        handle.write(payload)
    return path


def numpy_traps(trap: Path) -> dict[str, tuple[str, str, tuple]]:
    """NumPy globals that run code or write files: each would leave a file in ``trap``."""
    marker = trap / "PWNED"
    return {
        "exec through numpy's testing helper": (
            "numpy.testing._private.utils", "runstring", (f"open({str(marker)!r}, 'w').close()", {}),
        ),
        "numpy.save writes a file": ("numpy", "save", (str(marker), [1.0, 2.0, 3.0])),
        "numpy.savetxt writes a file": ("numpy", "savetxt", (str(marker), [1.0, 2.0])),
        "a public numpy global beside the allowed ones": ("numpy", "fromfile", ("/dev/null",)),
        "builtins.exec": ("builtins", "exec", (f"open({str(marker)!r}, 'w').close()",)),
    }  # fmt: skip


@pytest.mark.parametrize(
    "case",
    [
        "exec through numpy's testing helper",
        "numpy.save writes a file",
        "numpy.savetxt writes a file",
        "a public numpy global beside the allowed ones",
        "builtins.exec",
    ],
)
def test_a_user_graph_naming_a_global_outside_the_allow_list_is_refused(case, tmp_path):
    trap = tmp_path / "trap"
    trap.mkdir()
    module, name, args = numpy_traps(trap)[case]
    path = trapped_npy(tmp_path / "user_graph_dict.npy", reduce_pickle(module, name, *args))
    with pytest.raises(UserError, match=f"refused: the pickle asks for {module}.{name},"):
        user_graph.load_reference(path, 5)
    assert nothing_ran(trap)


def test_a_trap_inside_an_otherwise_valid_user_graph_is_refused_through_the_cli(
    tiny, tmp_path, capsys
):
    # The reference's dict with one user's weights replaced by a call of numpy.save: the file
    # is valid up to the trap, so the refusal comes from the allow-list, not the format check.
    trap = tmp_path / "trap"
    trap.mkdir()
    valid = pickle.dumps(np.array({0: [[1], [1.5]]}, dtype=object), protocol=3)  # as np.save
    weight = opcodes(1.5)
    assert valid.count(weight) == 1
    call = call_opcodes("numpy", "save", str(trap / "PWNED"), [1.5])
    trapped_npy(tiny / "tiny" / "user_graph_dict.npy", valid.replace(weight, call))
    args = ["--model", "DualGNN", "--dataset", "tiny", f"--data_path={tiny}", "--not_mg",
            "--epochs=1", "--learning_rate=0.001", "--reg_weight=0.001", *outputs(tmp_path)]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "refused: the pickle asks for numpy.save," in err and err.count("\n") == 1
    assert nothing_ran(trap)


def test_the_allowed_globals_still_read_the_reference_format(tmp_path):
    # The other side of the allow-list: a graph saved in the reference's format (object array,
    # NumPy scalars and arrays inside) loads, with its values.
    graph = {0: [np.array([1, 2]), np.array([2.0, 1.0], dtype=np.float32)], 1: [[0], [np.float64(2)]], 2: [[0], [1.0]]}  # fmt: skip
    np.save(tmp_path / "g.npy", np.array(graph, dtype=object), allow_pickle=True)
    loaded = user_graph.to_reference_dict(user_graph.load_reference(tmp_path / "g.npy", 3))
    assert loaded == {0: [[1, 2], [2.0, 1.0]], 1: [[0], [2.0]], 2: [[0], [1.0]]}


# --- b. a booby-trapped checkpoint through --resume -------------------------------------------


class Booby:
    """A pickle that runs its call when loaded (it must never be loaded)."""

    def __init__(self, call: tuple) -> None:
        self.call = call

    def __reduce__(self):
        return self.call


def booby_calls(marker: Path) -> dict[str, tuple]:
    from numpy.testing._private.utils import runstring

    return {
        "os.system": (os.system, (f"touch {marker}",)),
        "exec through numpy": (runstring, (f"open({str(marker)!r}, 'w').close()", {})),
        "numpy.save": (np.save, (str(marker), np.zeros(2))),
    }


@pytest.mark.parametrize(
    "layout",
    ["the whole file", "an mgrec checkpoint's config", "a state_dict's value", "legacy format"],
)
@pytest.mark.parametrize("call", ["os.system", "exec through numpy", "numpy.save"])
def test_a_booby_trapped_checkpoint_is_refused_by_resume_and_never_runs(
    layout, call, tmp_path, capsys
):
    trap = tmp_path / "trap"
    trap.mkdir()
    booby = Booby(booby_calls(trap / "PWNED")[call])
    tensors = {"user_embedding.weight": torch.zeros(3, 2)}
    payload = {
        "the whole file": booby,
        "an mgrec checkpoint's config": {"state_dict": tensors, "config": {"model": booby}},
        "a state_dict's value": {**tensors, "item_embedding.weight": booby},
        "legacy format": {"state_dict": tensors, "config": booby},
    }[layout]
    path = tmp_path / "model.pth"
    torch.save(payload, path, _use_new_zipfile_serialization=layout != "legacy format")
    assert main(["--resume", str(path), *outputs(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and "Traceback" not in err
    assert nothing_ran(trap)


# --- c. a results row from other code is retrained ---------------------------------------------


@pytest.fixture
def fixed_code_identity(tmp_path, monkeypatch):
    """The code identity of every model hashes one file of the test (not the package's source,
    which other work may edit while the test runs). Returns that file: edit it to change the
    identity."""
    source = tmp_path / "code.py"
    source.write_text("# version 1\n")
    monkeypatch.setattr(provenance, "result_files", lambda model: [source])
    forget_code_identities()
    yield source
    forget_code_identities()


def forget_code_identities() -> None:
    """Drop the identities computed so far (one process computes each model's once)."""
    cache_clear = getattr(provenance.code_fingerprint, "cache_clear", None)
    if cache_clear is not None:
        cache_clear()


def plan_states(out: str) -> dict[str, str]:
    """``{"combo-000": "finished", ...}`` from ``--dry_run``'s listing."""
    states = {}
    for line in out.splitlines():
        parts = line.split()
        if parts and parts[0].startswith("combo-"):
            states[parts[0]] = " ".join(parts[1:]).rsplit(" reg_weight=", 1)[0].strip()
    return states


def test_a_row_from_other_code_is_planned_and_retrained(
    tiny, tmp_path, capsys, fixed_code_identity
):
    args = ["--model", "VBPR", "--dataset", "tiny", f"--data_path={tiny}", "--not_mg", "--epochs=1",
            "--reg_weight=[0.1,0.001]", *outputs(tmp_path)]  # fmt: skip
    assert main(args) == 0
    (folder,) = (tmp_path / "results" / "tiny").glob("VBPR-plain-tiny-*")
    results = folder / "results.jsonl"
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    today = provenance.code_fingerprint("VBPR")
    assert [r["code"] for r in rows] == [today, today]
    # One row recorded by other code (another mgrec version or source), the other untouched.
    first, second = sorted(rows, key=lambda r: r["index"])
    results.write_text(
        json.dumps({**first, "code": "0.0.1+0123456789ab"}) + "\n" + json.dumps(second) + "\n"
    )
    capsys.readouterr()
    assert main([*args, "--dry_run"]) == 0
    out = capsys.readouterr().out
    assert plan_states(out) == {"combo-000": "to retrain (other code)", "combo-001": "finished"}
    assert "1 finished, 1 to train" in out
    assert main(args) == 0
    log = (folder / "train.log").read_text()
    assert log.count("retraining: it was trained by other code (0.0.1+0123456789ab, now") == 1
    assert log.count("already finished, skipped") == 1
    after = {r["index"]: r for r in map(json.loads, results.read_text().splitlines())}
    assert after[0]["code"] == today and after[1] == second  # retrained; the other one kept
    # After the code changes (in a new process), every row is from other code.
    fixed_code_identity.write_text("# version 2\n")
    forget_code_identities()
    capsys.readouterr()
    assert main([*args, "--dry_run"]) == 0
    assert set(plan_states(capsys.readouterr().out).values()) == {"to retrain (other code)"}


# --- d. a NaN in the mirror pass ends the epoch as NaN -----------------------------------------


def trainer_config(**extra) -> dict:
    config = {
        "epochs": 10, "eval_step": 1, "stopping_step": 5, "valid_metric": "Recall@5",
        "clip_grad_norm": None, "mg": True, "alpha1": 1.0, "alpha2": 0.5, "beta": 1,
        "learner": "sgd", "learning_rate": 0.1, "weight_decay": 0.0,
        "learning_rate_scheduler": [1.0, 50],
    }  # fmt: skip
    config.update(extra)
    return config


class MirrorNaN(nn.Module):
    """A quadratic loss that is NaN on the second call of a batch (the mirror pass) from epoch
    ``from_epoch`` on; its first passes are always finite (the NaN has no gradient, so the
    parameters stay finite too)."""

    def __init__(self, from_epoch: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([1.0]))
        self.from_epoch = from_epoch
        self.epoch = -1
        self.calls: list[bool] = []  # whether each call returned NaN

    def pre_epoch_processing(self) -> None:
        self.epoch += 1

    def calculate_loss(self, batch: torch.Tensor) -> torch.Tensor:
        loss = (self.w - 0.5) ** 2
        mirror_pass = len(self.calls) % 2 == 1  # beta 1, one batch: every second call
        poisoned = mirror_pass and self.epoch >= self.from_epoch
        self.calls.append(poisoned)
        return torch.where(torch.tensor(poisoned), torch.tensor(math.nan), loss).sum()


@pytest.mark.parametrize("mode", ["reference", "algorithm1"])
def test_a_nan_only_in_the_mirror_pass_makes_the_epoch_nan(mode):
    model = MirrorNaN(from_epoch=0)
    trainer = Trainer(model, trainer_config(mg_mode=mode))
    assert isinstance(trainer.strategy, MirrorGradient) and trainer.strategy.mode == mode
    model.pre_epoch_processing()
    loss = trainer.train_epoch([torch.zeros(3, 1, dtype=torch.long)])
    assert model.calls == [False, True]  # the first pass was finite, the mirror pass NaN
    assert math.isnan(loss)
    assert bool(trainer.strategy.mirror_nan)
    trainer.strategy.start_epoch()  # the flag is per epoch
    assert not bool(trainer.strategy.mirror_nan)


def test_a_finite_mirror_pass_leaves_the_epoch_loss_the_first_passes_sum():
    model = MirrorNaN(from_epoch=99)
    trainer = Trainer(model, trainer_config())
    model.pre_epoch_processing()
    loss = trainer.train_epoch([torch.zeros(3, 1, dtype=torch.long)] * 2)
    # w0 = 1: the first pass's loss 0.25; SGD steps w1 = 1 - 0.1*1*2*0.5 = 0.9, then the
    # mirror step w2 = 0.9 + 0.1*0.5*2*0.4 = 0.94; the second batch's first pass at w2.
    assert loss == pytest.approx(0.25 + 0.44**2)
    assert not bool(trainer.strategy.mirror_nan)


def test_a_nan_in_the_mirror_pass_ends_the_combination_with_the_nan_message():
    model = MirrorNaN(from_epoch=2)
    trainer = Trainer(model, trainer_config())
    scores = iter([0.5, 0.4, 0.3, 0.2, 0.1])
    result = trainer.fit(
        [torch.zeros(3, 1, dtype=torch.long)],
        lambda: {"recall@5": next(scores)},
        lambda: {"recall@5": 0.45},
    )
    assert result.stopped == "nan-loss"
    assert result.message.startswith("loss is NaN at epoch 2: this combination ends here")
    assert len(result.history) == 3 and math.isnan(result.history[2].loss)
    assert all(math.isfinite(r.loss) for r in result.history[:2])
    assert result.best_epoch == 0 and result.test_at_best == {"recall@5": 0.45}
    assert not any(model.calls[0::2])  # every first pass was finite


# --- e. BM3's target dropout, by its statistics -----------------------------------------------


def bm3_targets(model, batch, monkeypatch) -> list[torch.Tensor]:
    """The targets of one BM3 loss, in the order the loss reads them."""
    seen: list[torch.Tensor] = []
    original = bm3.cosine_to_target

    def record(online, target):
        seen.append(target.detach().clone())
        return original(online, target)

    monkeypatch.setattr(bm3, "cosine_to_target", record)
    model.train()
    model.calculate_loss(batch)
    monkeypatch.setattr(bm3, "cosine_to_target", original)
    return seen


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_bm3_drops_each_target_entry_with_probability_dropout(p, summary, tmp_path, monkeypatch):
    model = trained("BM3", summary, tmp_path, dropout=p)
    batch = golden_batch("BM3")["batch"]
    with model.deterministic():
        clean = bm3_targets(model, batch, monkeypatch)
    assert len(clean) == 6  # text and image: to the id and to themselves; then user and item
    torch.manual_seed(0)
    draws = [bm3_targets(model, batch, monkeypatch) for _ in range(20)]
    zeros = total = 0
    for targets in draws:
        for target, full in zip(targets, clean, strict=True):
            kept = target != 0
            # kept entries are the clean target scaled by 1 / (1 - p); the others are zero
            assert torch.allclose(target[kept], full[kept] / (1 - p), rtol=1e-5, atol=1e-7)
            zeros += int((~kept & (full != 0)).sum())
            total += int((full != 0).sum())
    # Binomial: the zeroed fraction is p within a few standard errors (rows repeat in a batch,
    # which widens it: 6 standard errors of independent entries).
    assert abs(zeros / total - p) < 6 * math.sqrt(p * (1 - p) / total) + 0.01
    # Each call draws afresh: two calls differ, and so do their losses.
    assert not torch.equal(draws[0][-1], draws[1][-1])
    losses = [model.calculate_loss(batch).item() for _ in range(3)]
    assert len(set(losses)) == 3


def test_bm3_without_dropout_or_under_deterministic_repeats_its_loss(summary, tmp_path):
    batch = golden_batch("BM3")["batch"]
    off = trained("BM3", summary, tmp_path, dropout=0.0)
    off.train()
    assert len({off.calculate_loss(batch).item() for _ in range(3)}) == 1
    on = trained("BM3", summary, tmp_path / "on", dropout=0.5)
    with on.deterministic():
        on.train()
        repeated = {on.calculate_loss(batch).item() for _ in range(3)}
    assert repeated == {off.calculate_loss(batch).item()}  # the same model without dropout


# --- f. degree-sensitive edge pruning, by its statistics ---------------------------------------


def test_degree_sensitive_keep_draws_an_edge_with_probability_proportional_to_its_weight():
    # One edge kept out of five: the chance of each is exactly weight / sum of weights.
    weights = torch.tensor([1.0, 2.0, 3.0, 4.0, 10.0])
    torch.manual_seed(0)
    n = 20000
    counts = torch.bincount(
        torch.cat([graphs.degree_sensitive_keep(weights, 1) for _ in range(n)]), minlength=5
    )
    expected = weights / weights.sum()
    assert torch.allclose(counts / n, expected, atol=4 * math.sqrt(0.25 / n))
    # Without replacement: k distinct edges every time.
    assert all(len(set(graphs.degree_sensitive_keep(weights, 4).tolist())) == 4 for _ in range(50))


def kept_edges(model, n_edges: int) -> torch.Tensor:
    """bool [E]: which training rows the model's current pruned graph holds (no duplicates)."""
    coo = model.masked_adj.coo.coalesce()
    rows, cols = coo.indices()
    user_to_item = rows < model.n_users
    kept_pairs = rows[user_to_item] * model.n_items + (cols[user_to_item] - model.n_users)
    pairs = model.edge_users * model.n_items + model.edge_items
    assert len(torch.unique(pairs)) == n_edges  # the golden data has no duplicate rows
    return torch.isin(pairs, kept_pairs)


def successive_sampling_rates(weights: np.ndarray, n_keep: int, draws: int) -> np.ndarray:
    """Each edge's chance of being kept when ``n_keep`` are drawn without replacement with
    probability ~ weights (a weighted draw of one edge at a time), estimated independently of
    the code under test."""
    rng = np.random.default_rng(1)
    kept = np.zeros(len(weights))
    for _ in range(draws):
        kept[rng.choice(len(weights), n_keep, replace=False, p=weights / weights.sum())] += 1
    return kept / draws


def pruning_rates(name, summary, tmp_path, draws: int) -> dict[str, np.ndarray]:
    model, _, _ = build_golden_model(name, summary, tmp_path, dropout=0.5)
    n_edges = len(model.edge_users)
    kept = {"even": np.zeros(n_edges), "odd": np.zeros(n_edges)}
    torch.manual_seed(0)
    for epoch in range(2 * draws):
        model.pre_epoch_processing()
        kept["even" if epoch % 2 == 0 else "odd"] += kept_edges(model, n_edges).numpy()
    return {k: v / draws for k, v in kept.items()} | {"model": model}


def degree_weights(model) -> np.ndarray:
    """The formula of MODELS.md G4, from the degrees: (d_u + 1e-7)^-1/2 (d_i + 1e-7)^-1/2."""
    users, items = model.edge_users.numpy(), model.edge_items.numpy()
    du = np.bincount(users, minlength=model.n_users)[users] + 1e-7
    di = np.bincount(items, minlength=model.n_items)[items] + 1e-7
    return du**-0.5 * di**-0.5


def rates_by_weight(rates: np.ndarray, weights: np.ndarray, groups: int = 4) -> np.ndarray:
    """The mean keep rate of the edges in each weight quartile, lightest first."""
    order = np.argsort(weights, kind="stable")
    return np.array([rates[part].mean() for part in np.array_split(order, groups)])


@pytest.mark.parametrize("name", ["FREEDOM", "LayerGCN"])
def test_pruning_keeps_the_edges_of_low_degree_nodes_at_the_formulas_rate(name, summary, tmp_path):
    draws = 150
    rates = pruning_rates(name, summary, tmp_path, draws)
    model = rates.pop("model")
    weights = degree_weights(model)
    n_keep = int(len(weights) * 0.5)
    expected = rates_by_weight(successive_sampling_rates(weights, n_keep, 400), weights)
    # The lightest quartile (high-degree ends) is kept far less often than the heaviest, ...
    assert expected[0] < 0.4 and expected[-1] > 0.65
    degree_sensitive = rates_by_weight(rates["even"], weights)
    # ... and the model's rates per quartile are the formula's (E/4 edges x 150 draws each).
    assert np.allclose(degree_sensitive, expected, atol=0.02), (degree_sensitive, expected)
    # Per edge too: the rates follow the weights (a uniform draw would leave no correlation).
    assert np.corrcoef(rates["even"], weights)[0, 1] > 0.8
    odd = rates_by_weight(rates["odd"], weights)
    if name == "LayerGCN":  # odd epochs prune uniformly: every quartile at n_keep / E
        assert np.allclose(odd, n_keep / len(weights), atol=0.02), odd
    else:  # FREEDOM prunes degree-sensitively every epoch
        assert np.allclose(odd, expected, atol=0.02), odd
