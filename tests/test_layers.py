"""One-way layers (docs/conventions.md section 1; issue 14, item 8).

* ``sim`` and ``controllers`` import nothing of ``latenttune``;
* the core (every ``latenttune`` module except the CLI and the Bluesky plans/devices in
  ``latenttune.bluesky``) imports neither the Bluesky packages nor the CLI, also lazily inside a
  function, and reading a stored Bluesky run (``.msgpack``) does not load them;
* only the CLI prints.

Each rule is checked twice: statically (every import statement and call in the source, so an import
inside a function that no test happens to run is caught too) and, where it matters, by importing in
a fresh interpreter and looking at ``sys.modules``.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Top-level packages of the Bluesky world the core must not load.
BLUESKY = ("bluesky", "ophyd", "event_model", "suitcase", "databroker")


def _modules(package: str) -> dict[str, Path]:
    base = ROOT / package
    out = {}
    for path in sorted(base.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


#: Modules of the command-line interface (the whole ``latenttune.cli`` package): the only ones that print.
CLI = {name for name in _modules("latenttune") if name == "latenttune.cli" or name.startswith("latenttune.cli.")}


def _import_statements(path: Path, module: str):
    """Every import statement anywhere in the file: ``(absolute source module, imported names)``.

    ``import a.b`` gives ``("a.b", ())``; ``from P import n, m`` gives ``("P", ("n", "m"))``, relative
    imports resolved against ``module``.
    """
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, ()
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            source = ".".join([*base, node.module] if node.module else base) if node.level else node.module
            yield source, tuple(alias.name for alias in node.names)


def _imported(path: Path, module: str) -> set[str]:
    """Every module named by an import statement anywhere in the file (absolute names)."""
    return {source for source, _ in _import_statements(path, module)}


def _is_under(name: str, roots) -> bool:
    return any(name == root or name.startswith(root + ".") for root in roots)


CORE = {name: path for name, path in _modules("latenttune").items()
        if name not in CLI and not _is_under(name, ("latenttune.bluesky",))}


def test_the_layout_is_what_the_rules_assume():
    assert {"latenttune.io.runs", "latenttune.frame_policy", "latenttune.tracking.replay", "latenttune.io.series"} <= set(CORE)
    assert "latenttune.bluesky.plan" not in CORE and "latenttune.cli" not in CORE


@pytest.mark.parametrize("package", ["sim", "controllers"])
def test_sim_and_controllers_import_nothing_of_latenttune(package):
    for name, path in _modules(package).items():
        bad = sorted(m for m in _imported(path, name) if _is_under(m, ("latenttune",)))
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_core_source_imports_neither_bluesky_nor_the_cli():
    problems = {}
    for name, path in CORE.items():
        bad = sorted(m for m in _imported(path, name)
                     if _is_under(m, BLUESKY) or _is_under(m, ("latenttune.bluesky",)) or _is_under(m, CLI))
        if bad:
            problems[str(path.relative_to(ROOT))] = bad
    assert not problems, problems


def test_nothing_but_the_cli_imports_the_cli():
    for name, path in _modules("latenttune").items():
        if name in CLI:
            continue
        bad = sorted(m for m in _imported(path, name) if _is_under(m, CLI))
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def _prints(path: Path) -> list[int]:
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Name) and f.id == "print":
            lines.append(node.lineno)
        elif (isinstance(f, ast.Attribute) and f.attr in ("write", "writelines")
              and isinstance(f.value, ast.Attribute) and f.value.attr in ("stdout", "stderr")):
            lines.append(node.lineno)
    return lines


def test_only_the_cli_prints():
    problems = {}
    for package in ("latenttune", "sim", "controllers"):
        for name, path in _modules(package).items():
            if name not in CLI and _prints(path):
                problems[str(path.relative_to(ROOT))] = _prints(path)
    assert not problems, f"print/stdout/stderr outside the CLI (file: lines): {problems}"


def _fresh(code: str) -> dict:
    """Run ``code`` in a fresh interpreter at the repository root; it prints one JSON object."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=env)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_sim_and_controllers_load_no_latenttune_module():
    loaded = _fresh(
        "import importlib, json, sys\n"
        f"for name in {sorted(set(_modules('sim')) | set(_modules('controllers')))!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'latenttune')))\n"
    )
    assert loaded == []


