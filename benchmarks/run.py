"""Speed and memory benchmark (a script that prints figures, not a test).

    python benchmarks/run.py --models FREEDOM,BM3 --device cpu --output results.json
    python benchmarks/run.py --users 3000 --items 1500 --device cpu      # the CPU workload
    python benchmarks/run.py --dataset baby --data_path data --device cuda
    python benchmarks/run.py --users 192403 --items 63001 --batches 2 --models VBPR  # Elec-shaped

Without ``--dataset`` it generates a sports-shaped synthetic dataset (35,598 users, 18,357
items, ~8.3 interactions per user, 4096-d image and 384-d text features; scale it with
--users/--items/--dv/--dt), cached under cache/bench/. Per model, with its first grid values
and batch size 2048, it measures:

    build_s     constructing the model (the kNN item graph built from scratch, not cached;
                the user graph of DualGNN/DRAGON is built before, untimed)
    epoch_s     one training epoch without MG (pre_epoch_processing + all batches), median
    epoch_mg_s  the same with Mirror Gradient (alpha1 1.0, alpha2 0.1, beta 3)
    eval_s      full-ranking evaluation of the valid split, median
    peak_gpu_gb peak GPU memory of the model's build, training and evaluation (CUDA only)

and, new:

    floor_s, floor_mg_s   the epoch's floor: the dense and sparse products its equations need
                (benchmarks/floor.py), each timed at its shape on this device and thread count
    ratio, ratio_mg       epoch_s / floor_s and epoch_mg_s / floor_mg_s
    peak_host_gb          the process's peak resident memory per phase (build: data, evaluator,
                batches and model; train; train_mg; eval), from VmHWM reset between phases

A model that trains nothing (ItemKNNCBF: ``trainable`` is False) has no epoch: only its build
and evaluation are timed (``"trains": false`` in its results), and it has no floor.

The process bounds its host heap as a training run does (``experiment.bound_host_heap``: a
fixed glibc mmap threshold), so memory peaks and the cost of large allocations are a run's.

With ``--batches N`` only N training batches are timed (plain, and with every batch mirrored
for MG); ``batch_s`` / ``batch_mg_s`` are seconds per batch, and ``epoch_s`` / ``epoch_mg_s``
are extrapolated: pre_epoch_processing + sampling + the epoch's plain batches + its mirrored
ones (every beta-th). By default every model runs in a fresh subprocess (``--no-isolate``
runs them in this one), so one model's memory does not leak into the next one's peaks.

Writes a JSON list with one object per model (key ``model``); failed models are reported on
the console and left out.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import floor as floors  # noqa: E402

from mgrec import experiment, graphs  # noqa: E402
from mgrec.config import grid, load_config  # noqa: E402
from mgrec.data import user_graph  # noqa: E402
from mgrec.data.cache import Cache  # noqa: E402
from mgrec.data.sampler import TrainBatches  # noqa: E402
from mgrec.data.synthetic import SyntheticSpec, generate, write_dataset  # noqa: E402
from mgrec.models import Recommender, get, names  # noqa: E402
from mgrec.paths import PROJECT_ROOT  # noqa: E402
from mgrec.rng import init_seed  # noqa: E402
from mgrec.trainer import Trainer  # noqa: E402

SPORTS = {"users": 35598, "items": 18357, "per_user": 8.32}
PHASES = ("train", "mg", "eval", "floor")
MG = {"alpha1": 1.0, "alpha2": 0.1, "beta": 3}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    """Median seconds of ``repeats`` calls after one warm-up call."""
    fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# --- host memory per phase --------------------------------------------------------------------


def reset_peak_memory() -> bool:
    """Reset the process's resident-memory high-water mark to its current RSS (Linux); False
    where that is not possible (the peak is then cumulative since the process started)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def peak_memory_gib() -> float:
    """The process's peak resident memory in GiB: VmHWM, else ``ru_maxrss``."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**20  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**30 if sys.platform == "darwin" else 2**20)  # bytes on macOS, else KiB


class PhaseMemory:
    """Peak host memory per named phase: ``with memory.phase("train"): ...``."""

    def __init__(self) -> None:
        self.peaks: dict[str, float] = {}
        self.resettable = True

    def phase(self, name: str) -> _Phase:
        return _Phase(self, name)


class _Phase:
    def __init__(self, owner: PhaseMemory, name: str) -> None:
        self.owner, self.name = owner, name

    def __enter__(self) -> None:
        self.owner.resettable &= reset_peak_memory()

    def __exit__(self, *exc: object) -> None:
        self.owner.peaks[self.name] = peak_memory_gib()


# --- data and model ---------------------------------------------------------------------------


def benchmark_dataset(args: argparse.Namespace) -> tuple[str, Path]:
    """(name, data_path) of the dataset to use, generating the synthetic one if needed."""
    if args.dataset:
        return args.dataset, Path(args.data_path).resolve()
    spec = SyntheticSpec(
        n_users=args.users, n_items=args.items, mean_interactions=SPORTS["per_user"],
        image_dim=args.dv, text_dim=args.dt, seed=7,
    )  # fmt: skip
    name = f"bench{args.users}x{args.items}x{args.dv}x{args.dt}"
    data_path = PROJECT_ROOT / "cache" / "bench"
    if not (data_path / name / f"{name}.inter").is_file():
        print(f"generating {name} ...", flush=True)
        write_dataset(data_path / name, name, *generate(spec))
    return name, data_path


@dataclass
class Built:
    """What a benchmark needs of one model: its config, training data and batches, the model,
    the seconds its construction took and a function that evaluates it on the valid split."""

    combo: dict[str, Any]
    train_users: np.ndarray
    train_items: np.ndarray
    n_users: int
    n_items: int
    batches: TrainBatches
    model: Recommender
    build_s: float
    evaluate: Callable[[], dict[str, float]]
    valid_users: int
    dv: int | None
    dt: int | None
    data: Any = None  # the loaded dataset, kept alive as in a training run


def build_for_benchmark(
    model_name: str, dataset: str, overrides: dict[str, Any], device: torch.device
) -> Built:
    """Config, data, evaluator, batches and model, through mgrec's composition root.

    Timed (build_s): the model's inputs and construction, its frozen kNN item graph built from
    scratch (an empty temporary cache), as the reference builds it in its constructor; the user
    graph of DualGNN/DRAGON is built before, untimed.
    """
    combo = grid(load_config(model_name, dataset, mg=True, overrides=overrides))[0]
    data = experiment.load_data(combo)
    widths = {m: None if data.feature(m) is None else data.feature(m).shape[1] for m in "vt"}
    evaluator = experiment.build_evaluators(data, combo, device)["valid"]
    batches = experiment.build_batches(data, combo, device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    with tempfile.TemporaryDirectory() as cache_dir:  # build the kNN graph, do not load it
        config = {**combo, "cache_dir": cache_dir}
        if get(model_name).needs_user_graph:  # untimed: the reference reads it from a file
            user_graph.for_dataset(
                data, str(config["user_graph_dict_file"]), Cache(Path(cache_dir))
            )
        init_seed(combo["seed"])
        synchronize(device)
        start = time.perf_counter()
        model_data, _ = experiment.build_model_data(data, config, device)
        model = get(model_name)(combo, model_data).to(device)
        synchronize(device)
        build_s = time.perf_counter() - start
    return Built(
        combo=combo, train_users=np.asarray(data.train.users), train_items=np.asarray(data.train.items),
        n_users=data.n_users, n_items=data.n_items, batches=batches, model=model, build_s=build_s,
        evaluate=lambda: experiment.evaluate(model, evaluator), valid_users=evaluator.n_users,
        dv=widths["v"], dt=widths["t"], data=data,
    )  # fmt: skip


def graph_nnz(model: Recommender) -> dict[str, int]:
    """Stored entries of every graph operator the model holds, by attribute name."""
    return {
        name: int(value.csr._nnz())
        for name, value in vars(model).items()
        if isinstance(value, graphs.SparseOp)
    }


def workload(built: Built) -> floors.Workload:
    """The epoch's shapes for the floor: sizes, one sampled epoch's batches (rows and distinct
    items each) and the model's graphs after one ``pre_epoch_processing``."""
    distinct, positives, rows, users, negatives = [], [], [], [], []
    for batch in built.batches:
        rows.append(batch.shape[1])
        distinct.append(int(torch.unique(batch[1:]).numel()))
        positives.append(int(torch.unique(batch[1]).numel()))
        users.append(int(torch.unique(batch[0]).numel()))
        # batches without negatives ([2, B]): None below, the floor then uses the batch rows
        negatives.append(int(torch.unique(batch[2]).numel()) if batch.shape[0] > 2 else 0)
    pairs = len(np.unique(built.train_users.astype(np.int64) * built.n_items + built.train_items))
    built.model.pre_epoch_processing()
    return floors.Workload(
        n_users=built.n_users, n_items=built.n_items, train_rows=len(built.train_users),
        batch_rows=rows, distinct_items=distinct, distinct_positives=positives, pairs=pairs,
        distinct_users=users, distinct_negatives=negatives if all(negatives) else None,
        dv=built.dv, dt=built.dt,
        graph_nnz=graph_nnz(built.model),
    )  # fmt: skip


