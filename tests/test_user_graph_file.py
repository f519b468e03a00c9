"""Reading the reference's ``user_graph_dict.npy``: every part of its format loads with its values
and types; anything else is refused or rejected in one sentence saying what was found; the
checks of a cached graph name each fault.

Written against mutants of ``mgrec/data/user_graph.py`` that survived the suite (see
benchmarks/MUTATION.md). The pickles are written opcode by opcode, so each holds exactly the
global it is about."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from mgrec.data import user_graph
from mgrec.errors import UserError

MULTIARRAY = "numpy._core.multiarray"
REBUILD = "rebuild it with --build_user_graph --force"


@dataclass(frozen=True)
class Call:
    """``module.name(*args)`` inside a pickle."""

    module: str
    name: str
    args: tuple = ()


@dataclass(frozen=True)
class Global:
    """``module.name`` itself inside a pickle."""

    module: str
    name: str


def opcodes(value: object) -> bytes:
    """Protocol-3 opcodes that push ``value``, without the memo."""
    if isinstance(value, Call):
        return opcodes(Global(value.module, value.name)) + opcodes(value.args) + b"R"
    if isinstance(value, Global):
        return b"c" + f"{value.module}\n{value.name}\n".encode()
    if isinstance(value, bool):
        return b"\x88" if value else b"\x89"
    if isinstance(value, int):
        return b"J" + struct.pack("<i", value)
    if isinstance(value, float):
        return b"G" + struct.pack(">d", value)
    if isinstance(value, str):
        return b"X" + struct.pack("<I", len(value.encode())) + value.encode()
    if isinstance(value, bytes):
        return b"B" + struct.pack("<I", len(value)) + value
    if isinstance(value, list):
        return b"]" + b"".join(opcodes(v) + b"a" for v in value)
    if isinstance(value, tuple):
        return b"(" + b"".join(opcodes(v) for v in value) + b"t"
    assert isinstance(value, dict)
    return b"}" + b"".join(opcodes(k) + opcodes(v) + b"s" for k, v in value.items())


def npy(path: Path, payload: bytes, version: tuple[int, int] = (1, 0), descr: str = "|O") -> Path:
    """A ``.npy`` file with the given header version and dtype, then ``payload``."""
    header = {"descr": descr, "fortran_order": False, "shape": ()}
    with open(path, "wb") as handle:
        if version == (1, 0):
            np.lib.format.write_array_header_1_0(handle, header)
        elif version == (2, 0):
            np.lib.format.write_array_header_2_0(handle, header)
        else:  # a version NumPy does not write
            handle.write(np.lib.format.magic(*version) + b"\x10\x00" + b" " * 15 + b"\n")
        handle.write(payload)
    return path


def pickled(value: object) -> bytes:
    return b"\x80\x03" + opcodes(value) + b"."


# --- the format ---------------------------------------------------------------------------------


def test_numpy_arrays_and_scalars_of_each_kind_load_with_their_values(tmp_path):
    graph = {
        0: [np.array([1, 2], dtype=np.int32), np.array([2.5, 1.0], dtype=np.float32)],
        1: [[np.int64(0)], [np.float32(2.5)]],
        2: [[np.int16(0), 1], [np.float64(1.0), np.int32(3)]],
    }
    np.save(tmp_path / "g.npy", np.array(graph, dtype=object), allow_pickle=True)
    loaded = user_graph.load_reference(tmp_path / "g.npy", 3)
    assert loaded.neighbours.dtype == np.int64 and loaded.weights.dtype == np.float32
    assert loaded.neighbours.shape == loaded.weights.shape == (3, 2)  # the longest list
    assert user_graph.to_reference_dict(loaded) == {
        0: [[1, 2], [2.5, 1.0]],
        1: [[0], [2.5]],
        2: [[0, 1], [1.0, 3.0]],
    }


def test_a_bare_pickled_dict_a_version_2_header_and_a_scalar_without_data_load(tmp_path):
    zero = Call(MULTIARRAY, "scalar", (Call("numpy", "dtype", ("f4",)),))  # float32 0.0
    mapping = {0: [[1], [2.0]], 1: [[0], [zero]]}
    for version in ((1, 0), (2, 0)):
        path = npy(tmp_path / f"v{version[0]}.npy", pickled(mapping), version)
        loaded = user_graph.read_reference_pickle(path)  # a dict, not a 0-d array
        assert isinstance(loaded, dict) and loaded[0] == [[1], [2.0]] and loaded[1][1] == [0.0]


def test_a_graph_without_users_or_neighbours(tmp_path):
    np.save(tmp_path / "g.npy", np.array({}, dtype=object), allow_pickle=True)
    empty = user_graph.load_reference(tmp_path / "g.npy", 0)
    assert empty.neighbours.shape == empty.weights.shape == (0, 1)
    assert empty.lengths.shape == (0,)
    np.save(tmp_path / "h.npy", np.array({0: [[], []]}, dtype=object), allow_pickle=True)
    alone = user_graph.load_reference(tmp_path / "h.npy", 1)
    assert alone.neighbours.shape == alone.weights.shape == (1, 1)
    assert alone.lengths.tolist() == [0]


# --- refusals: what the pickle asked for, in the message ----------------------------------------


@pytest.mark.parametrize(
    ("payload", "asked"),
    [
        (np.array({0: [[1], np.array(["abc"])]}, dtype=object), "a NumPy dtype <U3"),
        # an array "of" another allowed global instead of ndarray
        (
            Call(MULTIARRAY, "_reconstruct", (Global("numpy", "dtype"), (0,), b"b")),
            "an array of class <function _numeric_dtype",
        ),
        (Call(MULTIARRAY, "scalar", ("x",)), "a NumPy scalar of 'x'"),
        (Call(MULTIARRAY, "scalar", (Call("numpy", "dtype", ("U2",)), b"ab")), "a NumPy dtype <U2"),
    ],
    ids=["string array", "array of another class", "scalar of a non-dtype", "string scalar"],
)
def test_a_refusal_names_what_the_pickle_asked_for(payload, asked, tmp_path):
    path = tmp_path / "g.npy"
    if isinstance(payload, np.ndarray):
        np.save(path, payload, allow_pickle=True)
    else:
        npy(path, pickled(payload))
    with pytest.raises(UserError) as caught:
        user_graph.load_reference(path, 1)
    message = str(caught.value)
    assert message.startswith(f"{path}: refused: the pickle asks for {asked}")
    assert message.endswith(
        ", which a user-graph file never holds (loading it could run code); delete the file "
        f"and let mgrec build the graph, or {REBUILD}"
    )


# --- files that are not the format ------------------------------------------------------------


def test_files_that_are_not_a_pickled_dict_say_what_they_are(tmp_path):
    cases = {
        "unknown header": (npy(tmp_path / "a.npy", pickled({}), (3, 0)), ".npy format version (3, 0)"),
        "numbers": (tmp_path / "b.npy", "an array of float64, not a pickled dict"),
        "truncated": (npy(tmp_path / "c.npy", pickled({0: [[1], [1.0]]})[:-6]), ""),
    }  # fmt: skip
    np.save(tmp_path / "b.npy", np.zeros(3))
    for case, (path, detail) in cases.items():
        with pytest.raises(UserError) as caught:
            user_graph.load_reference(path, 1)
        message = str(caught.value)
        assert message.startswith(
            f"{path}: cannot be read as the reference's pickled user-graph dict (truncated or "
            f"corrupt: {detail}"
        ), case
        assert message.endswith(f"); {REBUILD}"), case


# --- the dict's entries --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "entry",
    [{0: [1], 1: [1.0]}, ([1], [1.0], [9]), [[1, 2], [1.0]], "ab"],
    ids=["a dict", "three parts", "unequal lengths", "a string"],
)
def test_an_entry_that_is_not_two_equal_lists_is_rejected(entry):
    with pytest.raises(UserError) as caught:
        user_graph.from_reference_dict({0: entry, 1: [[0], [1.0]]}, 2, "g.npy")
    assert str(caught.value) == (
        "g.npy: the entry of user 0 is not [neighbour ids, weights] of equal length"
    )


@pytest.mark.parametrize("bad", [5, -1, 7])
def test_a_neighbour_outside_the_users_is_rejected(bad):
    mapping = {u: [[0], [1.0]] for u in range(5)}
    mapping[3] = [[1, bad], [1.0, 1.0]]
    with pytest.raises(UserError) as caught:
        user_graph.from_reference_dict(mapping, 5, "g.npy")
    assert str(caught.value) == "g.npy: user 3 has a neighbour id outside 0..4"


def test_a_missing_user_is_rejected_saying_how_to_rebuild():
    with pytest.raises(UserError) as caught:
        user_graph.from_reference_dict({0: [[1], [1.0]], 1: [[0], [1.0]]}, 4, "g.npy")
    assert str(caught.value) == (
        "g.npy: has no entry for user 2 (2 of 4 users missing); rebuild it for this dataset "
        "with --build_user_graph"
    )


# --- the check of a cached graph ----------------------------------------------------------------


def arrays(n_users: int = 3, width: int = 2) -> dict[str, np.ndarray]:
    return {
        "neighbours": np.ones((n_users, width), dtype=np.int64),
        "weights": np.ones((n_users, width), dtype=np.float32),
        "lengths": np.full(n_users, min(width, 1), dtype=np.int64),
    }


def test_a_sound_cached_graph_passes_at_any_size():
    assert user_graph.check_arrays(3)(arrays()) is None
    assert user_graph.check_arrays(0)(arrays(0)) is None  # no users
    assert user_graph.check_arrays(3)(arrays(width=0)) is None  # no neighbours anywhere
    top = arrays()
    top["neighbours"][:, 0] = 2  # the last user id is in range
    assert user_graph.check_arrays(3)(top) is None


def damaged(**changes) -> dict[str, np.ndarray]:
    found = arrays()
    for name, edit in changes.items():
        found[name] = edit(found[name])
    return found


@pytest.mark.parametrize(
    ("found", "fault"),
    [
        ({**arrays(), "extra": np.zeros(1)}, "arrays ['extra', 'lengths', 'neighbours', 'weights']"),
        (damaged(neighbours=lambda a: a[:, 0], weights=lambda a: a[:, 0]), "shapes (3,), (3,) for 3 users"),
        (damaged(neighbours=lambda a: a[:2], weights=lambda a: a[:2]), "shapes (2, 2), (2, 2) for 3 users"),
        (damaged(weights=lambda a: a[:, :1]), "shapes (3, 2), (3, 1) for 3 users"),
        (damaged(lengths=lambda a: a - 2), "lengths"),
        (damaged(lengths=lambda a: a[:2]), "lengths"),
        (damaged(lengths=lambda a: a + 2), "lengths beyond the table"),
        (damaged(neighbours=lambda a: a * 3), "neighbour ids out of range"),
        (damaged(neighbours=lambda a: a - 2), "neighbour ids out of range"),
        (damaged(weights=lambda a: a * np.inf), "non-finite weights"),
    ],
    ids=["keys", "1-d", "rows", "weights", "negative lengths", "lengths rows", "long lengths",
         "id = users", "negative id", "inf weights"],
)  # fmt: skip
def test_each_fault_of_a_cached_graph_is_named(found, fault):
    assert user_graph.check_arrays(3)(found) == fault


def test_a_pickle_of_the_format_round_trips_through_the_reference_writer(tmp_path):
    # What mgrec writes (save_reference) is what the restricted reader accepts, unchanged.
    graph = user_graph.UserGraph(
        np.array([[1, 2], [0, 0], [0, 1]]),
        np.array([[2.0, 1.0], [3.0, 0.0], [1.0, 1.0]], dtype=np.float32),
        np.array([2, 1, 2]),
    )
    user_graph.save_reference(tmp_path / "g.npy", graph)
    again = user_graph.load_reference(tmp_path / "g.npy", 3)
    assert user_graph.to_reference_dict(again) == user_graph.to_reference_dict(graph)
