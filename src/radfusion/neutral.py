"""The one list of settings that do not change a study's results.

A setting listed here changes how or where the work runs (worker processes, caches, the
extraction cluster, the training device), never a number the study writes. Everything
that decides what a stage redoes or keeps reads this list, so they cannot disagree:

- the stage keys (:mod:`radfusion.pipeline.stages`): changing a listed setting reruns
  nothing; changing any other setting reruns the stages that read it
  (``tests/test_stage_keys.py`` checks both, field by field);
- a deep arm's training identity (:func:`radfusion.deep.resume.training_settings`): a
  checkpoint resumes under other values of these;
- a bundle (:func:`radfusion.bundle.load_bundle`): the machine-bound ones (paths and
  servers of the training machine) are dropped when it is loaded elsewhere.

Not listed, though they only affect speed on a CPU: ``deep.amp`` and ``deep.compile``
(mixed precision and compiled kernels give a GPU other last digits, which training
amplifies), and ``deep.input_path`` (another batching of the samples).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["RESULT_NEUTRAL", "NeutralSetting", "neutral_names", "without_neutral"]


@dataclass(frozen=True)
class NeutralSetting:
    """A config setting that does not change results.

    Attributes
    ----------
    section, name : str
        ``StudyConfig.<section>.<name>``.
    why : str
        Why results do not depend on it.
    machine : bool
        It names a place of the training machine (a folder, a server): a bundle loaded
        elsewhere drops it.
    """

    section: str
    name: str
    why: str
    machine: bool = False


#: Every result-neutral setting of :class:`radfusion.config.StudyConfig`.
RESULT_NEUTRAL: tuple[NeutralSetting, ...] = (
    NeutralSetting("radiomics", "n_jobs", "cases are extracted one per process, alike"),
    NeutralSetting("radiomics", "dask_scheduler", "where the same extraction runs", machine=True),
    NeutralSetting(
        "radiomics", "cache_dir", "a cache keyed by file contents and settings", machine=True
    ),
    NeutralSetting(
        "models",
        "n_jobs",
        "every search fit is seeded and summed alike in any worker (tests/test_reproducibility.py)",
    ),
    NeutralSetting("deep", "device", "which device trains; a checkpoint resumes on another one"),
    NeutralSetting(
        "deep", "num_workers", "loader processes; every sample's randomness is seeded by sample"
    ),
    NeutralSetting(
        "deep", "eval_batch_size", "batching of the per-epoch validation pass (no gradients)"
    ),
)


def neutral_names(section: str) -> frozenset[str]:
    """The result-neutral settings of one config section."""
    return frozenset(s.name for s in RESULT_NEUTRAL if s.section == section)


def without_neutral(cfg: dict[str, Any]) -> dict[str, Any]:
    """A config dump (``model_dump(mode="json")``, or one section's under its name) with the
    result-neutral settings left out: the form stage keys hash."""
    return {
        section: (
            {k: v for k, v in value.items() if k not in neutral_names(section)}
            if isinstance(value, dict)
            else value
        )
        for section, value in cfg.items()
    }
