"""Whether a recorded result stands for a combination today (``runs.grid.status``, the one place
that decides), state by state with its reason; and which source files a model's code identity
hashes.

Written against mutants of ``mgrec/runs/grid.py`` and ``mgrec/provenance.py`` that survived the
suite (see benchmarks/MUTATION.md)."""

from __future__ import annotations

import pytest

from mgrec import provenance
from mgrec.models import registry
from mgrec.paths import PACKAGE_DIR
from mgrec.runs.grid import FINISHED, status

CONFIG = {
    "model": "VBPR",
    "inter_file_name": "tiny.inter",
    "vision_feature_file": "image_feat.npy",
    "text_feature_file": "text_feat.npy",
    "user_graph_dict_file": "user_graph_dict.npy",
}
INPUTS = {"inter": "a1", "v": "b2", "t": "c3"}


@pytest.fixture
def code(monkeypatch):
    """Today's code identity, fixed for the test."""
    monkeypatch.setattr("mgrec.runs.grid.code_fingerprint", lambda model: "1.0+today")
    return "1.0+today"


def row(**fields) -> dict:
    return {"key": "k", "inputs": dict(INPUTS), **fields}


def test_nothing_recorded_is_to_train(code):
    assert status(None, CONFIG, INPUTS) == ("to train", None)


def test_a_row_of_todays_code_and_data_is_finished(code):
    assert status(row(code=code), CONFIG, INPUTS) == (FINISHED, None)
    assert FINISHED == "finished"
    # data not known yet (the embedded dataset before first use): the code decides
    assert status(row(code=code), CONFIG, None) == (FINISHED, None)


def test_other_code_or_none_recorded_is_to_retrain(code):
    assert status(row(code="0.9+older"), CONFIG, INPUTS) == (
        "to retrain (other code)",
        "it was trained by other code (0.9+older, now 1.0+today)",
    )
    assert status(row(), CONFIG, INPUTS) == (
        "to retrain (other code)",
        "it was trained by other code (an older mgrec, now 1.0+today)",
    )


@pytest.mark.parametrize(
    ("today", "named"),
    [
        ({**INPUTS, "v": "changed"}, "image_feat.npy"),  # a file changed
        ({"inter": "a1", "t": "c3"}, "image_feat.npy"),  # a file recorded but gone today
        ({**INPUTS, "user_graph": "d4"}, "user_graph_dict.npy"),  # a file new today
        ({**INPUTS, "extra": "e5"}, "extra"),  # an input without a file setting: its key
        ({"inter": "x", "v": "y", "t": "c3"}, "tiny.inter, image_feat.npy"),  # two, in order
    ],
)
def test_changed_data_is_to_retrain_naming_the_files(today, named, code):
    assert status(row(code=code), CONFIG, today) == (
        "to retrain (data changed)",
        f"its data changed since it was trained ({named})",
    )


def test_a_models_identity_hashes_the_shared_code_and_its_own_files():
    files = provenance.result_files("VBPR")
    own = registry.source_files("VBPR")
    assert PACKAGE_DIR / "models" / "vbpr.py" in own and set(own) <= set(files)
    assert PACKAGE_DIR / "trainer.py" in files
    assert len(files) == len(set(files))  # the shared files once, not again as its own
