"""Loopback-only multi-node Ray clusters for tests (Ray 2.60, Linux).

``loopback_cluster(tmp_dir, nodes=2, cpus_per_node=1)`` starts a head node and
``nodes - 1`` worker nodes as separate ``ray start --block`` processes on this
machine, every one bound to 127.0.0.1, and stops every process it started by
pid when the ``with`` block ends, even when the block raised. See
docs/ray-notes.md for why each setting is there.

Why the launcher below, not the plain ``ray`` CLI: Ray 2.60's CLI and
``ray.init`` rewrite ``127.0.0.1`` (``--node-ip-address``, ``--address``,
``_node_ip_address``) into the machine's outward address
(``services.resolve_ip_for_localhost``), and its C++ servers then listen on
all interfaces. ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` stops the rewrite but
makes ``ray start --address=...`` (a worker node) refuse to run. So this file,
run as a script (``python tests/ray_cluster.py start ...``), is a thin
wrapper around the Ray CLI that keeps 127.0.0.1 literal, and the child
processes get ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, which makes their own
"what is my IP" look-ups answer 127.0.0.1 without probing 8.8.8.8.

Process bookkeeping: each node's launcher is started with
``start_new_session=True``, so the node's processes (gcs_server, raylet,
agents, dashboard, log monitor, workers) share its session id; the helper
also follows parent pids, in case Ray ever moves a worker to its own session.
Pids are recorded with their start time, so a recycled pid is never killed.
Nothing here runs ``ray stop``, which kills every Ray process on the machine
by name. If the test process itself dies (SIGKILL, a CI timeout's SIGTERM),
the launcher dies with it (``PR_SET_PDEATHSIG``), Ray's ``--block`` mode
takes gcs_server/raylet/workers down with the launcher, and a watchdog forked
by each launcher SIGKILLs whatever is left in that node's session (the
agents would otherwise linger for about a minute).

Importing this module does not import Ray, so tests can use ``requires_ray``
or ``pytest.importorskip("ray")`` on machines without it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

LOOPBACK = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parent.parent

#: Ray's processes that run on every node but are not task workers.
AGENT_TITLES = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")

#: A Ray worker's temp dir holds Unix sockets at
#: <temp>/session_<date>_<time>_<usec>_<pid>/sockets/plasma_store; AF_UNIX paths
#: are limited to 107 bytes, which leaves about 43 for <temp>.
MAX_TEMP_DIR_LEN = 40

#: Where a cluster's node directories go when the caller's tmp_dir is too long.
SHORT_TMP_ROOT = "/tmp"

# Environment for every process of a loopback cluster (launcher, GCS, raylet,
# agents, workers). Each entry is explained in docs/ray-notes.md.
LOOPBACK_ENV = {
    # No usage-stats collection ...
    "RAY_USAGE_STATS_ENABLED": "0",
    # ... and the "usage stats are disabled" report that the head's dashboard
    # process still POSTs to usage-stats.ray.io for `ray start` clusters:
    # a URL with no scheme handler fails inside `requests` before any socket.
    "RAY_USAGE_STATS_REPORT_URL": "disabled://usage-stats-off",
    # Children: get_node_ip_address() answers 127.0.0.1 without a UDP probe.
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    # Explicit, so neither a RAY_AUTH_MODE in the caller's environment nor a
    # ~/.ray/auth_token turns token auth on for the nodes but not the driver.
    "RAY_AUTH_MODE": "disabled",
}

#: Faster detection of a dead node: the GCS health-checks raylets every
#: period_ms and declares a node dead after failure_threshold misses (Ray's
#: defaults: 3000 ms x 5). Only the head's GCS reads these.
FAST_NODE_DEATH_ENV = {
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_health_check_period_ms": "500",
    "RAY_health_check_timeout_ms": "500",
    "RAY_health_check_failure_threshold": "3",
}


def ray_available() -> bool:
    """Whether Ray can be imported in this interpreter (checked without importing it)."""
    try:
        return importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):
        return False


def _requires_ray_marker():
    import pytest

    return pytest.mark.skipif(not ray_available(), reason="ray is not installed")


requires_ray = _requires_ray_marker()


# --------------------------------------------------------------------------
# /proc helpers
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcStat:
    pid: int
    comm: str
    state: str
    ppid: int
    pgrp: int
    session: int
    starttime: int


def _read_stat(pid: int) -> ProcStat | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # comm may contain spaces and parentheses: split at the last ')'.
    head, _, rest = raw.rpartition(")")
    comm = head.split("(", 1)[1] if "(" in head else ""
    fields = rest.split()
    # fields[0] is field 3 (state); starttime is field 22.
    return ProcStat(
        pid=pid,
        comm=comm,
        state=fields[0],
        ppid=int(fields[1]),
        pgrp=int(fields[2]),
        session=int(fields[3]),
        starttime=int(fields[19]),
    )


def _all_stats() -> dict[int, ProcStat]:
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _read_stat(int(name))
            if st is not None:
                out[st.pid] = st
    return out


def cmdline(pid: int) -> str:
    """The process's command line ('' once it is gone); Ray workers show their proctitle."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return ""
    return raw.replace(b"\0", b" ").decode(errors="replace").strip()


