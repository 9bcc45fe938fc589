"""The package table of `docs/architecture.md` holds: each package imports only the packages below it.

Every module of the library is read with `ast` (imports inside functions included, `TYPE_CHECKING` blocks
too); an import of a package that stands higher in the table, or of the same rank's other package, fails.
The order is read from the table itself, so the document and this test cannot disagree."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROW = re.compile(r"^\| `([a-z_.]+)`(?: \(top\))? \|")


def table_order(document: Path) -> list[str]:
    """The packages of the "Packages" table, lowest first (the table lists the lowest first)."""
    text = document.read_text(encoding="utf-8")
    section = text.split("## Packages", 1)[1].split("\n## ", 1)[0]
    return [m.group(1) for line in section.splitlines() if (m := ROW.match(line))]


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(module: str, is_package: bool, tree: ast.AST) -> set[str]:
    """The absolute names of every module `tree` imports, wherever in the file the import stands."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.add(name)
            found.update(f"{name}.{alias.name}" for alias in node.names)
    return found


def layer_of(name: str, order: list[str]) -> str | None:
    """The table's package that holds module `name` (the longest matching one), None for other libraries."""
    matches = [p for p in order if name == p or name.startswith(p + ".")]
    return max(matches, key=len) if matches else None


def violations(root: Path, order: list[str]) -> list[str]:
    """`module imports name (higher package)` for every import of `root`'s modules against the order."""
    rank = {package: i for i, package in enumerate(order)}
    tops = {p.split(".")[0] for p in order}
    problems = []
    for path in sorted(p for top in tops for p in (root / top).rglob("*.py")):
        module = module_name(root, path)
        own = layer_of(module, order)
        if own is None:
            continue
        for name in sorted(imported(module, path.name == "__init__.py", ast.parse(path.read_text(encoding="utf-8")))):
            other = layer_of(name, order)
            if other is not None and other != own and rank[other] >= rank[own]:
                problems.append(f"{module} imports {name} ({other} is not below {own})")
    return problems


ORDER = table_order(REPO / "docs" / "architecture.md")


def test_the_table_lists_every_package():
    """Every package of the library has its row (a new package gets one), each once."""
    assert len(ORDER) == len(set(ORDER))
    packages = {module_name(REPO, p.parent / "__init__.py") for p in REPO.glob("*/__init__.py")
                if p.parent.name not in ("tests", "benchmarks")}
    packages |= {f"experiments.{p.parent.name}" for p in (REPO / "experiments").glob("*/__init__.py")}
    assert packages == set(ORDER)


def test_no_package_imports_a_higher_one():
    assert violations(REPO, ORDER) == []


def plant(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


@pytest.mark.parametrize("line", ["import top.mid.deep", "from top.mid import deep",
                                  "def later():\n    from .mid import deep\n", "from ..mid import deep"])
def test_a_planted_upward_import_fails(tmp_path, line):
    """A lower package importing a higher one, absolute, relative or inside a function, is named."""
    where = "low/inner.py" if not line.startswith("from ..") else "top/low2/inner.py"
    order = ["low", "top.low2", "top.mid", "top"]
    tree = plant(tmp_path, {"low/__init__.py": "", "top/__init__.py": "", "top/mid/__init__.py": "",
                            "top/mid/deep.py": "import low\n", "top/low2/__init__.py": "",
                            where: line.replace("from .mid", "from top.mid") + "\n"})
    found = violations(tree, order)
    assert len(found) >= 1 and all("top.mid" in problem for problem in found)
    (tree / where).write_text("import low\n")
    assert violations(tree, order) == []


def test_the_order_is_read_from_the_document(tmp_path):
    """Swapping two rows of the table swaps what counts as a violation."""
    table = ("## Packages\n\n| package | job | may import |\n| --- | --- | --- |\n"
             "| `low` | a | - |\n| `high` | b | `low` |\n\n## Next\n")
    (tmp_path / "arch.md").write_text(table)
    assert table_order(tmp_path / "arch.md") == ["low", "high"]
    tree = plant(tmp_path, {"low/__init__.py": "", "high/__init__.py": "import low\n"})
    assert violations(tree, ["low", "high"]) == []
    assert violations(tree, ["high", "low"]) == ["high imports low (low is not below high)"]