# --- one model --------------------------------------------------------------------------------


def train_timings(
    built: Built, args: argparse.Namespace, device: torch.device, memory: PhaseMemory
) -> dict[str, Any]:
    """epoch_s / epoch_mg_s (whole epochs), or with --batches per-batch times extrapolated;
    nothing but ``{"trains": False}`` for a model that trains nothing."""
    model, combo, batches = built.model, built.combo, built.batches
    if not getattr(model, "trainable", True):  # built from the data (ItemKNNCBF): build + eval
        return {"trains": False}
    phases = set(args.phases)
    n_batches = len(batches)
    result: dict[str, Any] = {"n_batches": n_batches}
    if args.sync_debug and device.type == "cuda":
        result["host_syncs_per_epoch"] = count_host_syncs(built, device)
    if not args.batches:
        for key, mg, phase in (("epoch_s", False, "train"), ("epoch_mg_s", True, "mg")):
            if phase not in phases:
                continue
            trainer = Trainer(model, {**combo, "mg": mg})

            def epoch(trainer: Trainer = trainer) -> None:
                model.pre_epoch_processing()
                trainer.train_epoch(batches)

            with memory.phase("train" if phase == "train" else "train_mg"):
                result[key] = timed(epoch, device, args.repeats)
        result["epoch_extrapolated"] = False
        return result
    n = min(args.batches, n_batches)
    result["batches_timed"] = n
    result["pre_epoch_s"] = timed(model.pre_epoch_processing, device, args.repeats)
    result["sample_s"] = timed(lambda: list(batches), device, args.repeats)
    chosen = list(batches)[:n]
    per_batch = {}
    for key, mg, phase in (("batch_s", False, "train"), ("batch_mg_s", True, "mg")):
        if phase not in phases:
            continue
        # MG: every batch mirrored (beta 1), so batch_mg_s is the cost of one mirrored batch.
        trainer = Trainer(model, {**combo, "mg": mg, "beta": 1} if mg else {**combo, "mg": False})
        with memory.phase("train" if phase == "train" else "train_mg"):
            per_batch[key] = (
                timed(lambda t=trainer: t.train_epoch(chosen), device, args.repeats) / n
            )
        result[key] = per_batch[key]
    overhead = result["pre_epoch_s"] + result["sample_s"]
    n_mirrored = math.ceil(n_batches / int(combo["beta"]))
    if "batch_s" in per_batch:
        result["epoch_s"] = overhead + n_batches * per_batch["batch_s"]
        if "batch_mg_s" in per_batch:
            result["epoch_mg_s"] = (
                overhead
                + (n_batches - n_mirrored) * per_batch["batch_s"]
                + n_mirrored * per_batch["batch_mg_s"]
            )
    result["epoch_extrapolated"] = True
    return result


