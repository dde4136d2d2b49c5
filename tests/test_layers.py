"""The package structure, checked: one-way layers, no import cycles, light commands stay light.

Layers, bottom to top: ``common`` (the foundation: config, data, models, privacy
accounting, the wire format) < ``client`` and ``server`` (the two roles, independent of
each other) < ``deploy`` (processes around them on real machines) < ``simulations``
(many virtual clients, benchmarks, audits) < ``privatune`` (the command line). A module
may import its own package and the packages below it, never above or beside. Every
import counts, function-local ones too: hiding an upward arrow inside a function does not
make it one-way.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BELOW: dict[str, set[str]] = {
    "common": set(),
    "client": {"common"},
    "server": {"common"},
    "deploy": {"common", "client", "server"},
    "simulations": {"common", "client", "server", "deploy"},
    "privatune": {"common", "client", "server", "deploy", "simulations"},
}


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports() -> dict[str, set[str]]:
    """Every project module -> the project modules it imports (anywhere in its body)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for package in BELOW:
        for path in sorted((ROOT / package).rglob("*.py")):
            here = _module(path)
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    # `from pkg import mod` may name a submodule: count the finer name too.
                    names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
                else:
                    continue
                graph[here] |= {n for n in names if n.split(".")[0] in BELOW}
    return graph


def _known(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """Only edges to modules that exist (``from common import protocol`` -> common.protocol)."""
    modules = set(graph)
    for package in BELOW:
        modules |= {_module(p) for p in (ROOT / package).rglob("*.py")}
    return {m: {t for t in targets if t in modules and t != m} for m, targets in graph.items()}


def test_every_import_points_down() -> None:
    upward = sorted(
        f"{module} imports {target}"
        for module, targets in _imports().items()
        for target in targets
        if (top := target.split(".")[0]) != module.split(".")[0]
        and top not in BELOW[module.split(".")[0]]
    )
    assert upward == [], "imports against the layers (see this file's docstring):\n" + "\n".join(
        upward
    )


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles() -> None:
    """Package ``__init__`` modules re-exporting their submodules are not cycles of logic,
    so a package's edge to its own ``__init__`` is left out."""
    graph = _known(_imports())
    graph = {
        m: {t for t in targets if not (m.startswith(t + ".") or t.startswith(m + "."))}
        for m, targets in graph.items()
    }
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["config", "--config", "examples/demo.toml"],
        ["keys", "--help"],
        ["coordinator", "--help"],
        ["node", "--help"],
    ],
    ids=lambda a: " ".join(a),
)
def test_light_commands_do_not_import_torch(argv: list[str]) -> None:
    """Commands that never train stay fast: torch (seconds to import) is not loaded."""
    script = (
        "import sys, contextlib, io\n"
        "from privatune.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n"
        f"        main({argv!r})\n"
        "    except SystemExit:\n"
        "        pass\n"
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'opacus') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", f"{argv} imported {done.stdout.strip()}"
