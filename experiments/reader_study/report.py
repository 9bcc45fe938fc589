"""The reader study's report folder: the answers, the rate tables, the figure and a Markdown
summary (the same files go to the MLflow run)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..report.tables import markdown_table
from .analysis import by_reader, by_setting, chance_budgets
from .figure import save_detection_figure


def _shown(table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    shown = table[keys].copy()
    shown["trials"] = table["trials"]
    shown["detected %"] = [f"{100 * r:.1f}" for r in table["rate"]]
    shown["95% CI"] = [f"[{100 * lo:.1f}, {100 * hi:.1f}]" for lo, hi in zip(table["lo"], table["hi"])]
    shown["verdict"] = table["verdict"]
    shown["no idea"] = table["no_idea"]
    return shown


def budget_line(attack: str, budget: float | None) -> str:
    return (f"{attack}: at chance up to eps {budget:g}" if budget is not None
            else f"{attack}: seen at its smallest eps (no budget at chance)")


def write_report(answers: pd.DataFrame, folder: Path) -> tuple[str, dict]:
    """Write answers.csv, by_reader.csv, by_setting.csv, detection_vs_eps.png and readers.md under
    `folder`; return the Markdown summary and the analysis (`settings`, `readers`, `budgets`)."""
    folder.mkdir(parents=True, exist_ok=True)
    settings, readers = by_setting(answers), by_reader(answers)
    budgets = chance_budgets(settings)
    answers.to_csv(folder / "answers.csv", index=False)
    settings.to_csv(folder / "by_setting.csv", index=False)
    readers.to_csv(folder / "by_reader.csv", index=False)
    if not settings.empty:
        save_detection_figure(settings, budgets, folder / "detection_vs_eps.png")
    reader_table = _shown(readers, ["reader"])
    reader_table["consistency %"] = ["–" if pd.isna(c) else f"{100 * c:.0f} (of {n})"
                                     for c, n in zip(readers["consistency"], readers["repeats"])]
    text = "\n".join([
        f"Reader study: {len(answers)} answers from {answers['reader'].nunique()} reader(s) "
        "(two-alternative forced choice; chance = 50 %; Wilson 95 % intervals; first presentations only)", "",
        "Per attack setting:", "", markdown_table(_shown(settings, ["attack", "eps"])),
        "Per reader:", "", markdown_table(reader_table),
        "Largest epsilon at chance:", "", *(f"- {budget_line(a, b)}" for a, b in budgets.items()), ""])
    (folder / "readers.md").write_text(text)
    return text, {"settings": settings, "readers": readers, "budgets": budgets}
