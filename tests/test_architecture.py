"""The architecture holds: pyproject's import-linter contracts are kept, a planted forbidden
import breaks them, and no module of jaxmm or kernels_pallas is part of an import cycle
(function-local imports count: an import that only dodges a cycle is still a cycle)."""

import os
import shutil
import subprocess
import sys

import grimp
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("jaxmm", "kernels_pallas")


def _lint_imports(root: str) -> subprocess.CompletedProcess:
    """`lint-imports` on the tree at `root` (a fresh process: no module or graph cache)."""
    code = (
        "import sys; from importlinter.cli import lint_imports; "
        "sys.exit(lint_imports(config_filename='pyproject.toml', no_cache=True))"
    )
    env = {**os.environ, "PYTHONPATH": root}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True
    )


def test_import_contracts_are_kept():
    proc = _lint_imports(ROOT)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "0 broken" in proc.stdout


@pytest.mark.parametrize(
    "module, planted",
    [
        ("jaxmm/train/optim.py", "from jaxmm.models import lrm4d"),  # trainer -> model
        ("jaxmm/nn/norms.py", "from jaxmm.models import llm"),  # layer -> model
        ("kernels_pallas/splat/reference.py", "from jaxmm import sharding"),  # kernel -> jaxmm
        ("jaxmm/data/pipeline.py", "from jaxmm.train import checkpoint"),  # data -> train
    ],
)
def test_a_planted_forbidden_import_breaks_the_contracts(tmp_path, module, planted):
    for name in (*PACKAGES, "pyproject.toml"):
        src = os.path.join(ROOT, name)
        copy = shutil.copytree if os.path.isdir(src) else shutil.copy
        copy(src, tmp_path / name)
    with open(tmp_path / module, "a") as f:  # function-local: still an import
        f.write(f"\n\ndef _planted():\n    {planted}  # noqa\n")
    proc = _lint_imports(str(tmp_path))
    assert proc.returncode != 0 and "BROKEN" in proc.stdout, proc.stdout[-2000:]


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append(
                        (child, iter(sorted(graph.find_modules_directly_imported_by(child))))
                    )
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    component.append(m)
                    if m == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_no_import_cycles():
    graph = grimp.build_graph(*PACKAGES, include_external_packages=False, cache_dir=None)
    cycles = _cycles(graph)
    assert not cycles, "import cycles (break them; a function-local import does not):\n" + (
        "\n".join(" <-> ".join(c) for c in cycles)
    )


def test_the_cycle_check_sees_function_local_imports():
    graph = grimp.build_graph(*PACKAGES, include_external_packages=False, cache_dir=None)
    graph.add_import(importer="jaxmm.sharding", imported="jaxmm.config")  # a planted loop
    assert ["jaxmm.config", "jaxmm.sharding"] in _cycles(graph)
