"""The layering rules of DESIGN.md, checked by reading the imports (no module is executed)."""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _files(package: str):
    return sorted((ROOT / package).rglob("*.py"))


FORBIDDEN = {
    "core": {"streamlit", "db", "training", "tensorflow", "pages", "app"},
    "db": {"streamlit", "training", "tensorflow", "pages", "app"},
    "training": {"streamlit", "tensorflow", "pages", "app"},
    "pages": {"tensorflow", "sqlalchemy"},
}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layer_imports(package):
    bad = []
    for f in _files(package):
        hit = _imports(f) & FORBIDDEN[package]
        if hit:
            bad.append(f"{f.relative_to(ROOT)} imports {sorted(hit)}")
    assert not bad, "\n".join(bad)


def test_checker_sees_a_forbidden_import(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import os\nfrom tensorflow import keras\ndef f():\n    import streamlit as st\n")
    assert {"tensorflow", "streamlit"} <= _imports(probe)


def test_core_and_training_import_keras_lazily():
    """keras is only imported inside functions, so pages without a model start fast."""
    bad = []
    for package in ("core", "training", "db"):
        for f in _files(package):
            tree = ast.parse(f.read_text())
            for node in tree.body:
                mods = []
                if isinstance(node, ast.Import):
                    mods = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    mods = [node.module]
                if any(m.split(".")[0] == "keras" for m in mods):
                    bad.append(str(f.relative_to(ROOT)))
    assert not bad, f"top-level keras import in {bad}"
