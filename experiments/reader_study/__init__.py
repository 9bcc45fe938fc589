"""A blinded two-alternative forced-choice reader study of a study's stored adversarial sets: can a
person see which of two images was attacked? (`medtransfer readers`; docs/reader_study.md)"""
from .analysis import by_reader, by_setting, chance_budgets, wilson
from .plan import ReaderPlan, StoredSet, Trial

__all__ = ["ReaderPlan", "StoredSet", "Trial", "by_reader", "by_setting", "chance_budgets", "wilson"]
