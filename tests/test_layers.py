"""The layering rules of docs/ARCHITECTURE.md, checked by reading the imports (nothing is run)."""
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


# What a page may not do to a database session: SQL lives in db/ (and training/) functions.
SESSION_CALLS = {"execute", "scalars", "scalar", "get", "query", "add", "add_all", "delete",
                 "flush", "commit"}
SESSION_NAMES = {"s", "session", "sess", "db_session"}


def _session_calls(path: Path) -> list[str]:
    """``s.get(...)``-style calls on a name that holds a session, with their line numbers."""
    bad = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in SESSION_CALLS and isinstance(node.func.value, ast.Name)
                and node.func.value.id in SESSION_NAMES):
            bad.append(f"{where}:{node.lineno} calls "
                       f"{node.func.value.id}.{node.func.attr}()")
    return bad


def test_pages_run_no_sql():
    """Pages call one db or training function per idea; they never query a session."""
    bad = [hit for f in _files("pages") + [ROOT / "app.py"] for hit in _session_calls(f)]
    assert not bad, "\n".join(bad)


def test_session_call_checker_sees_a_query(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("with ui.session() as s:\n    s.get(Image, 1)\n    s.add(x)\n"
                     "st.session_state.get('a')\n")
    assert len(_session_calls(probe)) == 2  # session_state.get is not a session call
