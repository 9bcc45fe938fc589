"""Every function and method `docs/architecture.md` names exists in the library: `Class.method` for each
class of ours, and each `name(...)` it writes as a call (a library's own names, such as `Trainer.predict`,
are left to the library)."""
from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGES = ("medcommon", "lightning_modules", "datamodules", "attacks", "experiments", "medtransfer")


def defined() -> tuple[set[str], set[tuple[str, str]]]:
    """The names of every function and class, and every (class, attribute) a class defines or sets on self."""
    names, members = set(), set()
    for path in (p for package in PACKAGES for p in (REPO / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            if not isinstance(node, ast.ClassDef):
                continue
            for inner in ast.walk(node):
                if isinstance(inner, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    members.add((node.name, inner.name))
                targets = inner.targets if isinstance(inner, ast.Assign) else (
                    [inner.target] if isinstance(inner, ast.AnnAssign) else [])
                for target in targets:
                    if isinstance(target, ast.Name):
                        members.add((node.name, target.id))
                    elif isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name):
                        members.add((node.name, target.attr))
    return names, members


def missing(text: str) -> list[str]:
    names, members = defined()
    found = set()
    for code in re.findall(r"`([^`\n]+)`", text):
        for owner, member in re.findall(r"\b([A-Z][A-Za-z0-9]+)\.([a-z_][a-z0-9_]*)\b", code):
            if owner in names and (owner, member) not in members:
                found.add(f"{owner}.{member}")
        found.update(f"{name}()" for name in re.findall(r"(?<![.\w])([a-z_][a-z0-9_]*)\(", code) if name not in names)
    return sorted(found)


def test_every_named_function_and_method_exists():
    assert missing((REPO / "docs" / "architecture.md").read_text(encoding="utf-8")) == []


def test_a_method_that_does_not_exist_is_named():
    assert missing("`StudyWork.evaluate` and `LocalExecutor.evaluate`, `run_study(cfg)`, `no_such_function(x)`") == [
        "LocalExecutor.evaluate", "no_such_function()"]
