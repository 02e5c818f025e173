"""The stages of a study, in the order they run; one module declares each.

validate -> split -> radiomics -> deep_1ch -> deep_2ch -> fusion -> stacking ->
evaluation -> report -> bundle. Each module declares its stage as a
:class:`~radfusion.pipeline.context.Stage`: what its result depends on (the stage key's
parts, upstream stages included), the function doing the work and the files it writes.
Each stage reads only what the stages before it wrote (see :mod:`radfusion.layout`).
"""

from radfusion.pipeline.context import Stage
from radfusion.pipeline.stages.bundle import BUNDLE
from radfusion.pipeline.stages.deep import DEEP_1CH, DEEP_2CH
from radfusion.pipeline.stages.evaluation import EVALUATION, evaluate
from radfusion.pipeline.stages.fusion import FUSION
from radfusion.pipeline.stages.radiomics import RADIOMICS
from radfusion.pipeline.stages.report import REPORT
from radfusion.pipeline.stages.split import SPLIT
from radfusion.pipeline.stages.stacking import STACKING
from radfusion.pipeline.stages.validate import VALIDATE, validate_or_raise

#: Every stage, in the order a study runs them.
STAGES: tuple[Stage, ...] = (
    VALIDATE,
    SPLIT,
    RADIOMICS,
    DEEP_1CH,
    DEEP_2CH,
    FUSION,
    STACKING,
    EVALUATION,
    REPORT,
    BUNDLE,
)

__all__ = ["STAGES", "Stage", "evaluate", "validate_or_raise"]
