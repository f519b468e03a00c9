"""A real multi-node Ray cluster on 127.0.0.1: placement, loopback-only sockets,
retries after losing a node or a worker, and cleanup by pid.

Each node is a separate `ray start --block` process tree (tests/ray_cluster.py).
The driver is this pytest process (`ray.init` in `cluster.driver()`, with
`ray.shutdown()` on the way out). Budget: about 40-50 s for the file on 2 cores.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="ray is not installed")

from ray_cluster import (  # noqa: E402
    LOOPBACK,
    SocketInfo,
    _hex_to_ip,
    cmdline,
    loopback_cluster,
    non_loopback,
    sockets_of,
)

pytestmark = [
    pytest.mark.slow,  # real Ray instances and clusters
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs /proc"),
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with loopback_cluster(tmp_path_factory.mktemp("ray"), nodes=2, cpus_per_node=1) as c:
        yield c
    # loopback_cluster raised already if anything survived; double-check by pid.
    assert c.leftovers() == []


@pytest.fixture
def driver(cluster):
    with cluster.driver() as ctx:
        yield ctx
    assert not ray.is_initialized()


# Remote functions live at module level: workers import this module by name
# (tests/ is on the PYTHONPATH that loopback_cluster gives every Ray process).


@ray.remote(num_cpus=1)
def where_am_i(sleep_s: float = 0.0) -> dict:
    import mgrec  # the project's own package must import on every worker

    time.sleep(sleep_s)
    ctx = ray.get_runtime_context()
    return {
        "node_id": ctx.get_node_id(),
        "pid": os.getpid(),
        "ip": ray.util.get_node_ip_address(),
        "mgrec": mgrec.__file__,
    }


@ray.remote(num_cpus=1)
def long_unless_retried(marker_dir: str, long_s: float = 120.0) -> dict:
    """First attempt: note where it runs, then run long. Later attempts: return at once."""
    ctx = ray.get_runtime_context()
    marker = Path(marker_dir)
    attempt = len(list(marker.glob("attempt-*.json")))
    info = {"node_id": ctx.get_node_id(), "pid": os.getpid(), "attempt": attempt}
    (marker / f"attempt-{attempt}-{os.getpid()}.json").write_text(json.dumps(info))
    if attempt == 0:
        time.sleep(long_s)
    return info


def _wait_for_attempts(marker: Path, n: int, timeout_s: float = 30) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        files = sorted(marker.glob("attempt-*.json"))
        if len(files) >= n:
            with_text = [f.read_text() for f in files]
            if all(with_text):
                return [json.loads(t) for t in with_text]
        time.sleep(0.1)
    raise AssertionError(f"no {n} attempt(s) in {marker} after {timeout_s} s")


def test_socket_check_sees_real_sockets_and_flags_non_loopback_ones():
    # The checker itself: a live 127.0.0.1 listener of this process is found ...
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        s.listen(1)
        port = s.getsockname()[1]
        mine = [x for x in sockets_of([os.getpid()]) if x.local == f"{LOOPBACK}:{port}"]
    assert len(mine) == 1 and mine[0].state == "LISTEN" and mine[0].loopback_only
    # ... /proc/net's hex words decode as expected ...
    assert _hex_to_ip("0100007F") == "127.0.0.1"
    assert _hex_to_ip("0000000000000000FFFF00000100007F") == "::ffff:127.0.0.1"
    # ... and wildcard or outside addresses are flagged (synthetic: nothing is bound).
    bad = [
        SocketInfo(1, "x", "tcp6", "::ffff:0.0.0.0:80", "::ffff:0.0.0.0:0", "LISTEN"),
        SocketInfo(1, "x", "tcp6", ":::6379", ":::0", "LISTEN"),
        SocketInfo(1, "x", "tcp", "0.0.0.0:6379", "0.0.0.0:0", "LISTEN"),
        SocketInfo(1, "x", "tcp", "192.0.2.2:40000", "192.0.2.2:6379", "ESTABLISHED"),
        SocketInfo(1, "x", "tcp", "127.0.0.1:40000", "169.254.169.254:80", "SYN_SENT"),
        SocketInfo(1, "x", "udp", "0.0.0.0:5353", "0.0.0.0:0", "07"),
        SocketInfo(1, "x", "other"),
    ]
    good = [
        SocketInfo(1, "x", "tcp6", "::ffff:127.0.0.1:6379", ":::0", "LISTEN"),
        SocketInfo(1, "x", "tcp6", "::1:6379", "::1:40000", "ESTABLISHED"),
        SocketInfo(1, "x", "unix"),
    ]
    assert non_loopback(bad + good) == bad


def test_tasks_run_on_both_nodes_and_all_sockets_are_loopback(cluster, driver):
    head, worker = cluster.nodes[0], cluster.nodes[1]
    nodes = {n["NodeID"]: n for n in ray.nodes() if n["Alive"]}
    assert {head.node_id, worker.node_id} <= set(nodes)
    assert {n["NodeManagerAddress"] for n in nodes.values()} == {LOOPBACK}
    assert ray.get_runtime_context().get_node_id() == head.node_id  # the driver's raylet

    refs = [where_am_i.options(scheduling_strategy="SPREAD").remote(2.0) for _ in range(4)]
    time.sleep(1.0)  # tasks are running now: every connection of a live cluster is open
    pids = cluster.all_pids() + [os.getpid()]
    socks = sockets_of(pids)
    results = ray.get(refs, timeout=60)

    assert {r["node_id"] for r in results} == {head.node_id, worker.node_id}
    assert {r["ip"] for r in results} == {LOOPBACK}
    src = str(Path(__file__).resolve().parent.parent / "src")
    assert all(r["mgrec"].startswith(src) for r in results)

    inet = [s for s in socks if s.proto.startswith(("tcp", "udp", "raw"))]
    listening = [s for s in inet if s.state == "LISTEN"]
    assert len(listening) >= 6, "\n".join(map(str, socks))  # gcs, 2 raylets x2, workers...
    assert any(s.pid == os.getpid() for s in inet), "the driver's own sockets were not seen"
    bad = non_loopback(socks)
    assert not bad, "non-loopback sockets:\n" + "\n".join(map(str, bad))


def test_task_is_retried_on_another_node_after_losing_its_node(cluster, driver, tmp_path):
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    victim = cluster.add_node()  # a third node, so the others stay for later tests
    survivors = {n.node_id for n in cluster.nodes if not n.killed and n is not victim}
    marker = tmp_path / "attempts"
    marker.mkdir()

    ref = long_unless_retried.options(
        max_retries=2,
        # soft: go elsewhere once the node is gone
        scheduling_strategy=NodeAffinitySchedulingStrategy(victim.node_id, soft=True),
    ).remote(str(marker))
    (first,) = _wait_for_attempts(marker, 1)
    assert first["node_id"] == victim.node_id
    assert first["pid"] in cluster.node_pids(victim.index)

    t0 = time.monotonic()
    killed = cluster.kill_node(victim.index)
    assert first["pid"] in killed
    assert cluster.node_pids(victim.index) == []

    result = ray.get(ref, timeout=90)
    retry_s = time.monotonic() - t0
    assert result["attempt"] == 1
    assert result["node_id"] in survivors
    deadline = time.monotonic() + 20
    while victim.node_id in cluster.alive_node_ids() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert victim.node_id not in cluster.alive_node_ids(), "GCS still thinks the node is alive"
    added_s = cluster.timings[f"add_node_{victim.index}_s"]
    print(
        f"node {victim.index} added in {added_s:.1f} s, killed: "
        f"task retried on {result['node_id'][:8]} in {retry_s:.1f} s"
    )


def test_killing_a_worker_process_retries_the_task_and_keeps_the_node(cluster, driver, tmp_path):
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node = cluster.nodes[1]
    marker = tmp_path / "attempts"
    marker.mkdir()
    ref = long_unless_retried.options(
        max_retries=1,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node.node_id, soft=False),
    ).remote(str(marker))
    (first,) = _wait_for_attempts(marker, 1)

    # The titles before the kill: afterwards a killed pid may already be reused by the
    # worker Ray starts for the retry (its title is not yet ray::...).
    titles = {p: cmdline(p) for p in cluster.worker_pids(node.index)}
    killed = cluster.kill_worker_processes(node.index)
    assert first["pid"] in killed
    assert set(killed) <= set(titles) and all(titles[p].startswith("ray::") for p in killed)

    result = ray.get(ref, timeout=60)
    assert result["attempt"] == 1 and result["node_id"] == node.node_id
    assert result["pid"] != first["pid"]
    assert node.node_id in cluster.alive_node_ids()  # the node itself survived


def test_every_process_is_gone_after_teardown_even_on_error(tmp_path):
    if ray.is_initialized():  # pragma: no cover - another test leaked a driver
        pytest.fail("ray is still initialized from an earlier test")
    seen: dict[int, str] = {}
    with pytest.raises(RuntimeError, match="boom"):  # noqa: SIM117
        with loopback_cluster(tmp_path, nodes=2, keep_logs_on_error=False) as c:
            with c.driver():
                ray.get(where_am_i.remote(0.0), timeout=60)
                for node_pids in c.pids.values():
                    for p in node_pids:
                        seen[p] = cmdline(p)
            base = c.base_dir
            raise RuntimeError("boom")
    assert not ray.is_initialized()
    kinds = " ".join(seen.values())
    for name in ("gcs_server", "raylet", "ray::DashboardAgent", "ray::RuntimeEnvAgent", "ray::"):
        assert name in kinds, f"{name} not among the started processes: {seen}"
    assert len({p for p in seen}) >= 10
    assert c.leftovers() == []
    still = {p: cmdline(p) for p in seen if cmdline(p) == seen[p] and seen[p]}
    assert still == {}, f"survivors: {still}"
    # Nothing on the machine still uses this cluster's directory.
    users = [int(p) for p in os.listdir("/proc") if p.isdigit() and str(base) in cmdline(int(p))]
    assert users == [], {p: cmdline(p) for p in users}