def _alive(st: ProcStat | None) -> bool:
    return st is not None and st.state not in ("Z", "X")


# --------------------------------------------------------------------------
# Socket inspection (/proc/net/* of this network namespace + /proc/PID/fd)
# --------------------------------------------------------------------------

_TCP_STATES = {
    "01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1",
    "05": "FIN_WAIT2", "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT",
    "09": "LAST_ACK", "0A": "LISTEN", "0B": "CLOSING",
}  # fmt: skip


def _hex_to_ip(hex_addr: str) -> str:
    raw = bytes.fromhex(hex_addr)
    # /proc/net prints each 32-bit word in host (little-endian) order.
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    family = socket.AF_INET if len(words) == 4 else socket.AF_INET6
    return socket.inet_ntop(family, words)


def _net_table(name: str) -> dict[int, tuple[str, str, str, str]]:
    """inode -> (proto, local 'ip:port', remote 'ip:port', state) for one /proc/net table."""
    out: dict[int, tuple[str, str, str, str]] = {}
    try:
        lines = Path(f"/proc/net/{name}").read_text().splitlines()[1:]
    except FileNotFoundError:
        return out
    for line in lines:
        parts = line.split()
        (lip, lport), (rip, rport) = (p.split(":") for p in parts[1:3])
        state = _TCP_STATES.get(parts[3], parts[3]) if name.startswith("tcp") else parts[3]
        inode = int(parts[9])
        if inode == 0:  # TIME_WAIT and the like: no owning process
            continue
        out[inode] = (
            name,
            f"{_hex_to_ip(lip)}:{int(lport, 16)}",
            f"{_hex_to_ip(rip)}:{int(rport, 16)}",
            state,
        )
    return out


def _is_loopback_ip(ip: str) -> bool:
    if ip.startswith("::ffff:"):
        ip = ip[len("::ffff:") :]
    return ip.startswith("127.") or ip == "::1"


def _is_unset_peer(addr: str) -> bool:
    """The remote side of a listening/unconnected socket: 0.0.0.0:0 or [::]:0."""
    ip, _, port = addr.rpartition(":")
    return port == "0" and ip in ("0.0.0.0", "::")


@dataclass(frozen=True)
class SocketInfo:
    pid: int
    process: str
    proto: str  # tcp, tcp6, udp, udp6, raw, raw6, unix, netlink, other
    local: str = ""
    remote: str = ""
    state: str = ""

    @property
    def loopback_only(self) -> bool:
        if self.proto in ("unix", "netlink"):
            return True
        if self.proto == "other":
            return False
        local_ip = self.local.rpartition(":")[0]
        remote_ok = _is_unset_peer(self.remote) or _is_loopback_ip(self.remote.rpartition(":")[0])
        return _is_loopback_ip(local_ip) and remote_ok

    def __str__(self) -> str:
        if self.proto in ("unix", "netlink", "other"):
            return f"{self.pid:>7} {self.process[:28]:<28} {self.proto}"
        return (
            f"{self.pid:>7} {self.process[:28]:<28} {self.proto:<5} "
            f"{self.local:<24} {self.remote:<24} {self.state}"
        )


