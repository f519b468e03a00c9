"""The documentation stays navigable: every relative link and file reference in the repository's
markdown resolves, every ``#anchor`` names a heading that exists, and the model tables list
exactly the models the registry knows.

What counts as a file reference (besides links and images): a path in an inline code span, or
in a shell code block, that starts with ``./``, ``../``, or a folder of the repository
(``src/``, ``tests/``, ``scripts/``, ``benchmarks/``, ``docs/``, ``images/``), or with
``mgrec/`` (the package under ``src/``), and holds no placeholder (``<name>``, ``*``, ``NNN``,
``...``). Such a path resolves from the repository root or from the markdown file's folder.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIPPED_DIRS = {".venv", "results", "data", "cache", "checkpoints", "build", ".git", "node_modules"}
MODELS_START, MODELS_END = "<!-- models:start -->", "<!-- models:end -->"


def markdown_files() -> list[Path]:
    """README.md, CHANGELOG.md, docs/**/*.md, benchmarks/*.md and tests/fixtures/**/README.md."""
    found = [ROOT / "README.md", ROOT / "CHANGELOG.md"]
    found += sorted((ROOT / "docs").rglob("*.md"))
    found += sorted((ROOT / "benchmarks").glob("*.md"))
    found += sorted((ROOT / "tests" / "fixtures").rglob("README.md"))
    return [
        p
        for p in found
        if p.is_file() and not SKIPPED_DIRS.intersection(p.relative_to(ROOT).parts[:-1])
    ]


# --- reading markdown ----------------------------------------------------------------------------

FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})\s*([\w+-]*)")
SHELL_LANGUAGES = {"sh", "bash", "shell", "zsh"}


def split_blocks(text: str) -> Iterator[tuple[int, str, str | None]]:
    """(line number, line, language) for every line; language is None outside fenced code and
    the fence's info string ("" when it has none) inside it. Fence lines themselves are skipped."""
    fence: str | None = None
    language = ""
    for number, line in enumerate(text.splitlines(), 1):
        match = FENCE.match(line)
        if fence is None and match:
            fence, language = match.group(1), match.group(2).lower()
            continue
        stripped = line.strip()
        if fence is not None and stripped.startswith(fence) and not stripped.strip(fence[0]):
            fence = None  # a closing fence: the same character, at least as long
            continue
        yield number, line, None if fence is None else language


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text lower-cased, punctuation other than
    ``-`` and ``_`` removed, spaces turned into hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links and images: their text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.replace("`", "").replace("*", "")
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    """The heading anchors of a markdown file (duplicates numbered as GitHub does: -1, -2)."""
    seen: dict[str, int] = {}
    found = set()
    for _, line, language in split_blocks(path.read_text(encoding="utf-8")):
        match = re.match(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$", line)
        if language is not None or not match:
            continue
        slug = github_slug(match.group(1))
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        found.add(slug if count == 0 else f"{slug}-{count}")
    found.update(re.findall(r'<a\s+(?:name|id)="([^"]+)"', path.read_text(encoding="utf-8")))
    return frozenset(found)


LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEFINITION = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)")
HTML_TARGET = re.compile(r"<(?:a|img)\s[^>]*?(?:href|src)=\"([^\"]+)\"")
CODE_SPAN = re.compile(r"(`+)(.+?)\1")
PATH_START = re.compile(r"^(?:\./|\.\./|(?:src|tests|scripts|benchmarks|docs|images|mgrec)/)")
PLACEHOLDER = re.compile(r"[<>*{}\[\]$|…]|NNN|\.\.\.|XXX")


def links(text: str) -> Iterator[tuple[int, str]]:
    """(line, target) of every link, image, reference definition and HTML href/src outside code."""
    for number, line, language in split_blocks(text):
        if language is not None:
            continue
        prose = CODE_SPAN.sub("", line)
        for pattern in (LINK, HTML_TARGET):
            for match in pattern.finditer(prose):
                yield number, match.group(1)
        definition = REFERENCE_DEFINITION.match(prose)
        if definition:
            yield number, definition.group(1)


def file_references(text: str) -> Iterator[tuple[int, str]]:
    """(line, path) of every repository path named in inline code or a shell code block."""
    for number, line, language in split_blocks(text):
        if language is None:
            chunks = [m.group(2) for m in CODE_SPAN.finditer(line)]
        elif language in SHELL_LANGUAGES:
            chunks = [line.split("#", 1)[0]]  # a shell comment is prose
        else:
            continue
        for chunk in chunks:
            for token in re.split(r"[\s=,;()\"']+", chunk):
                token = token.rstrip(".:")
                if PATH_START.match(token) and not PLACEHOLDER.search(token):
                    yield number, token


def is_external(target: str) -> bool:
    return bool(re.match(r"^[a-zA-Z][\w+.-]*:", target)) or target.startswith("//")


def resolve(source: Path, target: str) -> Path | None:
    """The file or folder ``target`` names, from ``source``'s folder (links) or the repository
    root; None when neither exists."""
    candidates = [source.parent / target]
    if not target.startswith(("./", "../")):
        candidates.append(ROOT / target)
        if target.startswith("mgrec/"):
            candidates.append(ROOT / "src" / target)
    for candidate in candidates:
        if candidate.exists():
            return candidate
    return None


