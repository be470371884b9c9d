"""The package's layout is its architecture: every import inside MedSAMLiteLib runs one way, down to the
core, with no circle (lazy imports inside functions count too), and the engine's two halves meet only in
its protocol (docs/architecture.md)."""
import ast
import inspect
from pathlib import Path

import pytest

import MedSAMLiteLib
from MedSAMLiteLib.engine import protocol, server

ROOT = Path(MedSAMLiteLib.__file__).parent
MODULE_FILE = ROOT.parent / "MedSAMLite.py"

# What each part may import besides itself and the package root (one_line) / dependencies (stdlib only).
MAY_IMPORT = {
    "core": set(),
    "models": {"core"},
    "engine": {"models", "core"},
    "headless": {"models", "core"},
    "mrml": {"engine", "models", "core"},
}
GROUND = {"MedSAMLiteLib", "MedSAMLiteLib.dependencies"}
# The engine's halves: Slicer's side and the child process share only the protocol.
ENGINE_HALVES = {"MedSAMLiteLib.engine.client": {"MedSAMLiteLib.engine.protocol"},
                 "MedSAMLiteLib.engine.server": {"MedSAMLiteLib.engine.protocol"},
                 "MedSAMLiteLib.engine.protocol": set()}


def _module_name(path: Path) -> str:
    parts = ("MedSAMLiteLib", *path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _known_modules() -> set[str]:
    return {_module_name(p) for p in ROOT.rglob("*.py")}


def _imports(path: Path, module: str) -> set[str]:
    """Every MedSAMLiteLib module `path` imports, anywhere in the file, relative ones resolved
    (`from . import x` names the module x when x is one)."""
    known = _known_modules()
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "MedSAMLiteLib"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            elif node.module and node.module.split(".")[0] == "MedSAMLiteLib":
                target = node.module
            else:
                continue
            for alias in node.names:
                found.add(f"{target}.{alias.name}" if f"{target}.{alias.name}" in known else target)
    return found


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _imports(p, _module_name(p)) for p in ROOT.rglob("*.py")}


def _part(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and module not in GROUND else None


def _upward(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for module, targets in graph.items():
        part = _part(module)
        for target in targets:
            if target in GROUND or _part(target) == part and module not in ENGINE_HALVES:
                continue
            if module in ENGINE_HALVES and _part(target) == "engine":
                if target not in ENGINE_HALVES[module]:
                    bad.append(f"{module} -> {target}")
                continue
            if part is None or _part(target) not in MAY_IMPORT[part]:
                bad.append(f"{module} -> {target}")
    return sorted(bad)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state = [], {}

    def visit(module, stack):
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                found.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target, stack + [target])
        state[module] = "closed"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return found


def test_every_part_is_listed():
    """A new subpackage must be given its place in MAY_IMPORT (and in docs/architecture.md)."""
    parts = {p.name for p in ROOT.iterdir() if (p / "__init__.py").is_file()}
    assert parts == set(MAY_IMPORT)
    top_modules = {p.stem for p in ROOT.glob("*.py")}
    assert top_modules == {"__init__", "dependencies"}


def test_imports_run_down_to_the_core():
    assert _upward(_graph()) == []


def test_no_import_circle():
    assert _cycles(_graph()) == []


def test_the_ground_imports_nothing_of_the_package():
    assert _imports(ROOT / "__init__.py", "MedSAMLiteLib") == set()
    assert _imports(ROOT / "dependencies.py", "MedSAMLiteLib.dependencies") == set()


def test_the_module_file_uses_only_the_slicer_side_of_the_package():
    """MedSAMLite.py runs in Slicer's process: the engine's client, never its server, the headless command
    or the core's heavy paths (those run in the engine)."""
    targets = _imports(MODULE_FILE, "MedSAMLite")
    allowed_parts = {"mrml", "engine", "models"}
    bad = [t for t in targets if t not in GROUND and (_part(t) not in allowed_parts or t == "MedSAMLiteLib.engine.server"
                                                      or _part(t) == "models" and t != "MedSAMLiteLib.models.store")]
    assert bad == []


@pytest.mark.parametrize("graph, expected", [
    ({"MedSAMLiteLib.core.a": {"MedSAMLiteLib.models.store"}}, ["MedSAMLiteLib.core.a -> MedSAMLiteLib.models.store"]),
    ({"MedSAMLiteLib.models.store": {"MedSAMLiteLib.engine.client"}},
     ["MedSAMLiteLib.models.store -> MedSAMLiteLib.engine.client"]),
    ({"MedSAMLiteLib.engine.client": {"MedSAMLiteLib.engine.server"}},
     ["MedSAMLiteLib.engine.client -> MedSAMLiteLib.engine.server"]),
    ({"MedSAMLiteLib.headless.cli": {"MedSAMLiteLib.mrml.inputs"}}, ["MedSAMLiteLib.headless.cli -> MedSAMLiteLib.mrml.inputs"]),
    ({"MedSAMLiteLib.engine.server": {"MedSAMLiteLib.models.store", "MedSAMLiteLib.core.zoom", "MedSAMLiteLib"}}, []),
])
def test_the_direction_check_catches_an_upward_import(graph, expected):
    assert _upward(graph) == expected


def test_the_circle_check_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c", "a"]]


# -- the engine's protocol ------------------------------------------------------------------------------------

def test_every_request_names_the_servers_parameters():
    """OPS is the server's do_<op> signatures: a renamed argument on either side fails here."""
    handlers = {name[3:]: fn for name, fn in vars(server.Engine).items() if name.startswith("do_")}
    assert set(handlers) == set(protocol.OPS)
    for op, fn in handlers.items():
        params = list(inspect.signature(fn).parameters)[2:]  # self, job_id
        assert tuple(params) == protocol.OPS[op], op
    assert tuple(list(inspect.signature(server.Engine.image).parameters)[1:]) == protocol.IMAGE


def test_a_request_outside_the_protocol_is_refused():
    image = dict.fromkeys(protocol.IMAGE)
    assert protocol.request("prefetch", 1, {"backend": "x", "image": image, "slices": []}, {}).op == "prefetch"
    with pytest.raises(ValueError, match="no request 'segmnet'"):
        protocol.request("segmnet", 1, {}, {})
    with pytest.raises(ValueError, match="takes no backnd"):
        protocol.request("stats", 1, {"backnd": "x"}, {})
    with pytest.raises(ValueError, match="an image names"):
        protocol.request("prefetch", 1, {"backend": "x", "image": {**image, "key": 1}, "slices": []}, {})
