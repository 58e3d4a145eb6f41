"""Layering: ``anomaly_ssl`` never imports ``active_learning`` except in its CLI."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_core_package_does_not_import_active_learning():
    offenders = []
    for path in (ROOT / "anomaly_ssl").rglob("*.py"):
        if "cli" in path.relative_to(ROOT / "anomaly_ssl").parts:
            continue
        if any(name.split(".")[0] == "active_learning" for name in _imports(path)):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == [], f"lower layer imports active_learning: {offenders}"


def test_only_the_client_module_talks_to_the_label_studio_sdk():
    users = []
    for pkg in ("anomaly_ssl", "active_learning"):
        for path in (ROOT / pkg).rglob("*.py"):
            if any(name.split(".")[0] == "label_studio_sdk" for name in _imports(path)):
                users.append(path.name)
    assert set(users) <= {"ls_client.py"}, users


def test_library_code_does_not_print():
    offenders = []
    for pkg in ("anomaly_ssl", "active_learning"):
        for path in (ROOT / pkg).rglob("*.py"):
            if "cli" in path.parts:
                continue
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []
