"""Running a grid's trials on Ray (``executor: ray``): each combination is one Ray task.

The driver (the ``mgrec`` command) does what the local executor does (claims, results lines,
summaries, the index), and hands the training itself to Ray: one task per combination, declared
with ``cpus_per_trial`` and ``gpus_per_trial`` (a fraction such as 0.25 packs four trials on a
GPU), retried up to ``max_retries`` times when its worker or node dies. A retried trial continues
from its last saved training state. Workers write a trial's files (metrics, training state,
checkpoint) straight into the run folder, so ``results_dir``, ``checkpoint_dir`` and ``data_path``
must be storage every node can read and write (a shared file system on a cluster); the driver
draws the curves and records the results line when a task returns.

``ray_address`` joins an existing cluster (``auto``, ``host:port`` or ``ray://...``); without it
a private local instance sized to the machine is started (``address="local"``: never someone
else's cluster) and stopped at the end. Everything Ray does here stays on the addresses the
cluster uses; a local instance, and a cluster on 127.0.0.1, stay on loopback (see
docs/ray-notes.md for the settings that make Ray keep that address).
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import ipaddress
import logging
import math
import os
import secrets
import shutil
import socket
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from mgrec.errors import UserError
from mgrec.experiment import ExperimentBuilder
from mgrec.models import registry
from mgrec.paths import PACKAGE_DIR, project_path
from mgrec.runs.grid import Grid
from mgrec.runs.schedule import Job, Outcome, drive

log = logging.getLogger("mgrec")
RAY_MISSING = 'executor: ray needs Ray: pip install -e ".[ray]" (or pip install "ray>=2.60,<2.61")'
# Trial paths resolved in the driver, so a worker with another working directory finds them.
FOLDER_KEYS = ("data_path", "cache_dir", "results_dir", "checkpoint_dir")
_worker_builder: Any = None  # each worker process keeps one ExperimentBuilder (data loaded once)


def _import_ray() -> Any:
    """``import ray`` with the environment that keeps it on the addresses it is given."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Keep a loopback node address literal (Ray otherwise rewrites 127.0.0.1 into the machine's
    # other interface and listens on all of them).
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    try:
        import ray
    except ImportError as exc:
        raise UserError(RAY_MISSING) from exc
    return ray


def _is_loopback(address: str) -> bool:
    host = address.split("://")[-1].rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@contextlib.contextmanager
def ray_session(config: Mapping[str, Any]) -> Iterator[Any]:
    """Ray, initialised for this driver: connected to ``ray_address`` or a private local instance
    started for the run (and stopped, with its files, at the end)."""
    address = config.get("ray_address")
    saved_home = os.environ.get("HOME")
    scratch = None
    if not address and not _ray_initialized():
        scratch = Path(tempfile.mkdtemp(prefix="mgr", dir="/tmp"))  # short: socket paths
        # A token, so that other local users cannot submit to the private instance. Ray reads
        # the mode when it is first imported, so it is set before that and kept for the rest of
        # the process; where Ray was imported already (a notebook, a test), the instance runs
        # without one (still on 127.0.0.1 only). A mode set by the user is kept.
        if "RAY_AUTH_MODE" not in os.environ and "ray" not in sys.modules:
            os.environ["RAY_AUTH_MODE"] = "token"
            os.environ["RAY_AUTH_TOKEN_PATH"] = str(_private_token())  # nothing in ~/.ray
    constants: Any = None  # ray._private.ray_constants, once imported
    saved, started = None, False
    try:
        ray = _import_ray()
        constants = importlib.import_module("ray._private.ray_constants")

        saved = constants.ENABLE_RAY_CLUSTER
        if ray.is_initialized():  # a caller (a test, a notebook) connected already
            yield ray
            return
        runtime_env = {"env_vars": {"PYTHONPATH": _pythonpath(config.get("model"))}}
        common: dict[str, Any] = dict(
            include_dashboard=False, log_to_driver=False, configure_logging=False,
            runtime_env=runtime_env,
        )  # fmt: skip
        if address:
            if _is_loopback(str(address)):  # a cluster on this machine: the driver stays there too
                constants.ENABLE_RAY_CLUSTER = False
                common["_node_ip_address"] = "127.0.0.1"
            started = True
            ray.init(address=str(address), **common)
        else:
            assert scratch is not None
            constants.ENABLE_RAY_CLUSTER = False  # keep 127.0.0.1 (even if imported first)
            # With this file in HOME, Ray's dashboard process does not ask cloud metadata
            # servers which cloud it runs on (the trials get the real HOME back).
            stub = scratch / "home"
            stub.mkdir()
            (stub / "ray_bootstrap_config.yaml").write_text("provider: {type: local}\n")
            runtime_env["env_vars"]["HOME"] = saved_home or ""
            # The trials find the instance's token where Ray put it: ours, or the one Ray makes
            # in HOME/.ray when it was imported before we could choose (then HOME is the stub).
            runtime_env["env_vars"]["RAY_AUTH_TOKEN_PATH"] = os.environ.get(
                "RAY_AUTH_TOKEN_PATH", str(stub / ".ray" / "auth_token")
            )
            os.environ["HOME"] = str(stub)
            import torch

            started = True
            ray.init(
                address="local", num_cpus=os.cpu_count() or 1,
                num_gpus=torch.cuda.device_count() if config.get("use_gpu") else 0,
                _node_ip_address="127.0.0.1", _temp_dir=str(scratch),
                object_store_memory=256 * 2**20, **common,
            )  # fmt: skip
            _restore_env({"HOME": saved_home})
        yield ray
    finally:
        if constants is not None:
            constants.ENABLE_RAY_CLUSTER = saved
        if started and _ray_initialized():
            sys.modules["ray"].shutdown()
        _restore_env({"HOME": saved_home})
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


