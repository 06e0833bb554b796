"""The one import namespace (docs/ARCHITECTURE.md): a wheel holds only `magicmask` with its package data and
works outside the repository, and every module follows the import rule (no bare role names, no upward import
across the layers, no import cycle)."""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import textwrap
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PACKAGE_DIRS = PYPROJECT["tool"]["setuptools"]["package-dir"]   # import name -> folder
ROLE_NAMES = {"protocol", "models", "broker", "actors", "learner", "explain", "app"}


# ---------------- the wheel ----------------
def source_copy(dest: Path) -> Path:
    """The repository's files as a clean checkout plus new files would have them (git's view: tracked and
    untracked, not ignored), so the build neither writes into the repository nor sees its venv or runs."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():   # a tracked file deleted in the work tree is not part of it
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, dest / name)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = source_copy(tmp / "src")
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                          "-w", str(tmp / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    (whl,) = (tmp / "dist").glob("magic_mask-*.whl")
    return whl


def expected_files() -> set[str]:
    """Every module of the mapped folders at its place in the namespace (the folders do not nest), and the
    package data the project reads at run time (presets, report templates)."""
    out = {"/".join([*name.split("."), *f.relative_to(ROOT / folder).parts])
           for name, folder in PACKAGE_DIRS.items() for f in (ROOT / folder).rglob("*.py")}
    out |= {f"magicmask/presets/{p.name}" for p in (ROOT / "deploy/configs").glob("*.yaml")}
    out |= {"magicmask/" + p.relative_to(ROOT / "app").as_posix()
            for p in (ROOT / "app/report/templates").rglob("*") if p.is_file()}
    return out


def test_wheel_holds_only_the_magicmask_namespace_with_its_data(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    dist_info = "-".join(wheel.name.split("-")[:2]) + ".dist-info"
    assert {n.split("/")[0] for n in names} == {"magicmask", dist_info}
    missing = sorted(expected_files() - names)
    assert not missing, f"not in the wheel (pyproject's packages / package-data): {missing}"
    assert "magicmask/presets/connect4.yaml" in names and "magicmask/report/templates/page.html" in names
    assert "magicmask/__init__.py" in names and "magicmask/protocol/config.py" in names
    assert f"{dist_info}/licenses/LICENSE" in names   # pyproject's license = "MIT", the text from LICENSE


def test_installed_wheel_works_outside_the_repository(wheel, tmp_path):
    site = tmp_path / "site"
    res = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--target", str(site),
                          str(wheel)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    code = textwrap.dedent("""\
        from importlib.resources import files
        import magicmask, magicmask.cli, magicmask.protocol.config, magicmask.report
        print(magicmask.__file__)
        print(magicmask.protocol.config.__file__)
        print(magicmask.report.__file__)
        cfg = magicmask.load_config("connect4", ["run.agents=2"])
        print(cfg.env.name, cfg.run.agents)
        print(files("magicmask.report").joinpath("templates", "page.html").is_file())
        magicmask.cli.parser()
        """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env={**env, "PYTHONPATH": str(site)},
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = res.stdout.splitlines()
    for path in lines[:3]:
        assert Path(path).is_relative_to(site), f"{path} is not from the installed wheel in {site}"
    assert lines[3:] == ["connect4 2", "True"]


# ---------------- the import rule ----------------
# What each layer may import (docs/ARCHITECTURE.md); "app" is the magicmask package itself and its modules.
ALLOWED = {"protocol": {"protocol"}, "models": {"models", "protocol"},
           "broker": {"broker", "models", "protocol"}, "actors": {"actors", "models", "protocol"},
           "learner": {"learner", "models", "protocol"},
           "explain": {"explain", "broker", "actors", "learner", "models", "protocol"},
           "app": {"app", "explain", "broker", "actors", "learner", "models", "protocol"}}


def project_modules() -> dict[str, Path]:
    """Every module of the namespace: its import name -> its file."""
    mods = {}
    for name, folder in PACKAGE_DIRS.items():
        for f in (ROOT / folder).rglob("*.py"):
            inner = f.relative_to(ROOT / folder).with_suffix("").parts
            mods[".".join([*name.split("."), *inner[:-1 if inner[-1] == "__init__" else None]])] = f
    return mods


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ALLOWED and parts[1] != "app" else "app"


class Imports(ast.NodeVisitor):
    """(target, line, module_level) of every import of a file, with relative imports resolved; plus the
    names given as strings to import_module / find_spec / __import__ (checked for bare role names only)."""

    def __init__(self, module: str, is_package: bool, known: set[str]):
        self.package = module if is_package else module.rpartition(".")[0]
        self.known, self.found, self.dynamic, self.depth = known, [], [], 0

    def _add(self, name: str, line: int) -> None:
        self.found.append((name, line, self.depth == 0))

    def visit_Import(self, node):
        for a in node.names:
            self._add(a.name, node.lineno)

    def visit_ImportFrom(self, node):
        base = node.module or ""
        if node.level:
            parent = self.package.split(".")[:len(self.package.split(".")) - node.level + 1]
            base = ".".join(parent + ([base] if base else []))
        for a in node.names:
            sub = f"{base}.{a.name}"
            self._add(sub if sub in self.known else base, node.lineno)

    def _nested(self, node):
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _nested

    def visit_If(self, node):   # `if TYPE_CHECKING:` blocks never run
        test = node.test
        if isinstance(test, ast.Name) and test.id == "TYPE_CHECKING" or \
                isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING":
            self._nested(ast.Module(body=node.body, type_ignores=[]))
            for n in node.orelse:
                self.visit(n)
        else:
            self.generic_visit(node)

    def visit_Call(self, node):
        fn = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        arg = node.args[0] if node.args else None
        if isinstance(arg, ast.JoinedStr) and arg.values:   # f"explain.baselines.{name}": its fixed start
            arg = arg.values[0]
        if fn in ("import_module", "find_spec", "__import__") and isinstance(arg, ast.Constant) and \
                isinstance(arg.value, str):
            self.dynamic.append((arg.value, node.lineno))
        self.generic_visit(node)


def imports_of(path: Path, module: str, known: set[str]) -> Imports:
    v = Imports(module, path.name == "__init__.py", known)
    v.visit(ast.parse(path.read_text(), str(path)))
    return v


def bare_role_imports(path: Path, module: str, known: set[str]) -> list[str]:
    v = imports_of(path, module, known)
    return [f"{path.relative_to(ROOT)}:{line}: bare `{name}` (use magicmask.{name.split('.')[0]}...)"
            for name, line, *_ in [*v.found, *v.dynamic] if name.split(".")[0] in ROLE_NAMES]


def test_no_module_imports_a_bare_role_name():
    """Project modules, tests and deploy scripts all import `magicmask.<layer>`: a bare `protocol` or `explain`
    only resolves from the repository root, never from an install."""
    mods = project_modules()
    known = set(mods)
    problems = [p for m, f in mods.items() for p in bare_role_imports(f, m, known)]
    for folder in ("tests", "deploy"):
        for f in (ROOT / folder).rglob("*.py"):
            if "configs" not in f.parts:
                problems += bare_role_imports(f, ".".join(f.relative_to(ROOT).with_suffix("").parts), known)
    assert not problems, "\n".join(problems)


def test_layers_import_only_downwards():
    mods = project_modules()
    known = set(mods)
    problems = []
    for m, f in sorted(mods.items()):
        for target, line, _ in imports_of(f, m, known).found:
            if not (target == "magicmask" or target.startswith("magicmask.")):
                continue
            if layer(target) not in ALLOWED[layer(m)]:
                problems.append(f"{f.relative_to(ROOT)}:{line}: {layer(m)} imports {target} ({layer(target)})")
    root = imports_of(mods["magicmask"], "magicmask", known).found
    problems += [f"app/__init__.py:{line}: imports {t} at module level (the root package must import nothing of "
                 f"ours)" for t, line, top in root if top and t.startswith("magicmask")]
    assert not problems, "\n".join(problems)


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module (or a module importing itself)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1 or v in graph.get(v, ()):
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_strongly_connected_finds_cycles_only():
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert strongly_connected({"a": {"b"}, "b": set(), "c": {"c"}}) == [["c"]]


def test_no_import_cycle_between_modules():
    """Module-level imports only (an import inside a function runs after every module is loaded)."""
    mods = project_modules()
    known = set(mods)
    graph = {m: {t for t, _, top in imports_of(f, m, known).found if top and t in known and t != m}
             for m, f in mods.items()}
    cycles = strongly_connected(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_rule_checker_sees_violations(tmp_path):
    """The checker itself: a bare name, a relative import and a lazy import are all seen."""
    f = tmp_path / "mod.py"
    f.write_text("import protocol.config\nfrom . import sibling\n\ndef g():\n"
                 "    from magicmask.learner import server\n    importlib.import_module('explain.x')\n"
                 "    find_spec(f'models.{g}')\n")
    v = imports_of(f, "magicmask.models.mod", {"magicmask.models.sibling", "magicmask.learner.server"})
    assert [(t, top) for t, _, top in v.found] == [("protocol.config", True), ("magicmask.models.sibling", True),
                                                   ("magicmask.learner.server", False)]
    assert v.dynamic == [("explain.x", 6), ("models.", 7)]
    assert layer("magicmask.learner.server") not in ALLOWED[layer("magicmask.models.mod")]
    assert layer("magicmask.api") == layer("magicmask") == layer("magicmask.presets") == "app"