def sockets_of(pids: Iterable[int]) -> list[SocketInfo]:
    """Every socket that the given processes hold open, with its addresses."""
    tables: dict[int, tuple[str, str, str, str]] = {}
    for name in ("tcp", "tcp6", "udp", "udp6", "raw", "raw6"):
        tables.update(_net_table(name))
    unix, netlink = set(), set()
    with contextlib.suppress(FileNotFoundError):
        unix = {int(x.split()[6]) for x in Path("/proc/net/unix").read_text().splitlines()[1:]}
    with contextlib.suppress(FileNotFoundError):
        netlink = {
            int(x.split()[9]) for x in Path("/proc/net/netlink").read_text().splitlines()[1:]
        }
    out = []
    for pid in sorted(set(pids)):
        title = cmdline(pid)[:60] or (_read_stat(pid) or ProcStat(pid, "?", "", 0, 0, 0, 0)).comm
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if not target.startswith("socket:["):
                continue
            inode = int(target[len("socket:[") : -1])
            if inode in tables:
                proto, local, remote, state = tables[inode]
                out.append(SocketInfo(pid, title, proto, local, remote, state))
            elif inode in unix:
                out.append(SocketInfo(pid, title, "unix"))
            elif inode in netlink:
                out.append(SocketInfo(pid, title, "netlink"))
            else:
                out.append(_inspect_socket(pid, int(fd), title))
    return out


def _inspect_socket(pid: int, fd: int, title: str) -> SocketInfo:
    """A socket no /proc/net table lists (a TCP socket bound but neither listening nor
    connected, e.g. Ray reserving a port): copy it with pidfd_getfd and ask it for its
    addresses. "other" (not loopback-only) when that is not possible."""
    import ctypes

    try:
        pidfd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        return SocketInfo(pid, title, "other")
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        copy = libc.syscall(438, pidfd, fd, 0)  # pidfd_getfd (Linux >= 5.6)
        if copy < 0:
            return SocketInfo(pid, title, "other")
        sock = socket.socket(fileno=copy)
        try:
            if sock.family not in (socket.AF_INET, socket.AF_INET6):
                return SocketInfo(pid, title, "other")
            host, port = sock.getsockname()[:2]
            try:
                peer = "{}:{}".format(*sock.getpeername()[:2])
            except OSError:
                peer = "0.0.0.0:0"  # not connected
            proto = "tcp" if sock.type == socket.SOCK_STREAM else "udp"
            return SocketInfo(pid, title, proto, f"{host}:{port}", peer, "unlisted")
        finally:
            sock.close()  # our copy only
    finally:
        os.close(pidfd)


def non_loopback(socks: Iterable[SocketInfo]) -> list[SocketInfo]:
    return [s for s in socks if not s.loopback_only]


# --------------------------------------------------------------------------
# The cluster
# --------------------------------------------------------------------------


def free_loopback_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


class ClusterError(RuntimeError):
    pass


@dataclass
class Node:
    index: int
    head: bool
    temp_dir: Path
    log_path: Path
    popen: subprocess.Popen
    node_id: str | None = None  # hex, once registered
    # Everything ever seen in this node: pid -> starttime (to ignore recycled pids).
    seen: dict[int, int] = field(default_factory=dict)
    killed: bool = False

    @property
    def leader(self) -> int:
        return self.popen.pid