def count_host_syncs(built: Built, device: torch.device) -> int:
    """Host-device synchronisations in one training epoch (plain), counted by torch's sync debug
    mode: the training loop should make about one per epoch (the epoch loss), none per batch."""
    import warnings

    trainer = Trainer(built.model, {**built.combo, "mg": True})
    built.model.pre_epoch_processing()
    torch.cuda.synchronize(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            trainer.train_epoch(built.batches)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


def measure(model_name: str, args: argparse.Namespace, dataset: str, data_path: Path) -> dict:
    """One model's figures (the keys of the module docstring), in the results file's order:
    the original keys first, then the new ones."""
    device = torch.device(args.device)
    overrides = {
        "data_path": str(data_path), "train_batch_size": args.batch_size,
        "use_gpu": device.type == "cuda", **MG,
    }  # fmt: skip
    memory = PhaseMemory()
    with memory.phase("build"):
        built = build_for_benchmark(model_name, dataset, overrides, device)
    phases = set(args.phases)
    # a floor is optional for a model (floor.MODELS): one without is timed without it
    shapes = workload(built) if "floor" in phases and model_name in floors.MODELS else None
    training = train_timings(built, args, device, memory)
    result: dict[str, Any] = {"model": model_name, "build_s": built.build_s}
    result.update({k: training.pop(k) for k in ("epoch_s", "epoch_mg_s") if k in training})
    if "eval" in phases:
        with memory.phase("eval"):
            result["eval_s"] = timed(built.evaluate, device, args.repeats)
    if device.type == "cuda":
        result["peak_gpu_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    result["config"] = {k: v for k, v in built.combo["params"].items() if k != "seed"}
    result["train_rows"], result["valid_users"] = len(built.train_users), built.valid_users
    result.update(training)
    result["threads"] = torch.get_num_threads()
    result["peak_host_gb"] = memory.peaks
    result["peak_host_source"] = "VmHWM per phase" if memory.resettable else "cumulative"
    if shapes is not None:
        combo = built.combo
        del built  # the model's tensors are not needed to time the floor's products
        found = floors.model_floor(
            model_name, shapes, combo, device, beta=MG["beta"], repeats=args.floor_repeats
        )
        result["floor_s"] = found["epoch"].seconds
        result["floor_mg_s"] = found["epoch_mg"].seconds
        for key, measured_key, floor_key in (
            ("ratio", "epoch_s", "floor_s"), ("ratio_mg", "epoch_mg_s", "floor_mg_s"),
        ):  # fmt: skip
            if measured_key in result and result[floor_key] > 0:
                result[key] = result[measured_key] / result[floor_key]
        result["floor"] = {name: value.as_json() for name, value in found.items()}
    return result


# --- driver -----------------------------------------------------------------------------------


def run_isolated(name: str, argv: list[str]) -> dict[str, Any]:
    """``measure`` for one model in a fresh Python process (its own memory peaks)."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "result.json"
        command = [sys.executable, str(Path(__file__).resolve()), *argv]
        command += ["--models", name, "--worker", str(out)]
        completed = subprocess.run(command, env=os.environ.copy(), check=False)
        if completed.returncode != 0 or not out.is_file():
            raise RuntimeError(f"{name}: the benchmark process exited with {completed.returncode}")
        return json.loads(out.read_text())


def _fmt(value: float | None, width: int, digits: int = 3) -> str:
    """``value`` in ``width`` columns: fixed point, or 3 significant digits when tiny."""
    if value is None:
        return f"{'-':>{width}}"
    if 0 < abs(value) < 10**-digits:
        return f"{value:{width}.2e}"
    return f"{value:{width}.{digits}f}"


HEADER = (
    f"{'model':10} {'build_s':>8} {'epoch_s':>8} {'epoch_mg_s':>10} {'eval_s':>8} "
    f"{'peak_gpu_gb':>11} {'floor_s':>8} {'ratio':>6} {'floor_mg_s':>10} {'ratio_mg':>8} "
    f"{'host GiB build/train/mg/eval':>29}"
)


def row(result: dict[str, Any]) -> str:
    get_ = result.get
    peaks = result.get("peak_host_gb", {})
    host = "/".join(
        "-" if peaks.get(p) is None else f"{peaks[p]:.2f}" for p in ("build", "train", "train_mg", "eval")
    )  # fmt: skip
    line = (
        f"{result['model']:10} {_fmt(get_('build_s'), 8)} {_fmt(get_('epoch_s'), 8)} "
        f"{_fmt(get_('epoch_mg_s'), 10)} {_fmt(get_('eval_s'), 8)} {_fmt(get_('peak_gpu_gb'), 11, 2)} "
        f"{_fmt(get_('floor_s'), 8)} {_fmt(get_('ratio'), 6, 1)} {_fmt(get_('floor_mg_s'), 10)} "
        f"{_fmt(get_('ratio_mg'), 8, 1)} {host:>29}"
    )  # fmt: skip
    if result.get("epoch_extrapolated"):
        line += (
            f"  (epochs extrapolated from {result['batches_timed']} of {result['n_batches']} "
            f"batches: {_fmt(get_('batch_s'), 0)} s/batch, MG {_fmt(get_('batch_mg_s'), 0)} "
            "s/mirrored batch)"
        )
    return line


def parse_args(argv: list[str] | None = None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default=",".join(names()), help="comma-separated model names")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--output", help="JSON file for the results")
    parser.add_argument("--users", type=int, default=SPORTS["users"])
    parser.add_argument("--items", type=int, default=SPORTS["items"])
    parser.add_argument("--dv", type=int, default=4096, help="image feature width")
    parser.add_argument("--dt", type=int, default=384, help="text feature width")
    parser.add_argument("--dataset", help="use this existing dataset instead of generating one")
    parser.add_argument("--data_path", default="data", help="folder holding --dataset")
    parser.add_argument("--batch_size", type=int, default=2048)
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed repetitions (after one warm-up)"
    )
    parser.add_argument(
        "--batches", type=int, default=0, metavar="N",
        help="time N training batches instead of whole epochs and extrapolate the epoch",
    )  # fmt: skip
    parser.add_argument(
        "--threads", type=int, metavar="T", help="torch.set_num_threads(T) (default: torch's)"
    )
    parser.add_argument(
        "--phases", default=",".join(PHASES),
        help=f"comma-separated phases to run after the build, of {','.join(PHASES)} "
        "(mg: the MG epoch; floor: the products' floor and the ratios)",
    )  # fmt: skip
    parser.add_argument(
        "--floor_repeats", type=int, default=3,
        help="timed calls per product shape for the floor (best kept; ~1 s budget a shape)",
    )  # fmt: skip
    parser.add_argument(
        "--isolate", action=argparse.BooleanOptionalAction, default=True,
        help="run each model in a fresh subprocess (default), so memory peaks do not leak",
    )  # fmt: skip
    parser.add_argument(
        "--sync_debug", action="store_true",
        help="CUDA: count host-device synchronisations in one MG training epoch",
    )  # fmt: skip
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: one model, JSON to here
    args = parser.parse_args(argv)
    args.phases = [p.strip() for p in args.phases.split(",") if p.strip()]
    unknown_phases = [p for p in args.phases if p not in PHASES]
    if unknown_phases:
        parser.error(
            f"unknown phase(s) {', '.join(unknown_phases)}; available: {', '.join(PHASES)}"
        )
    if args.batches < 0:
        parser.error("--batches must be >= 0")
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    return parser, args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser, args = parse_args(argv)
    experiment.bound_host_heap()  # as a training run's configure_torch does
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but CUDA is not available")
    known = names()
    chosen = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in known]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; available: {', '.join(known)}")
    dataset, data_path = benchmark_dataset(args)
    if args.worker:  # a child of run_isolated: one model, results to a file
        Path(args.worker).write_text(json.dumps(measure(chosen[0], args, dataset, data_path)))
        return 0
    machine = (
        torch.cuda.get_device_name()
        if args.device == "cuda"
        else platform.processor() or platform.machine()
    )
    print(f"dataset {dataset}; device {args.device} ({machine}); torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; phases {','.join(args.phases)}; "
          f"{'one process per model' if args.isolate else 'one process'}")  # fmt: skip
    print(HEADER)
    results, failed = [], []
    for name in chosen:
        try:
            result = (
                run_isolated(name, argv)
                if args.isolate
                else measure(name, args, dataset, data_path)
            )
        except Exception as error:  # report and go on with the next model
            print(f"{name:10} FAILED: {error}", flush=True)
            failed.append(name)
            continue
        results.append(result)
        print(row(result), flush=True)
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.output}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
