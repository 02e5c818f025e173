"""The study as resumable stages over a run folder."""

from radfusion.pipeline.run import RunFolder
from radfusion.pipeline.study import STAGES, run_study

__all__ = ["STAGES", "RunFolder", "run_study"]
