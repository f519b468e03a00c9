"""Speed and memory benchmark (a script that prints figures, not a test).

    python benchmarks/run.py --models FREEDOM,BM3 --device cpu --output results.json
    python benchmarks/run.py --users 3000 --items 1500 --device cpu      # the CPU workload
    python benchmarks/run.py --dataset baby --data_path data --device cuda

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

and writes a JSON list with one object per model (key ``model``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from mgrec import runner  # noqa: E402
from mgrec.config import grid, load_config  # noqa: E402
from mgrec.data.sampler import TrainBatches  # noqa: E402
from mgrec.data.synthetic import SyntheticSpec, generate, write_dataset  # noqa: E402
from mgrec.models import MODULES, get  # noqa: E402
from mgrec.paths import PROJECT_ROOT  # noqa: E402
from mgrec.trainer import Trainer  # noqa: E402

SPORTS = {"users": 35598, "items": 18357, "per_user": 8.32}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device, repeats: int) -> float:
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


def measure(model_name: str, args: argparse.Namespace, dataset: str, data_path: Path) -> dict:
    device = torch.device(args.device)
    overrides = {
        "data_path": str(data_path), "train_batch_size": args.batch_size, "use_gpu": device.type == "cuda",
        "alpha1": 1.0, "alpha2": 0.1, "beta": 3,
    }  # fmt: skip
    combo = grid(load_config(model_name, dataset, mg=True, overrides=overrides))[0]
    data = runner.prepare_data(combo)
    evaluator = runner.build_evaluators(data, combo, device)["valid"]
    batches = TrainBatches(
        data.train, data.n_items, combo["train_batch_size"], combo["use_neg_sampling"], device
    )
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    with tempfile.TemporaryDirectory() as cache_dir:  # build the kNN graph, do not load it
        model_data, _ = runner.model_inputs(data, {**combo, "cache_dir": cache_dir}, device)
        runner.init_seed(combo["seed"])
        synchronize(device)
        start = time.perf_counter()
        model = get(model_name)(combo, model_data).to(device)
        synchronize(device)
        build_s = time.perf_counter() - start
    result = {"model": model_name, "build_s": build_s}
    for key, mg in (("epoch_s", False), ("epoch_mg_s", True)):
        trainer = Trainer(model, {**combo, "mg": mg})

        def epoch(trainer: Trainer = trainer) -> None:
            model.pre_epoch_processing()
            trainer.train_epoch(batches)

        result[key] = timed(epoch, device, args.repeats)
    result["eval_s"] = timed(lambda: runner.evaluate_model(model, evaluator), device, args.repeats)
    if device.type == "cuda":
        result["peak_gpu_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    result["config"] = {k: v for k, v in combo["params"].items() if k != "seed"}
    result["train_rows"], result["valid_users"] = len(data.train), evaluator.n_users
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", default=",".join(MODULES), help="comma-separated model names")
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
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda, but CUDA is not available")
    names = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in names if m not in MODULES]
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; available: {', '.join(MODULES)}")
    dataset, data_path = benchmark_dataset(args)
    machine = (
        torch.cuda.get_device_name()
        if args.device == "cuda"
        else platform.processor() or platform.machine()
    )
    print(f"dataset {dataset}; device {args.device} ({machine}); torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    print(
        f"{'model':10} {'build_s':>8} {'epoch_s':>8} {'epoch_mg_s':>10} {'eval_s':>8} {'peak_gpu_gb':>11}"
    )
    results = []
    for name in names:
        result = measure(name, args, dataset, data_path)
        results.append(result)
        peak = f"{result['peak_gpu_gb']:.2f}" if "peak_gpu_gb" in result else "-"
        print(f"{name:10} {result['build_s']:8.3f} {result['epoch_s']:8.3f} {result['epoch_mg_s']:10.3f} "
              f"{result['eval_s']:8.3f} {peak:>11}", flush=True)  # fmt: skip
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