def test_core_and_reading_a_stored_run_load_no_bluesky(tmp_path):
    """Import every core module and read a stored run (.msgpack) through the series dispatcher."""
    import msgpack
    import msgpack_numpy
    import numpy as np

    N = 16
    keys = {"pattern": "cdi_pattern", "mask": None, "frame_index": None, "sample_time": None,
            "latent": "tracker_latent", "cost": "tracker_cost", "es_steps": "tracker_es_steps",
            "status": "tracker_status"}
    patterns = [np.full((N, N, N), t + 1, np.float32) for t in range(2)]
    documents = [
        ["start", {"uid": "u1", "time": 0.0, "latenttune": {"keys": keys}}],
        ["descriptor", {"uid": "d1", "name": "primary", "data_keys": {
            "cdi_pattern": {"dtype": "array", "shape": [N, N, N], "dtype_numpy": "<f4", "source": "x"}}}],
        ["event_page", {"descriptor": "d1", "time": [1.0, 2.0], "data": {"cdi_pattern": patterns}}],
        ["stop", {"exit_status": "success"}],
    ]
    run = tmp_path / "run.msgpack"
    run.write_bytes(b"".join(msgpack.packb(d, default=msgpack_numpy.encode) for d in documents))
    loaded = _fresh(
        "import importlib, json, sys\n"
        f"for name in {sorted(CORE)!r}:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ImportError as exc:  # an optional peer package that is not installed\n"
        "        if 'cohere' not in str(exc): raise\n"
        "from latenttune.io import open_series\n"
        f"with open_series({str(run)!r}) as s:\n"
        "    assert len(s) == 2 and float(s[1].intensity.max()) == 2.0\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {BLUESKY!r}\n"
        "    or m.startswith('latenttune.bluesky') or m == 'latenttune.cli' or m.startswith('latenttune.cli.'))))\n"
    )
    assert loaded == []


def _import_edges(path: Path, module: str, modules) -> set[str]:
    """The ``latenttune`` modules this file imports, anywhere in it (functions, ``if TYPE_CHECKING``).

    ``from P import n`` is an edge to the module ``P.n`` when there is one, else to ``P``; a package
    stands for its ``__init__.py``. Parent packages run by an import are not edges (every submodule of
    a package would otherwise close a loop with an ``__init__`` that re-exports it).
    """
    named = set()
    for source, names in _import_statements(path, module):
        named.update({f"{source}.{name}" if f"{source}.{name}" in modules else source for name in names} or {source})
    return {name for name in named if name in modules}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module, and self-loops (Tarjan, iterative)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph[w]))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    component = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        component.append(w)
                        if w == v:
                            break
                    if len(component) > 1 or v in graph[v]:
                        found.append(sorted(component))
    return sorted(found)


def test_the_cycle_finder_finds_loops_and_self_loops():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"d"}, "e": {"a"}, "f": set()}
    assert _cycles(graph) == [["a", "b", "c"], ["d"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_the_latenttune_import_graph_has_no_cycle():
    """No module of ``latenttune`` imports itself through others (static, every import statement)."""
    modules = _modules("latenttune")
    graph = {name: _import_edges(path, name, modules) for name, path in modules.items()}
    assert "latenttune.io.series" in graph["latenttune.io.cxi"]  # the edges are there to be checked
    cycles = _cycles(graph)
    described = [
        "; ".join(f"{name} -> {', '.join(sorted(graph[name] & set(cycle)))}" for name in cycle) for cycle in cycles
    ]
    assert not cycles, "import cycles in latenttune:\n" + "\n".join(described)
