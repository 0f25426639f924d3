"""Smoke test of tools/mutation_check.py's machinery on one cheap mutant (the full check is
`make mutation`, docs/testing.md): a planted PSNR bug is killed in a temporary copy, a stale
snippet is reported as such, and the working tree is left untouched."""

import hashlib
import importlib.util
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location(
    "mutation_check", os.path.join(ROOT, "tools", "mutation_check.py")
)
mc = importlib.util.module_from_spec(_spec)
sys.modules["mutation_check"] = mc  # dataclasses look their module up there
_spec.loader.exec_module(mc)


def _digest(rel):
    with open(os.path.join(ROOT, rel), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_every_mutant_applies_to_the_current_tree():
    """No stale mutants: each snippet occurs exactly once in its file (no tests run)."""
    stale = []
    for m in mc.MUTANTS:
        with open(os.path.join(ROOT, m.path)) as f:
            if f.read().count(m.original) != 1:
                stale.append(m.name)
    assert not stale, f"update these mutants in tools/mutation_check.py: {stale}"
    assert len({m.name for m in mc.MUTANTS}) == len(mc.MUTANTS)


def test_one_mutant_is_killed_in_a_copy_and_the_tree_is_untouched():
    (psnr,) = [m for m in mc.MUTANTS if m.name == "psnr_20log10_of_mse"]
    before = _digest(psnr.path)
    status, _, tail = mc.run_mutant(psnr, timeout=300)
    assert status == "killed", tail
    assert _digest(psnr.path) == before
    stale = mc.Mutant("stale", psnr.path, "no such snippet", "x", psnr.tests)
    assert mc.run_mutant(stale)[0] == "stale"
