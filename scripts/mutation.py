"""Mutation testing of the core modules with mutmut (3.x), outside CI.

    .venv/bin/python scripts/mutation.py                      # every core module
    .venv/bin/python scripts/mutation.py --modules mirror,metrics --jobs 2
    .venv/bin/python scripts/mutation.py --without tests/test_planted_bugs.py  # a "before" run
    .venv/bin/python scripts/mutation.py --mutants build/mutation/survivors.txt  # retest some

mutmut changes one thing at a time in the code (``<`` to ``<=``, a constant, a dropped call) and
runs the tests that reach the changed function; a mutant the tests do not notice "survives". The
kill rate is killed / all mutants (a mutant no selected test reaches counts as surviving).

The run works on a snapshot: ``src/``, ``tests/`` and ``pyproject.toml`` are copied into the work
folder (default ``build/mutation``, ignored by git) with a ``[tool.mutmut]`` section added, so
edits made in the checkout meanwhile do not disturb it and the checkout's own configuration stays
as it is. mutmut copies the snapshot's ``src/`` into ``mutants/src`` (where the tests import
``mgrec`` from, pytest's ``pythonpath = ["src"]`` resolving inside ``mutants/``) and mutates only
the files and functions listed in ``MODULES``, each with the tests that should catch its bugs.

Needs mutmut >= 3 (the ``mutation`` extra: ``pip install -e ".[mutation]"``); installed into the
running interpreter's environment when missing. Results: ``<work>/report.txt`` (the kill rate per
module) and ``<work>/survivors.txt`` (one mutant name a line; ``mutmut show NAME`` run in the
work folder prints its diff).
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Module:
    """A file to mutate, the functions of it that count (mutmut's name globs; ``*``: all), and
    the tests that should catch its bugs (pytest node ids or files)."""

    file: str
    functions: tuple[str, ...]
    tests: tuple[str, ...]


PLANTED = "tests/test_planted_bugs.py"
# test_code_identity's other tests run a copy of the package in a new process: mutmut's mutated
# code cannot run there (it looks for its configuration in that process's folder)
IDENTITY = "tests/test_code_identity.py::test_a_models_files_are_its_module_and_the_model_modules_it_imports"
# tests that start Python on code outside the snapshot (the README's example, the entry points)
DESELECTED = (
    "tests/test_mirror.py::test_the_readme_example_runs",
    "tests/test_cli.py::test_entry_points_work_from_any_directory",
)
MODULES = {
    "mirror": Module(
        "src/mgrec/optim/mirror.py",
        ("*",),
        ("tests/test_mirror.py", "tests/test_mirror_state.py", "tests/test_trainer.py", PLANTED),
    ),
    "metrics": Module(
        "src/mgrec/metrics.py",
        ("*",),
        ("tests/test_metrics.py", "tests/test_evaluator.py", "tests/test_trainer.py"),
    ),
    "evaluator": Module(
        "src/mgrec/evaluator.py",
        ("*",),
        ("tests/test_evaluator.py", "tests/test_evaluator_edges.py", "tests/test_metrics.py"),
    ),
    "checkpoint": Module(
        "src/mgrec/checkpoint.py",
        ("*",),
        (
            "tests/test_cli.py",
            "tests/test_checkpoint.py",
            "tests/test_reliability.py::test_a_crafted_checkpoint_cannot_point_resume_at_a_booby_trap",
            PLANTED,
        ),
    ),
    "user_graph (unpickler and checks)": Module(
        "src/mgrec/data/user_graph.py",
        # the restricted unpickler, the reference format and the cache check; not ``build``
        # (the graph's definition, covered by its brute-force test) nor the sampler
        (
            "*_numeric_dtype*",
            "*_array*",
            "*_scalar*",
            "*_GraphUnpickler*",
            "*read_reference_pickle*",
            "*from_reference_dict*",
            "*check_arrays*",
        ),
        (
            "tests/test_user_graph.py",
            "tests/test_user_graph_file.py",
            "tests/test_reliability.py::test_a_booby_trapped_user_graph_is_refused_and_never_runs",
            "tests/test_reliability.py::test_a_damaged_user_graph_cache_entry_is_rebuilt",
            PLANTED,
        ),
    ),  # fmt: skip
    "provenance": Module(
        "src/mgrec/provenance.py",
        ("*result_files*", "*code_fingerprint*"),
        (IDENTITY, "tests/test_grid_status.py", PLANTED),
    ),
    "grid status": Module(
        "src/mgrec/runs/grid.py",
        ("x_status__*",),
        (
            "tests/test_reliability.py::test_changed_features_retrain_and_a_grown_grid_trains_only_the_new_point",
            IDENTITY,
            "tests/test_grid_status.py",
            PLANTED,
        ),
    ),
    "graph pruning": Module(
        "src/mgrec/graphs.py",
        ("*edge_norm_values*", "*pruned_adj*", "*degree_sensitive_keep*", "*uniform_keep*"),
        (
            "tests/test_graphs.py",
            "tests/test_randomness.py",
            "tests/test_pruning_state.py",
            PLANTED,
        ),
    ),
    "model pruning": Module(
        "src/mgrec/models/pruning.py",
        ("*",),
        (
            "tests/test_graphs.py",
            "tests/test_randomness.py",
            "tests/test_pruning_state.py",
            PLANTED,
        ),
    ),
}
KILLED = {"killed", "timeout", "caught by type check", "segfault"}


def ensure_mutmut() -> None:
    """Install mutmut >= 3 into this interpreter's environment if it is missing or older."""
    try:
        major = int(importlib.metadata.version("mutmut").split(".")[0])
    except importlib.metadata.PackageNotFoundError:
        major = 0
    if major < 3:
        print("installing mutmut>=3 (the mutation extra) ...", flush=True)
        subprocess.run([sys.executable, "-m", "pip", "install", "mutmut>=3"], check=True)


def module_name(file: str) -> str:
    """``src/mgrec/graphs.py`` -> ``mgrec.graphs`` (the prefix of its mutants' names)."""
    return ".".join(Path(file).relative_to("src").with_suffix("").parts)


def toml_list(values: list[str]) -> str:
    return "[" + ", ".join(f'"{v}"' for v in values) + "]"


def snapshot(work: Path, modules: dict[str, Module], without: list[str]) -> list[str]:
    """A fresh work folder holding the snapshot and its ``[tool.mutmut]``; returns the tests."""
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "src", work / "src", ignore=ignore)
    shutil.copytree(ROOT / "tests", work / "tests", ignore=ignore)
    tests = sorted(
        {
            t
            for m in modules.values()
            for t in m.tests
            if (ROOT / t.split("::")[0]).is_file()
            and not {t, t.split("::")[0], t.split("::")[-1]} & set(without)
        }
    )
    deselect = [arg for test in DESELECTED for arg in ("--deselect", test)]
    config = (ROOT / "pyproject.toml").read_text()
    config = re.sub(r"(?ms)^\[tool\.mutmut\].*?(?=^\[|\Z)", "", config)
    config += (
        "\n[tool.mutmut]\n"
        'source_paths = ["src"]\n'
        f"only_mutate = {toml_list(sorted({m.file for m in modules.values()}))}\n"
        f"pytest_add_cli_args_test_selection = {toml_list(tests)}\n"
        f"pytest_add_cli_args = {toml_list(['-p', 'no:cacheprovider', *deselect])}\n"
        "use_git_change_detection = false\n"
    )
    (work / "pyproject.toml").write_text(config)
    return tests


