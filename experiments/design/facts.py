"""What a study's identities hold from outside its config: a value found once where the study starts
(`experiments.preflight.facts.study_facts`: git, split files, data content) and handed to
`design.identity`, which reads no file and runs no program."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StudyFacts:
    """`code`: the code version (git commit, '+dirty' with changes, 'unknown' outside git); `data`: the
    digest of the `data` settings these facts describe (`identity.data_settings`); `splits`: the
    content of `data.splits` (`sha256:<hex>`; the path itself while it cannot be read; "" when unset);
    `content`: a real source's content (`DomainData.fingerprint`; "" for synthetic or unreadable data)."""
    code: str
    data: str
    splits: str = ""
    content: str = ""
