"""The one list of models: every model name mgrec knows comes from here.

Three kinds of model, found in this order:

- **built-in**: a class in ``mgrec/models/<module>.py`` whose body declares ``name = "..."``
  (abstract bases such as ``EdgePruning`` declare none). The class bodies are read as source
  text, without importing torch, so listing the models and answering a mistyped name is fast;
  the class is imported when it is used. Its default settings are ``configs/model/<name>.yaml``.
- **plugin**: an installed distribution's entry point in the group ``mgrec.models``
  (``TinyMF = tiny_pkg.model:TinyMF``) makes ``--model TinyMF`` work.
- **import path**: ``--model some.module:SomeClass`` imports the module (from ``PYTHONPATH`` or
  an installed package) and takes the class.

Every model is a subclass of ``mgrec.models.Recommender``. A model is always named by the same
string (the built-in's name, the entry point's name, or the import path): configs, results and
Ray workers carry that string and import the class from it, never a pickled class.

Nothing here imports torch at module level.
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.metadata
import inspect
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mgrec.errors import UserError, closest
from mgrec.paths import CONFIG_DIR, PACKAGE_DIR

if TYPE_CHECKING:
    from mgrec.models.base import Recommender

ENTRY_POINT_GROUP = "mgrec.models"
MODELS_DIR = PACKAGE_DIR / "models"
IMPORT_PATH = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


@dataclass(frozen=True)
class ModelEntry:
    """Where a model comes from, and what its class body declares, known without importing it.

    Attributes:
        name: what ``--model`` takes and what configs and results record.
        target: ``module:Class`` to import.
        kind: "built-in", "plugin" or "import path".
        paper_order: the position in the paper's tables (built-ins only), else None.
        trainable: whether it has parameters to train; None when not known without importing
            (models from outside).
        modalities: the features it needs ("any", "both", "none"); None when not known.
        schema: its ``config_schema``; None when not known.
    """

    name: str
    target: str
    kind: str
    paper_order: int | None = None
    trainable: bool | None = None
    modalities: str | None = None
    schema: dict[str, str] | None = field(default=None, hash=False, compare=False)

    @property
    def display_name(self) -> str:
        """A short name for folders and tables: the class name of an import path."""
        return self.name.rsplit(":", 1)[-1] if self.kind == "import path" else self.name


# What a class body may declare literally, and what ``Recommender`` declares for all.
DECLARED = ("name", "paper_order", "trainable", "modalities", "config_schema")
BASE_DECLARES: dict[str, Any] = {"trainable": True, "modalities": "any", "config_schema": {}}


def _class_literals(node: ast.ClassDef) -> dict[str, Any]:
    """The literal class attributes of ``DECLARED`` in a class body (``name = "VBPR"``,
    ``paper_order = 1``, ``config_schema = {...}``)."""
    found: dict[str, Any] = {}
    for statement in node.body:
        if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
            target, value = statement.targets[0], statement.value
        elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
            target, value = statement.target, statement.value
        else:
            continue
        if isinstance(target, ast.Name) and target.id in DECLARED:
            try:
                found[target.id] = ast.literal_eval(value)
            except ValueError:
                continue
    return found


@functools.cache
def builtin() -> dict[str, ModelEntry]:
    """The built-in models, in the paper's order (then the others by name)."""
    # name -> bases, literals, module
    classes: dict[str, tuple[list[str], dict[str, Any], str]] = {}
    for path in sorted(MODELS_DIR.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in tree.body:
            if isinstance(node, ast.ClassDef):
                bases = [b.id for b in node.bases if isinstance(b, ast.Name)]
                classes[node.name] = (bases, _class_literals(node), path.stem)

    def declared(class_name: str, attribute: str) -> Any:
        """An attribute as the class or its nearest base within the package declares it."""
        if class_name not in classes:
            return BASE_DECLARES.get(attribute)
        bases, literals, _ = classes[class_name]
        if attribute in literals:
            return literals[attribute]
        return declared(bases[0], attribute) if bases else BASE_DECLARES.get(attribute)

    entries = []
    for class_name, (_, literals, module) in classes.items():
        if not isinstance(literals.get("name"), str):
            continue  # an abstract base, or a helper class
        order = literals.get("paper_order")
        schema = declared(class_name, "config_schema")
        entries.append(
            ModelEntry(
                literals["name"],
                f"mgrec.models.{module}:{class_name}",
                "built-in",
                order if isinstance(order, int) else None,
                declared(class_name, "trainable") is not False,
                declared(class_name, "modalities"),
                dict(schema) if isinstance(schema, dict) else None,
            )
        )
    entries.sort(key=lambda e: (e.paper_order is None, e.paper_order or 0, e.name.lower()))
    return {e.name: e for e in entries}


def plugins() -> dict[str, ModelEntry]:
    """Models installed distributions expose in the entry-point group ``mgrec.models`` (a name
    that a built-in model already has is left out)."""
    found = {}
    for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if point.name not in builtin():
            found[point.name] = ModelEntry(point.name, point.value, "plugin")
    return dict(sorted(found.items(), key=lambda item: item[0].lower()))


def names() -> list[str]:
    """Every model ``--model`` accepts by name: the built-in ones in the paper's order, then the
    plugins."""
    return [*builtin(), *plugins()]


def paper_models() -> list[str]:
    """The built-in models of the paper's tables, in its order."""
    return [e.name for e in builtin().values() if e.paper_order is not None]


def find(name: str) -> ModelEntry:
    """The entry of ``name`` (a model name or ``module:Class``), or a user error naming the
    closest known model."""
    known = {**builtin(), **plugins()}
    if name in known:
        return known[name]
    if IMPORT_PATH.fullmatch(name):
        return ModelEntry(name, name, "import path")
    hint = closest(name, known)
    raise UserError(
        f"unknown model '{name}'{hint}; choose one of: {', '.join(known)}, or give an import "
        "path module:Class"
    )


def _import(entry: ModelEntry) -> Any:
    module_name, _, class_name = entry.target.partition(":")
    where = f" (the entry point of plugin model '{entry.name}')" if entry.kind == "plugin" else ""
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or module_name
        raise UserError(
            f"cannot import module '{module_name}'{where}: no module named '{missing}' "
            "(is it installed, or its folder on PYTHONPATH?)"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - the user's module failed while importing
        raise UserError(
            f"importing module '{module_name}'{where} failed: {type(exc).__name__}: {exc}"
        ) from exc
    if not hasattr(module, class_name):
        raise UserError(f"module '{module_name}' has no class '{class_name}'{where}")
    return getattr(module, class_name)


@functools.cache
def load(name: str) -> type[Recommender]:
    """The model class ``name`` refers to (imported on first use); a user error in one line for
    an unknown name, a module that does not import, a missing class, or a class that is not a
    ``Recommender``."""
    from mgrec.models.base import Recommender

    entry = find(name)
    cls = _import(entry)
    if not (inspect.isclass(cls) and issubclass(cls, Recommender)):
        raise UserError(
            f"'{entry.target}' is not a model: a model subclasses mgrec.models.Recommender"
        )
    if cls is Recommender or inspect.isabstract(cls):
        raise UserError(f"'{entry.target}' is abstract, not a model")
    return cls


def config_file(name: str) -> Path | None:
    """The YAML file of a model's default settings: ``configs/model/<name>.yaml`` for a built-in
    model; for another, the class's ``config_file`` (relative to its module's folder), or None
    (the class's ``default_config`` applies)."""
    entry = find(name)
    if entry.kind == "built-in":
        return CONFIG_DIR / "model" / f"{entry.name}.yaml"
    cls = load(name)
    if cls.config_file is None:
        return None
    path = Path(cls.config_file)
    if not path.is_absolute():
        path = Path(inspect.getfile(cls)).resolve().parent / path
    if not path.is_file():
        raise UserError(f"{cls.__name__}.config_file: {path} not found")
    return path


def trains(name: str) -> bool:
    """Whether the model has parameters to train (``trainable``; ItemKNNCBF has none)."""
    entry = find(name)
    if entry.trainable is not None:
        return entry.trainable
    return bool(load(name).trainable)


def is_external(name: str) -> bool:
    """Whether the model comes from outside mgrec (a plugin or an import path)."""
    return find(name).kind != "built-in"


def source_files(name: str) -> list[Path]:
    """The source files of the model's own code: the module that defines it and the modules of
    ``mgrec.models`` it imports (directly or through them), excluding the shared base and this
    registry. Read without importing, except for models from outside mgrec."""
    entry = find(name)
    module_name = entry.target.partition(":")[0]
    if entry.kind == "built-in":
        start = MODELS_DIR / f"{module_name.rsplit('.', 1)[-1]}.py"
    else:
        module = sys.modules.get(module_name)
        if module is None:
            load(name)
            module = sys.modules[module_name]
        start = Path(inspect.getfile(module)).resolve()
    seen: list[Path] = []
    pending = [start]
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        seen.append(path)
        pending.extend(_package_imports(path))
    return seen


def import_root(name: str) -> Path | None:
    """The ``sys.path`` folder a model from outside mgrec was imported from (None for a
    namespace or built-in module)."""
    load(name)
    module_name = find(name).target.partition(":")[0]
    module = sys.modules[module_name]
    file = getattr(module, "__file__", None)
    if file is None:
        return None
    path = Path(file).resolve()
    depth = module_name.count(".") + (1 if path.name == "__init__.py" else 0)
    return path.parents[depth]


SHARED_MODULES = ("base", "registry", "__init__")


def _package_imports(path: Path) -> Iterator[Path]:
    """The ``mgrec.models`` modules (other than the shared ones) that ``path`` imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        modules: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.level and path.parent == MODELS_DIR:  # from .losses import ...
                modules = [f"mgrec.models.{node.module}"]
            else:
                modules = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        for module in modules:
            prefix, _, rest = module.partition("mgrec.models.")
            if prefix or not rest:
                continue
            stem = rest.split(".", 1)[0]
            candidate = MODELS_DIR / f"{stem}.py"
            if stem not in SHARED_MODULES and candidate.is_file():
                yield candidate