class LoopbackCluster:
    """Handle of a running loopback cluster; made by :func:`loopback_cluster`."""

    def __init__(
        self,
        base_dir: Path,
        cpus_per_node: int,
        object_store_bytes: int,
        env: dict[str, str],
        start_timeout_s: float,
    ):
        self.base_dir = base_dir
        self.cpus_per_node = cpus_per_node
        self.object_store_bytes = object_store_bytes
        self.env = env
        self.start_timeout_s = start_timeout_s
        self.port = free_loopback_port()
        self.address = f"{LOOPBACK}:{self.port}"
        self.nodes: list[Node] = []
        self._driver_connected = False
        self.timings: dict[str, float] = {}
        # Each launcher forks a watchdog that reads this pipe; EOF (this
        # process died without stop()) makes it SIGKILL its node's session.
        self._watchdog_r, self._watchdog_w = os.pipe()

    # ---- starting -------------------------------------------------------

    def _launch(self, head: bool) -> Node:
        index = len(self.nodes)
        temp_dir = self.base_dir / f"n{index}"
        temp_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.base_dir / f"n{index}.log"
        args = [
            sys.executable,
            str(Path(__file__).resolve()),
            "start",
            "--block",
            f"--node-ip-address={LOOPBACK}",
            f"--num-cpus={self.cpus_per_node}",
            "--num-gpus=0",
            f"--object-store-memory={self.object_store_bytes}",
            f"--temp-dir={temp_dir}",
            "--disable-usage-stats",
            "--log-style=record",
            "--log-color=false",
        ]
        if head:
            args += [
                "--head",
                f"--port={self.port}",
                "--include-dashboard=false",
                "--no-monitor",
            ]
        else:
            args += [f"--address={self.address}"]
        env = dict(
            self.env,
            RAY_LOOPBACK_PARENT_PID=str(os.getpid()),
            RAY_LOOPBACK_WATCHDOG_FD=str(self._watchdog_r),
        )
        with open(log_path, "wb") as log:
            popen = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=str(temp_dir),
                start_new_session=True,  # the node's processes share this session id
                pass_fds=(self._watchdog_r,),
            )
        node = Node(index, head, temp_dir, log_path, popen)
        self.nodes.append(node)
        self._refresh(node)
        return node

    def _gcs_client(self):
        from ray._raylet import GcsClient

        return GcsClient(address=self.address)

    def _wait_port(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            self._check_launchers()
            with (
                contextlib.suppress(OSError),
                socket.create_connection((LOOPBACK, self.port), timeout=0.5),
            ):
                return
            time.sleep(0.2)
        raise ClusterError(f"GCS did not listen on {self.address}\n{self.log_tails()}")

    def _check_launchers(self) -> None:
        for node in self.nodes:
            if not node.killed and node.popen.poll() is not None:
                raise ClusterError(
                    f"node {node.index} exited with {node.popen.returncode}\n{self.log_tails()}"
                )

    def alive_node_ids(self) -> dict[str, str]:
        """node_id hex -> temp_dir, for the nodes the GCS reports ALIVE."""
        from ray.core.generated.gcs_pb2 import GcsNodeInfo

        infos = self._gcs_client().get_all_node_info(timeout=5)
        return {
            info.node_id.hex(): info.temp_dir
            for info in infos.values()
            if info.state == GcsNodeInfo.GcsNodeState.ALIVE
        }

    def wait_for_nodes(self, deadline: float) -> None:
        """Block until every started (not killed) node is registered ALIVE with the GCS."""
        want = {str(n.temp_dir): n for n in self.nodes if not n.killed}
        while True:
            self._check_launchers()
            try:
                alive = self.alive_node_ids()
            except Exception:  # GCS still starting
                alive = {}
            by_dir = {d: nid for nid, d in alive.items()}
            if all(d in by_dir for d in want):
                for d, node in want.items():
                    node.node_id = by_dir[d]
                break
            if time.monotonic() > deadline:
                raise ClusterError(
                    f"nodes not registered in time: have {alive}\n{self.log_tails()}"
                )
            time.sleep(0.25)
        for node in self.nodes:
            self._refresh(node)

    def start(self, worker_nodes: int) -> None:
        t0 = time.monotonic()
        deadline = t0 + self.start_timeout_s
        self._launch(head=True)
        self._wait_port(deadline)
        # Workers are launched from this (the main) thread on purpose: the
        # launchers' PR_SET_PDEATHSIG fires when the thread that forked them ends.
        for _ in range(worker_nodes):
            self._launch(head=False)
        self.wait_for_nodes(deadline)
        self.timings["start_s"] = time.monotonic() - t0

    def add_node(self) -> Node:
        """Start one more worker node and wait until it is registered."""
        t0 = time.monotonic()
        node = self._launch(head=False)
        self.wait_for_nodes(t0 + self.start_timeout_s)
        self.timings[f"add_node_{node.index}_s"] = time.monotonic() - t0
        return node

    # ---- processes ------------------------------------------------------

    def _refresh(self, node: Node, stats: dict[int, ProcStat] | None = None) -> list[int]:
        """Record and return the node's live pids: its session plus descendants."""
        stats = stats if stats is not None else _all_stats()
        leader = node.leader
        members = {
            p
            for p, st in stats.items()
            if st.session == leader or (p in node.seen and node.seen[p] == st.starttime)
        }
        frontier = set(members)
        while frontier:  # follow parent links, in case a child left the session
            children = {p for p, st in stats.items() if st.ppid in frontier and p not in members}
            members |= children
            frontier = children
        for p in members:
            node.seen.setdefault(p, stats[p].starttime)
        return sorted(p for p in members if _alive(stats.get(p)))

    def node_pids(self, i: int) -> list[int]:
        """Live pids of node i (launcher, gcs_server, raylet, agents, workers...)."""
        return self._refresh(self.nodes[i])

    @property
    def pids(self) -> dict[int, list[int]]:
        """Live pids per node index."""
        stats = _all_stats()
        return {n.index: self._refresh(n, stats) for n in self.nodes}

    def all_pids(self) -> list[int]:
        return sorted({p for ps in self.pids.values() for p in ps})

    def describe(self) -> str:
        lines = []
        for n in self.nodes:
            for p in self.node_pids(n.index):
                lines.append(f"node {n.index} pid {p}: {cmdline(p)[:100]}")
        return "\n".join(lines)

    def worker_pids(self, i: int, include_idle: bool = False) -> list[int]:
        """Ray worker processes of node i (proctitle ray::<task>), by default the busy ones."""
        out = []
        for p in self.node_pids(i):
            title = cmdline(p)
            if not title.startswith("ray::") or title.startswith(AGENT_TITLES):
                continue
            if title.startswith("ray::IDLE") and not include_idle:
                continue
            out.append(p)
        return out

    def _kill_pids(self, node: Node, pids: Iterable[int]) -> list[int]:
        killed = []
        for p in pids:
            st = _read_stat(p)
            if not _alive(st) or node.seen.get(p) != st.starttime:
                continue  # gone, or a recycled pid that is not ours
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGKILL)
                killed.append(p)
        return killed

    def kill_node(self, i: int) -> list[int]:
        """SIGKILL every process of node i at once, like losing the machine. Returns the pids."""
        node = self.nodes[i]
        pids = self._refresh(node)
        node.killed = True
        # One signal for the whole session group first, so no process sees
        # its siblings die and starts a graceful shutdown.
        stats = _all_stats()
        if any(_alive(stats.get(p)) and stats[p].pgrp == node.leader for p in pids):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(node.leader, signal.SIGKILL)
        self._kill_pids(node, pids)
        self._wait_gone(node, timeout_s=10)
        return pids

    def kill_worker_processes(self, i: int, include_idle: bool = False) -> list[int]:
        """SIGKILL node i's Ray workers that run tasks (the node stays up). Returns the pids."""
        node = self.nodes[i]
        return self._kill_pids(node, self.worker_pids(i, include_idle=include_idle))

    def node_index(self, node_id: str) -> int:
        for n in self.nodes:
            if n.node_id == node_id:
                return n.index
        raise KeyError(node_id)

    def _wait_gone(self, node: Node, timeout_s: float) -> list[int]:
        deadline = time.monotonic() + timeout_s
        while True:
            left = self._refresh(node)
            if not left:
                with contextlib.suppress(ChildProcessError, subprocess.TimeoutExpired):
                    node.popen.wait(timeout=1)  # reap our direct child
                return []
            if time.monotonic() > deadline:
                return left
            self._kill_pids(node, left)
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.popen.wait(timeout=0.1)
            time.sleep(0.1)

    # ---- driver ---------------------------------------------------------

    @contextlib.contextmanager
    def driver(self, **init_kwargs) -> Iterator[object]:
        """``ray.init`` this process as a driver of the cluster; ``ray.shutdown`` on exit.

        Ray rewrites 127.0.0.1 unless ENABLE_RAY_CLUSTER is off in this
        process; the flag is switched off for the connection only.
        """
        import ray
        import ray._private.ray_constants as ray_constants

        if ray.is_initialized():
            raise ClusterError("ray is already initialized in this process")
        saved = ray_constants.ENABLE_RAY_CLUSTER
        ray_constants.ENABLE_RAY_CLUSTER = False
        try:
            kwargs = {"log_to_driver": True, "configure_logging": False}
            kwargs.update(init_kwargs)
            ctx = ray.init(address=self.address, _node_ip_address=LOOPBACK, **kwargs)
            self._driver_connected = True
            yield ctx
        finally:
            try:
                if ray.is_initialized():
                    ray.shutdown()
            finally:
                self._driver_connected = False
                ray_constants.ENABLE_RAY_CLUSTER = saved

    # ---- stopping -------------------------------------------------------

    def stop(self, timeout_s: float = 20) -> list[int]:
        """SIGKILL everything the cluster started; return the pids still alive (should be [])."""
        if self._driver_connected:
            import ray

            with contextlib.suppress(Exception):
                ray.shutdown()
            self._driver_connected = False
        t0 = time.monotonic()
        # Workers first, then the rest, so nothing restarts what was just killed.
        for node in reversed(self.nodes):
            node.killed = True
            pids = self._refresh(node)
            stats = _all_stats()
            if any(_alive(stats.get(p)) and stats[p].pgrp == node.leader for p in pids):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(node.leader, signal.SIGKILL)
            self._kill_pids(node, pids)
        left = []
        for node in self.nodes:
            left += self._wait_gone(node, timeout_s=max(1.0, timeout_s - (time.monotonic() - t0)))
        self.timings["stop_s"] = time.monotonic() - t0
        for fd in (self._watchdog_r, self._watchdog_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        return left

    def leftovers(self) -> list[int]:
        """Any process ever recorded for this cluster that is still alive (not a zombie)."""
        stats = _all_stats()
        out = []
        for node in self.nodes:
            for p, start in node.seen.items():
                st = stats.get(p)
                if _alive(st) and st.starttime == start:
                    out.append(p)
            out += [p for p, st in stats.items() if st.session == node.leader and _alive(st)]
        return sorted(set(out))

    def log_tails(self, lines: int = 15) -> str:
        out = []
        for n in self.nodes:
            with contextlib.suppress(OSError):
                tail = n.log_path.read_text(errors="replace").splitlines()[-lines:]
                out.append(f"--- node {n.index} ({n.log_path}) ---\n" + "\n".join(tail))
        return "\n".join(out)


def _short_base_dir(tmp_dir: Path) -> tuple[Path, bool]:
    """A cluster directory short enough for Ray's Unix socket paths.

    Returns (path, is_private_short_dir). When tmp_dir itself is too long, a
    /tmp/rtXXXXXX directory is made and linked from tmp_dir/ray-temp.
    """
    tmp_dir = Path(tmp_dir)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    if len(str(tmp_dir)) + len("/n00") <= MAX_TEMP_DIR_LEN:
        return tmp_dir, False
    short = Path(tempfile.mkdtemp(prefix="rt", dir=SHORT_TMP_ROOT))
    link = tmp_dir / "ray-temp"
    with contextlib.suppress(OSError):
        link.symlink_to(short, target_is_directory=True)
    return short, True


@contextlib.contextmanager
def loopback_cluster(
    tmp_dir: str | os.PathLike,
    nodes: int = 2,
    cpus_per_node: int = 1,
    *,
    object_store_bytes: int = 80 * 1024 * 1024,
    pythonpath: Iterable[str | os.PathLike] = (REPO_ROOT / "src", REPO_ROOT / "tests"),
    extra_env: dict[str, str] | None = None,
    fast_node_death: bool = True,
    start_timeout_s: float = 90,
    keep_logs_on_error: bool = True,
) -> Iterator[LoopbackCluster]:
    """Start a head node and ``nodes - 1`` worker nodes on 127.0.0.1; stop them all on exit.

    ``tmp_dir`` holds the nodes' temp dirs and logs (a short /tmp/rtXXXX
    directory, linked from tmp_dir/ray-temp, when tmp_dir is too long for
    Ray's socket paths). ``pythonpath`` is put in front of PYTHONPATH for
    every Ray process, so workers can import the project's ``mgrec`` package
    (and test modules, for functions pickled by reference).

    Raises ClusterError when a node does not come up, and AssertionError on
    exit when a process of the cluster survived being killed.
    """
    if nodes < 1:
        raise ValueError("nodes must be >= 1")
    base, private = _short_base_dir(Path(tmp_dir))
    home = base / "home"
    home.mkdir(exist_ok=True)
    # The head's dashboard process reads ~/ray_bootstrap_config.yaml and, when
    # it is missing, asks cloud metadata servers (169.254.169.254,
    # metadata.google.internal) which cloud it runs on. A stub stops that.
    (home / "ray_bootstrap_config.yaml").write_text(
        "# written by tests/ray_cluster.py: keeps Ray from probing cloud metadata servers\n"
        "provider: {type: local}\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS",)}
    env.update(LOOPBACK_ENV)
    if fast_node_death:
        env.update(FAST_NODE_DEATH_ENV)
    env["HOME"] = str(home)
    paths = [str(p) for p in pythonpath]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.update(extra_env or {})

    cluster = LoopbackCluster(base, cpus_per_node, object_store_bytes, env, start_timeout_s)
    failed = True
    try:
        cluster.start(worker_nodes=nodes - 1)
        yield cluster
        failed = False
    finally:
        left = cluster.stop()
        if failed and keep_logs_on_error:
            sys.stderr.write(f"ray_cluster: logs kept in {base}\n{cluster.log_tails()}\n")
        elif private:
            shutil.rmtree(base, ignore_errors=True)
        if left:
            raise AssertionError(
                f"processes of the loopback cluster survived SIGKILL: {left} "
                + "; ".join(f"{p}: {cmdline(p)[:80]}" for p in left)
            )