_token: Path | None = None


def _private_token() -> Path:
    """A random token for this process's private Ray instances, in a file removed at exit."""
    global _token
    if _token is None:
        folder = Path(tempfile.mkdtemp(prefix="mgr-token-"))
        _token = folder / "auth_token"
        _token.write_text(secrets.token_hex(32))
        _token.chmod(0o600)
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return _token


def _ray_initialized() -> bool:
    """Whether this process is connected to Ray already (without importing it)."""
    ray = sys.modules.get("ray")
    return ray is not None and bool(ray.is_initialized())


def _restore_env(values: Mapping[str, str | None]) -> None:
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _pythonpath(model: str | None = None) -> str:
    """Workers import this mgrec (a checkout's src/, or the installed package's folder) and,
    for a model given as ``module:Class``, the folder its module was imported from here (the
    same string is imported there: classes never travel pickled)."""
    existing = os.environ.get("PYTHONPATH")
    folders = [str(PACKAGE_DIR.parent)]
    if model is not None and registry.find(model).kind == "import path":
        root = registry.import_root(model)
        if root is not None:
            folders.append(str(root))
    return os.pathsep.join([*folders, *([existing] if existing else [])])


def resolved(combo: Mapping[str, Any]) -> dict[str, Any]:
    """``combo`` with its folder keys made absolute here, for a worker elsewhere."""
    out = dict(combo)
    for key in FOLDER_KEYS:
        if out.get(key) is not None:
            out[key] = str(project_path(out[key]))
    return out


def trial_task(
    combo: dict[str, Any], number: int, folder: str, checkpoint: str, threads: int
) -> dict[str, Any]:
    """What a Ray worker runs for one combination: build its experiment (this worker's builder
    keeps the data of earlier tasks), train it with the trial code of the local executor, and
    return the results row, the epoch history and the trial's log lines. A user error (the data
    not visible from this node, say) comes back as one line naming the node."""
    global _worker_builder
    import torch

    from mgrec.experiment import ExperimentBuilder
    from mgrec.trial import TrialFiles
    from mgrec.trial import run as run_trial

    lines: list[str] = []
    handler = _ListHandler(lines, f"[combo-{number:03d}] ")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        if combo.get("threads") is None:
            torch.set_num_threads(max(1, threads))
        combo = {**combo, "use_gpu": _has_gpu()}  # the device follows what Ray assigned
        if _worker_builder is None:
            _worker_builder = ExperimentBuilder()
        try:
            experiment = _worker_builder.build(combo)
            files = TrialFiles(number, Path(folder), Path(checkpoint))
            row, history = run_trial(experiment, files, quiet=True)
        except UserError as error:
            note = " (with executor ray, data_path, results_dir and checkpoint_dir must be shared storage every node can use)"
            return {"error": f"on {socket.gethostname()}: {error}{note}", "log": lines}
        return {"row": row, "history": history, "log": lines}
    finally:
        log.removeHandler(handler)


