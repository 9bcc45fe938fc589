"""Pre-flight: everything known before any work starts.

Owns the up-front checks (`require_ready`: weights, checkpoints, data roots, tracking server,
devices, disk), the outline of a study's work from its config, `medtransfer plan` (`study_plan`)
and the ImageNet weight files (`medtransfer weights`). May import `design`, `store`, `execution`
and the library packages.
"""
from .checks import require_ready
from .plan import StudyPlan, study_plan

__all__ = ["StudyPlan", "require_ready", "study_plan"]