# --------------------------------------------------------------------------
# Launcher: `python tests/ray_cluster.py start ...` == `ray start ...` kept on 127.0.0.1
# --------------------------------------------------------------------------


def _die_with_parent() -> None:
    """Ask the kernel to SIGKILL this process when the test process that started it dies."""
    parent = os.environ.get("RAY_LOOPBACK_PARENT_PID")
    if not parent or not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != int(parent):  # parent already died before prctl
        os._exit(1)


def _start_watchdog() -> None:
    """Fork a process that SIGKILLs this node's session once the test process is gone.

    It blocks reading a pipe whose only write end the test process holds, so
    EOF means that process died without stopping the cluster (SIGKILL, a CI
    timeout's SIGTERM). Being in the session itself, it keeps the session id
    from being reused, so everything it finds with that id is ours.
    """
    fd = os.environ.pop("RAY_LOOPBACK_WATCHDOG_FD", None)
    if fd is None:
        return
    fd = int(fd)
    if os.fork() != 0:
        os.close(fd)  # Ray's processes must not hold the pipe
        return
    try:  # the watchdog: no pdeathsig (cleared by fork), no Ray imported
        while os.read(fd, 1):
            pass
    except OSError:
        pass
    me, session = os.getpid(), os.getsid(0)
    for _ in range(5):
        for name in os.listdir("/proc"):
            if name.isdigit() and int(name) != me:
                with contextlib.suppress(OSError):
                    if os.getsid(int(name)) == session:
                        os.kill(int(name), signal.SIGKILL)
        time.sleep(0.2)
    os._exit(0)


