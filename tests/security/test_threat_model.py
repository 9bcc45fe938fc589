"""docs/security.md and the README make the same promises, and every test the page names exists."""
import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROMISES = re.compile(r"<!-- promises -->\n(.*?)<!-- /promises -->", re.S)
NAMED_TEST = re.compile(r"`(tests/[\w/]+\.py)(?:::(\w+))?`")


def promises(path: Path) -> str:
    found = PROMISES.findall(path.read_text())
    assert len(found) == 1, f"{path.name}: one promises block expected, found {len(found)}"
    return found[0]


def test_the_readme_makes_the_promises_of_the_threat_model_word_for_word():
    page = promises(REPO / "docs" / "security.md")
    assert page.count("\n- ") + page.startswith("- ") >= 8
    assert promises(REPO / "README.md") == page


def test_every_test_the_threat_model_names_exists():
    named = NAMED_TEST.findall((REPO / "docs" / "security.md").read_text())
    assert len(named) > 40
    defined: dict[str, set[str]] = {}
    for file, name in named:
        path = REPO / file
        assert path.is_file(), file
        if file not in defined:
            tree = ast.parse(path.read_text())
            defined[file] = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
        assert not name or name in defined[file], f"{file}::{name} is not defined"
