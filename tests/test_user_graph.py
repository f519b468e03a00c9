"""The user-user graph: its definition, the reference's file format, per-epoch sampling."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pytest

from conftest import GOLDEN_DATA
from mgrec.cli import main
from mgrec.data import user_graph
from mgrec.data.cache import Cache
from mgrec.data.dataset import Split
from mgrec.errors import UserError

# users 0:{a,b,c} (a twice), 1:{a,b}, 2:{b,c}, 3:{c}, 4:{d}; items a,b,c,d = 0,1,2,3
USERS = np.array([0, 0, 0, 0, 1, 1, 2, 2, 3, 4])
ITEMS = np.array([0, 0, 1, 2, 0, 1, 1, 2, 2, 3])


def test_hand_checked_case_with_ties():
    graph = user_graph.to_reference_dict(user_graph.build(USERS, ITEMS, 5))
    assert graph == {
        0: [[1, 2, 3], [2.0, 2.0, 1.0]],  # 1 and 2 tie at 2 shared items: the lower id first
        1: [[0, 2], [2.0, 1.0]],
        2: [[0, 1, 3], [2.0, 1.0, 1.0]],
        3: [[0, 2], [1.0, 1.0]],
        4: [[], []],
    }
    top2 = user_graph.to_reference_dict(user_graph.build(USERS, ITEMS, 5, top=2))
    assert top2[0] == [[1, 2], [2.0, 2.0]] and top2[2] == [[0, 1], [2.0, 1.0]]


def brute_force(users, items, n_users, top):
    sets = [set(items[users == u].tolist()) for u in range(n_users)]
    result = {}
    for u in range(n_users):
        counts = [
            (-len(sets[u] & sets[v]), v) for v in range(n_users) if v != u and sets[u] & sets[v]
        ]
        best = sorted(counts)[:top]
        result[u] = [[v for _, v in best], [float(-c) for c, _ in best]]
    return result


@pytest.mark.parametrize("budget", [1, 50, 2e7])
def test_matches_the_dense_definition_in_any_chunking(budget):
    rng = np.random.default_rng(4)
    users, items = rng.integers(0, 60, 500), rng.integers(0, 25, 500)  # many ties
    built = user_graph.build(users, items, 62, top=7, budget=budget, progress=False)
    assert user_graph.to_reference_dict(built) == brute_force(users, items, 62, 7)


def test_reproduces_the_golden_file_byte_for_byte(tmp_path, capsys):
    shutil.copytree(GOLDEN_DATA / "golden11", tmp_path / "golden11")
    (tmp_path / "golden11" / "user_graph_dict.npy").unlink()
    assert main(["--dataset", "golden11", f"--data_path={tmp_path}", "--build_user_graph"]) == 0
    written = tmp_path / "golden11" / "user_graph_dict.npy"
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(written)
    golden = (GOLDEN_DATA / "golden11" / "user_graph_dict.npy").read_bytes()
    assert hashlib.sha1(written.read_bytes()).digest() == hashlib.sha1(golden).digest()


def test_reference_format_round_trip(tmp_path):
    graph = user_graph.build(USERS, ITEMS, 5)
    user_graph.save_reference(tmp_path / "g.npy", graph)
    loaded = user_graph.load_reference(tmp_path / "g.npy", 5)
    assert user_graph.to_reference_dict(loaded) == user_graph.to_reference_dict(graph)
    stored = np.load(tmp_path / "g.npy", allow_pickle=True).item()
    assert isinstance(stored[0][0], list) and isinstance(stored[0][1][0], float)


def test_a_file_for_other_users_is_refused(tmp_path):
    user_graph.save_reference(tmp_path / "g.npy", user_graph.build(USERS, ITEMS, 5))
    with pytest.raises(UserError, match="no entry for user 5"):
        user_graph.load_reference(tmp_path / "g.npy", 8)


def test_sampling_full_padded_and_empty_users():
    graph = user_graph.UserGraph(
        neighbours=np.array([[5, 6, 7, 8], [3, 4, 0, 0], [0, 0, 0, 0]]),
        weights=np.array([[4, 3, 2, 1], [2, 1, 0, 0], [0, 0, 0, 0]], dtype=np.float32),
        lengths=np.array([4, 2, 0]),
    )
    ids, weights = user_graph.sample_neighbours(graph, 3, np.random.RandomState(0))
    assert ids[0].tolist() == [5, 6, 7]
    assert np.allclose(weights[0], np.exp([4, 3, 2]) / np.exp([4, 3, 2]).sum())
    assert ids[1, :2].tolist() == [3, 4] and ids[1, 2] in (3, 4)  # padded from its own list
    raw = np.where(ids[1] == 3, 2.0, 1.0)
    assert np.allclose(weights[1], np.exp(raw) / np.exp(raw).sum())  # duplicates count twice
    assert ids[2].tolist() == [0, 0, 0] and weights[2].tolist() == [0, 0, 0]
    draws = {
        tuple(user_graph.sample_neighbours(graph, 8, np.random.RandomState(s))[0][1])
        for s in range(20)
    }
    assert len(draws) > 1  # redrawn every epoch


def test_padding_draws_from_the_growing_list():
    # With one neighbour, every pad repeats it; with two, a later pad may copy an earlier pad.
    graph = user_graph.UserGraph(
        np.array([[9, 0]]), np.array([[1.0, 0]], dtype=np.float32), np.array([1])
    )
    ids, weights = user_graph.sample_neighbours(graph, 5, np.random.RandomState(1))
    assert ids[0].tolist() == [9] * 5 and np.allclose(weights[0], 0.2)


def test_dataset_without_file_builds_into_the_cache(tmp_path):
    folder = tmp_path / "d"
    folder.mkdir()

    class Data:
        path, n_users = folder, 5
        train = Split(USERS, ITEMS)

    graph, where = user_graph.for_dataset(
        Data, "user_graph_dict.npy", Cache(tmp_path / "cache"), progress=False
    )
    assert "built from the training split" in where and not list(folder.iterdir())
    assert len(list((tmp_path / "cache").glob("user-graph-*.npz"))) == 1
    again, _ = user_graph.for_dataset(
        Data, "user_graph_dict.npy", Cache(tmp_path / "cache"), progress=False
    )
    assert user_graph.to_reference_dict(again) == user_graph.to_reference_dict(graph)