def _launcher_main(argv: list[str]) -> int:
    _die_with_parent()
    _start_watchdog()
    import ray._private.ray_constants as ray_constants
    import ray._private.services as services
    import ray.util

    # This process: allow worker nodes (`ray start --address`), which Ray
    # refuses when RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 ...
    ray_constants.ENABLE_RAY_CLUSTER = True

    # ... while keeping every "which IP am I" answer at 127.0.0.1 and the
    # addresses given on the command line unrewritten.
    def loopback_ip(address=None):
        return LOOPBACK

    services.get_node_ip_address = loopback_ip
    ray.util.get_node_ip_address = loopback_ip
    _orig_resolve = services.resolve_ip_for_localhost

    def resolve(host):
        return LOOPBACK if host in ("localhost", "127.0.0.1", "::1") else _orig_resolve(host)

    services.resolve_ip_for_localhost = resolve

    from ray.scripts.scripts import main as ray_main

    sys.argv = ["ray", *argv]
    return ray_main() or 0


if __name__ == "__main__":
    sys.exit(_launcher_main(sys.argv[1:]))


__all__ = [
    "LOOPBACK",
    "ClusterError",
    "LoopbackCluster",
    "SocketInfo",
    "cmdline",
    "free_loopback_port",
    "loopback_cluster",
    "non_loopback",
    "ray_available",
    "requires_ray",
    "sockets_of",
]
