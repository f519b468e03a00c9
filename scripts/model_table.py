"""The README's model table, generated from the model registry (``mgrec.models.registry``).

    python scripts/model_table.py            # print the table
    python scripts/model_table.py --write    # refresh README.md between its markers
    python scripts/model_table.py --check    # exit 1 when README.md's table is out of date

One row per built-in model, in the registry's order (the paper's order, then the others by
name): its name, its module, the features and graphs it reads, its row in the paper's tables and
whether it trains. The README holds the table between ``<!-- models:start -->`` and
``<!-- models:end -->``; ``tests/test_docs.py`` fails when the two differ. Reading a model's
attributes imports its class, hence torch.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # this checkout's mgrec, installed or not

from mgrec.models import registry  # noqa: E402

README = ROOT / "README.md"
START, END = "<!-- models:start -->", "<!-- models:end -->"
FEATURES = {"any": "image and/or text", "both": "image and text", "none": "none"}


def rows() -> list[list[str]]:
    """The table's cells, one list per built-in model."""
    found = []
    for entry in registry.builtin().values():
        cls = registry.load(entry.name)
        module = entry.target.partition(":")[0].rsplit(".", 1)[-1]
        graphs = [
            label
            for needed, label in (
                (cls.needs_user_graph, "user-user"),
                (cls.needs_item_graph, "kNN item"),
            )
            if needed
        ]
        found.append(
            [
                entry.name,
                f"[`{module}.py`](src/mgrec/models/{module}.py)",
                FEATURES.get(cls.modalities, cls.modalities),
                ", ".join(graphs) or "-",
                str(entry.paper_order) if entry.paper_order is not None else "-",
                "yes" if cls.trainable else "no (evaluated once)",
            ]
        )
    return found


def table() -> str:
    """The markdown table (ends with a newline)."""
    header = ["model", "module", "features", "graphs it reads", "paper's order", "trains"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cells) + " |" for cells in rows()]
    return "\n".join(lines) + "\n"


def replaced(text: str) -> str:
    """``text`` with the block between the markers replaced by the current table."""
    if text.count(START) != 1 or text.count(END) != 1:
        raise SystemExit(f"expected one {START} and one {END} marker")
    before, rest = text.split(START)
    _, after = rest.split(END)
    return f"{before}{START}\n{table()}{END}{after}"


def write(path: Path = README) -> bool:
    """Refresh the table in ``path``; whether the file changed."""
    text = path.read_text(encoding="utf-8")
    new = replaced(text)
    if new == text:
        return False
    path.write_text(new, encoding="utf-8")
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--write", action="store_true", help="refresh README.md's table")
    action.add_argument("--check", action="store_true", help="exit 1 if README.md is stale")
    args = parser.parse_args(argv)
    if args.write:
        print(f"{README.name}: {'updated' if write() else 'already current'}")
    elif args.check:
        current = README.read_text(encoding="utf-8")
        if replaced(current) != current:
            print("README.md's model table is out of date: python scripts/model_table.py --write")
            return 1
    else:
        sys.stdout.write(table())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