def _has_gpu() -> bool:
    """Whether Ray gave this task a GPU (False outside a Ray worker)."""
    import ray

    # (ray.get_gpu_ids would start a Ray instance in a process that has none)
    return ray.is_initialized() and bool(ray.get_gpu_ids())


class _ListHandler(logging.Handler):
    def __init__(self, lines: list[str], prefix: str) -> None:
        super().__init__(logging.INFO)
        self.lines, self.prefix = lines, prefix

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.prefix + record.getMessage())


def resources(config: Mapping[str, Any], cluster_gpus: float) -> tuple[float, float]:
    """(cpus, gpus) each trial asks Ray for: ``cpus_per_trial``; ``gpus_per_trial``, or, when it
    is not set, one GPU if ``use_gpu`` and the cluster has any, else none."""
    cpus = float(config.get("cpus_per_trial") or 1)
    gpus = config.get("gpus_per_trial")
    if gpus is None:
        gpus = 1.0 if config.get("use_gpu") and cluster_gpus > 0 else 0.0
    if cpus <= 0 or float(gpus) < 0:
        raise UserError(
            f"cpus_per_trial must be > 0 and gpus_per_trial >= 0, got {cpus} and {gpus}"
        )
    return cpus, float(gpus)


def concurrency(cpus: float, gpus: float, cluster_cpus: float, cluster_gpus: float) -> int:
    """How many trials the resources let run at once."""
    fit = math.floor(cluster_cpus / cpus + 1e-9)
    if gpus > 0:
        fit = min(fit, math.floor(cluster_gpus / gpus + 1e-9))
    return max(fit, 0)


class RayExecutor:
    """Each submitted job is one Ray task (``trial_task``), on a connected session."""

    label = "grid (ray)"

    def __init__(self, ray: Any, config: Mapping[str, Any]) -> None:
        total = ray.cluster_resources()
        cluster_cpus, cluster_gpus = float(total.get("CPU", 0)), float(total.get("GPU", 0))
        cpus, gpus = resources(config, cluster_gpus)
        if concurrency(cpus, gpus, cluster_cpus, cluster_gpus) < 1:
            raise UserError(
                f"a trial asks for {cpus:g} CPUs and {gpus:g} GPUs, but the Ray cluster has "
                f"{cluster_cpus:g} CPUs and {cluster_gpus:g} GPUs: lower cpus_per_trial/gpus_per_trial"
            )
        self.ray, self.cpus = ray, cpus
        self.remote = ray.remote(trial_task).options(
            num_cpus=cpus, num_gpus=gpus, max_retries=int(config.get("max_retries", 2))
        )
        self._pending: dict[Any, Job] = {}

    def submit(self, job: Job) -> None:
        files = job.grid.files(job.key)
        ref = self.remote.remote(
            resolved(job.combo), files.number, str(files.folder), str(files.checkpoint),
            int(self.cpus),
        )  # fmt: skip
        self._pending[ref] = job

    def collect(self, timeout: float) -> list[tuple[Job, Outcome]]:
        if not self._pending:
            return []
        ready, _ = self.ray.wait(list(self._pending), num_returns=1, timeout=timeout)
        finished = []
        for ref in ready:
            job = self._pending.pop(ref)
            try:
                outcome = self.ray.get(ref)
            except Exception as exc:  # the task failed after its retries (a crash, not a UserError)
                first = str(exc).splitlines()[0] if str(exc) else ""
                outcome = {"error": f"{type(exc).__name__}: {first}"}
            finished.append((job, outcome))
        return finished

    def pending(self) -> int:
        return len(self._pending)

    def cancel(self) -> None:
        for ref in list(self._pending):
            with contextlib.suppress(Exception):
                self.ray.cancel(ref, force=True)
        self._pending.clear()


def run_on_ray(
    grids: Sequence[Grid],
    builder: ExperimentBuilder,
    config: Mapping[str, Any],
    quiet: bool = False,
    on_trial: Callable[[Mapping[str, Any]], None] | None = None,
) -> list[str]:
    """Train what ``grids`` have left as Ray tasks, through the shared claim loop; returns the
    failures (one line each). Ctrl-C cancels every task of this run and releases its claims."""
    with ray_session(config) as ray:
        return drive(grids, RayExecutor(ray, config), builder, quiet, on_trial)
