"""The import rules that keep the layout the architecture, read from the code (as gunicorn's
import-order test reads its own): each layer looks only down.

api (one folder per family) -> services -> synthesis -> runtime -> store, security -> workers ->
audio, text, settings, errors. Imports under `if TYPE_CHECKING:` are annotations, not dependencies,
and are left out.
"""
from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("chatterbox_server", "workers")
LOOSE_MODULES = {"__init__", "app", "services", "settings", "errors"}
NO_FLASK = ("chatterbox_server.synthesis", "chatterbox_server.store", "chatterbox_server.audio",
            "chatterbox_server.text")
WORKERS_MAY_IMPORT = {"chatterbox_server.settings"}
# Top to bottom; a module imports only its own layer and the ones below it.
LAYERS = (("app",), ("api", "web"), ("services",), ("synthesis",), ("runtime",), ("store", "security"),
          ("workers",), ("audio", "text", "settings", "errors"), ("",))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" not in path.parts:
                found[module_name(path)] = path
    return found


MODULES = modules()


def is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def import_nodes(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and is_type_checking(node):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        else:
            yield from import_nodes(node)


def imported(name: str) -> set[str]:
    """Every module `name` imports (a `from package import module` names the module)."""
    found = set()
    for node in import_nodes(ast.parse(MODULES[name].read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names
                         if f"{node.module}.{alias.name}" in MODULES)
    return found


IMPORTS = {name: imported(name) for name in MODULES}


def inside(name: str, package: str) -> bool:
    return name == package or name.startswith(package + ".")


def offenders(importer: str, imports_forbidden) -> list[str]:
    return sorted(target for target in IMPORTS[importer] if imports_forbidden(target))


def test_no_api_module_beside_the_api_package():
    loose = {path.stem for path in (ROOT / "chatterbox_server").glob("*.py")}
    assert loose <= LOOSE_MODULES, sorted(loose - LOOSE_MODULES)


def test_nothing_below_the_http_layer_imports_it():
    below = [name for name in MODULES if not inside(name, "chatterbox_server.api")
             and name != "chatterbox_server.app"]
    found = {name: offenders(name, lambda target: inside(target, "chatterbox_server.api")) for name in below}
    assert {name: hits for name, hits in found.items() if hits} == {}


@pytest.mark.parametrize("layer", NO_FLASK)
def test_layers_under_the_views_import_no_flask(layer):
    found = {name: offenders(name, lambda target: inside(target, "flask") or inside(target, "werkzeug"))
             for name in MODULES if inside(name, layer)}
    assert {name: hits for name, hits in found.items() if hits} == {}


def test_workers_import_nothing_of_the_app_but_its_settings():
    found = {name: offenders(name, lambda target: inside(target, "chatterbox_server")
                             and target not in WORKERS_MAY_IMPORT)
             for name in MODULES if inside(name, "workers")}
    assert {name: hits for name, hits in found.items() if hits} == {}


def qualified(package: str) -> str:
    return package if package == "workers" else f"chatterbox_server.{package}".rstrip(".")


def layer(name: str) -> int | None:
    return next((depth for depth, packages in enumerate(LAYERS)
                 if any(inside(name, qualified(package)) for package in packages)), None)


def test_every_module_is_in_a_layer():
    assert [name for name in MODULES if layer(name) is None] == []


def test_each_layer_only_looks_down():
    upward = [f"{name} -> {target}" for name in sorted(MODULES) for target in sorted(internal_edges(name))
              if layer(target) < layer(name)]
    assert upward == []


def internal_edges(name: str) -> set[str]:
    """The project's modules `name` depends on; importing a package's module runs the package too,
    but package __init__ files here hold only docstrings, so the edge goes to the module."""
    return {target for target in IMPORTS[name] if target in MODULES and target != name}


def find_cycle() -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(name: str) -> list[str] | None:
        state[name] = 1
        stack.append(name)
        for target in sorted(internal_edges(name)):
            if state.get(target) == 1:
                return stack[stack.index(target):] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        stack.pop()
        state[name] = 2
        return None

    for name in sorted(MODULES):
        if name not in state and (cycle := visit(name)):
            return cycle
    return None


def test_no_import_cycles():
    assert find_cycle() is None


def test_package_inits_hold_no_code():
    """So that importing one module of a package never drags in its siblings (the edges above)."""
    for name, path in MODULES.items():
        if path.name == "__init__.py" and name not in ("chatterbox_server", "chatterbox_server.web",
                                                       "workers.engines"):
            body = [node for node in ast.parse(path.read_text()).body
                    if not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))]
            assert body == [], name