def broken_links(path: Path) -> list[str]:
    """Every link and file reference of ``path`` that does not resolve, as 'file:line: target'."""
    text = path.read_text(encoding="utf-8")
    where = path.relative_to(ROOT)
    problems = []
    for number, target in links(text):
        if is_external(target):
            continue
        file_part, _, anchor = target.partition("#")
        resolved = path if not file_part else (path.parent / file_part)
        if not resolved.exists():
            problems.append(f"{where}:{number}: link to a missing file: {target}")
            continue
        if anchor and resolved.suffix == ".md" and anchor not in anchors(resolved.resolve()):
            problems.append(f"{where}:{number}: no heading #{anchor} in {file_part or where}")
    for number, reference in file_references(text):
        if resolve(path, reference) is None:
            problems.append(f"{where}:{number}: names a missing file: {reference}")
    return problems


# --- the checker itself ---------------------------------------------------------------------------


def test_the_checker_finds_broken_links_and_anchors(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    (tmp_path / "other.md").write_text("# Other page\n\n## A `code` heading: yes!\n")
    doc.write_text(
        "# Title\n\n"
        "[ok](other.md) [ok](other.md#a-code-heading-yes) [ok](#title) [web](https://x.org/a)\n"
        "[gone](missing.md) [bad anchor](other.md#nope) ![img](nope.png)\n"
        "```sh\npython scripts/nothing_here.py   # scripts/also_missing.py is a comment\n```\n"
        "```text\nscripts/output_only.py\n```\n"
        "`tests/test_docs.py` `src/mgrec/models/<module>.py` `../nowhere/MODELS.md`\n"
    )
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        problems = broken_links(doc)
    finally:
        ROOT = saved
    assert [p.split(": ", 1)[1] for p in problems] == [
        "link to a missing file: missing.md",
        "no heading #nope in other.md",
        "link to a missing file: nope.png",
        "names a missing file: scripts/nothing_here.py",
        "names a missing file: tests/test_docs.py",  # not under tmp_path
        "names a missing file: ../nowhere/MODELS.md",
    ]


@pytest.mark.parametrize(
    ("heading", "slug"),
    [
        ("Evaluation protocol: validation vs test selection", "evaluation-protocol-validation-vs-test-selection"),
        ('What "faithful" means here, and where mgrec differs', "what-faithful-means-here-and-where-mgrec-differs"),
        ("2.13 The reference's compatibility problems [C]", "213-the-references-compatibility-problems-c"),
        ("Checkpoints and `--resume`", "checkpoints-and---resume"),
        ("The paper's table: `mgrec table`", "the-papers-table-mgrec-table"),
        ("Two readings of MG (`mg_mode`)", "two-readings-of-mg-mg_mode"),
    ],
)  # fmt: skip
def test_github_slugs(heading: str, slug: str) -> None:
    assert github_slug(heading) == slug


# --- the repository's markdown --------------------------------------------------------------------


def test_the_expected_markdown_files_are_checked() -> None:
    names = {str(p.relative_to(ROOT)) for p in markdown_files()}
    assert {"README.md", "CHANGELOG.md", "docs/CONTRIBUTING.md"} <= names
    assert "tests/fixtures/golden/README.md" in names


@pytest.mark.parametrize(
    "path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)).replace("/", "_")
)
def test_links_and_file_references_resolve(path: Path) -> None:
    assert broken_links(path) == []


# --- model tables ---------------------------------------------------------------------------------


@cache
def load_generator() -> ModuleType:
    """``scripts/model_table.py`` as a module (scripts/ is not a package)."""
    path = ROOT / "scripts" / "model_table.py"
    spec = importlib.util.spec_from_file_location("model_table", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def builtin_names() -> set[str]:
    from mgrec.models.registry import builtin

    return set(builtin())


def first_column(table: str) -> list[str]:
    """The first cell of every body row of a markdown table."""
    rows = [line for line in table.splitlines() if line.startswith("|")]
    return [row.strip("|").split("|")[0].strip().strip("*`") for row in rows[2:]]


def table_after(path: Path, heading: str) -> str:
    """The first markdown table after the heading whose anchor is ``heading``."""
    lines = path.read_text(encoding="utf-8").splitlines()
    start = next(
        i
        for i, line in enumerate(lines)
        if line.startswith("#") and github_slug(line.lstrip("#")) == heading
    )
    table: list[str] = []
    for line in lines[start + 1 :]:
        if line.startswith("|"):
            table.append(line)
        elif table or line.startswith("#"):
            break
    return "\n".join(table)


def test_readme_model_table_is_the_generated_one() -> None:
    """Refresh with ``python scripts/model_table.py --write``."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme.count(MODELS_START) == 1 and readme.count(MODELS_END) == 1
    block = readme.split(MODELS_START)[1].split(MODELS_END)[0].strip()
    generator = load_generator()
    assert block == generator.table().strip(), "run: python scripts/model_table.py --write"
    assert set(first_column(block)) == builtin_names()


def test_models_md_quick_reference_lists_every_builtin_model() -> None:
    table = table_after(ROOT / "docs" / "MODELS.md", "4-quick-reference")
    assert sorted(first_column(table)) == sorted(builtin_names())


def test_faithfulness_quirk_table_names_only_registered_models() -> None:
    table = table_after(ROOT / "docs" / "faithfulness.md", "quirks-reproduced-model-by-model")
    named = first_column(table)
    assert named and set(named) <= builtin_names()


def test_generator_write_replaces_only_the_block(tmp_path: Path) -> None:
    generator = load_generator()
    page = tmp_path / "README.md"
    page.write_text(f"before\n{MODELS_START}\nold\n{MODELS_END}\nafter\n")
    assert generator.write(page) is True
    text = page.read_text()
    assert text.startswith(f"before\n{MODELS_START}\n| model |")
    assert text.endswith(f"{MODELS_END}\nafter\n") and "old" not in text
    assert generator.write(page) is False  # already current