def mutant_globs(modules: dict[str, Module]) -> list[str]:
    """mutmut's name globs of the counted mutants (``mgrec.graphs.*pruned_adj*``: a mutant of a
    function is named ``mgrec.graphs.x_pruned_adj__mutmut_3``, of a method
    ``mgrec.optim.mirror.xǁMirrorGradientǁstep__mutmut_1``)."""
    return [f"{module_name(m.file)}.{f}" for m in modules.values() for f in m.functions]


def results(work: Path, env: dict[str, str]) -> dict[str, str]:
    """``{mutant name: status}`` of every mutant mutmut made."""
    done = subprocess.run(
        [sys.executable, "-m", "mutmut", "results", "--all", "true"],
        cwd=work, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    found = {}
    for line in done.stdout.splitlines():
        name, _, status = line.strip().rpartition(": ")
        if name:
            found[name] = status
    return found


def owner(name: str, modules: dict[str, Module]) -> str | None:
    """The module (key of ``modules``) a mutant counts for, or None."""
    for key, module in modules.items():
        if any(fnmatch.fnmatchcase(name, glob) for glob in mutant_globs({key: module})):
            return key
    return None


def report(found: dict[str, str], modules: dict[str, Module]) -> tuple[str, list[str]]:
    """The kill rate per module (a table) and the survivors' names."""
    rows, survivors = [], []
    total_killed = total = 0
    for key in modules:
        mine = {n: s for n, s in found.items() if owner(n, modules) == key}
        killed = sum(s in KILLED for s in mine.values())
        untested = sum(s == "no tests" for s in mine.values())
        survivors += sorted(n for n, s in mine.items() if s not in KILLED)
        total_killed, total = total_killed + killed, total + len(mine)
        rate = f"{100 * killed / len(mine):.1f}%" if mine else "-"
        rows.append(
            f"| {key} | {len(mine)} | {killed} | {len(mine) - killed} | {untested} | {rate} |"
        )
    rate = f"{100 * total_killed / total:.1f}%" if total else "-"
    rows.append(f"| all | {total} | {total_killed} | {total - total_killed} | | {rate} |")
    head = "| module | mutants | killed | survived | of which no test reaches | kill rate |\n|---|---:|---:|---:|---:|---:|\n"
    return head + "\n".join(rows), survivors


def spread(names: list[str], cap: int) -> list[str]:
    """At most ``cap`` of ``names`` (sorted), evenly spaced: a sample that is the same each run."""
    names = sorted(names)
    if cap <= 0 or len(names) <= cap:
        return names
    return [names[i * len(names) // cap] for i in range(cap)]


def mutmut(work: Path, env: dict[str, str], *args: str) -> int:
    return subprocess.run(
        [sys.executable, "-m", "mutmut", *args], cwd=work, env=env, check=False
    ).returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modules", help=f"comma-separated subset of: {', '.join(MODULES)}")
    parser.add_argument("--jobs", type=int, default=1, help="mutants tested at once (default 1)")
    parser.add_argument(
        "--cap", type=int, default=0,
        help="test at most this many mutants per module, evenly spaced (default 0: all)",
    )  # fmt: skip
    parser.add_argument("--work", type=Path, default=ROOT / "build" / "mutation")
    parser.add_argument(
        "--without",
        action="append",
        default=[],
        help="a test file, test id or test name left out (repeatable)",
    )
    parser.add_argument("--mutants", type=Path, help="a file of mutant names: test only those")
    args = parser.parse_args(argv)
    modules = MODULES
    if args.modules:
        wanted = [m.strip() for m in args.modules.split(",")]
        unknown = [m for m in wanted if not any(k.startswith(m) for k in MODULES)]
        if unknown:
            parser.error(f"unknown modules {unknown}; choose from {', '.join(MODULES)}")
        modules = {k: v for k, v in MODULES.items() if any(k.startswith(m) for m in wanted)}
    ensure_mutmut()
    work = args.work.resolve()
    tests = snapshot(work, modules, args.without)
    print(f"work folder {work}; tests: {' '.join(tests)}", flush=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    # 1. Make the mutants and map the tests to the functions they reach (a clean run of the
    # tests). A name that matches no mutant stops mutmut right after that, before any mutant
    # is tested; everything it made is kept in <work>/mutants for the next step.
    print("making the mutants and running the tests once ...", flush=True)
    mutmut(work, env, "run", "--max-children", str(args.jobs), "mgrec.no-such-function")
    made = results(work, env)
    if not made:
        print("mutmut made no mutants: see its output above", file=sys.stderr)
        return 1
    # 2. Test the chosen mutants.
    if args.mutants is not None:
        listed = set(args.mutants.read_text().split())
        chosen = sorted(n for n in made if n in listed)
    else:
        chosen = []
        for key in modules:
            chosen += spread([n for n in made if owner(n, modules) == key], args.cap)
    print(f"testing {len(chosen)} of {len(made)} mutants ...", flush=True)
    if chosen:
        mutmut(work, env, "run", "--max-children", str(args.jobs), *chosen)
    found = {n: s for n, s in results(work, env).items() if n in set(chosen)}
    table, survivors = report(found, modules)
    (work / "report.txt").write_text(table + "\n")
    (work / "survivors.txt").write_text("".join(f"{n}\n" for n in survivors))
    print(table)
    print(f"{len(survivors)} survivors listed in {work / 'survivors.txt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
