"""Report: what a finished study's results say.

Owns metrics, paired-bootstrap intervals, the paper's tables, plots, the paper's findings, the
defences section, the query attacks' tables, curves and finding, and the report folder
(`write_report`: files only, from what the study read back; the study logs the folder and tags). May import `design`, `store` and the library packages.
"""
from .metrics import auc
from .outputs import with_factors, write_report
from .tables import markdown_table

__all__ = ["auc", "markdown_table", "with_factors", "write_report"]
