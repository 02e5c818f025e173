"""Minimum sample size for developing a prediction model with a binary outcome (Riley et al.).

The closed-form criteria of Riley RD et al., "Minimum sample size for developing a
multivariable prediction model: Part II - binary and time-to-event outcomes", Stat Med
2019;38:1276-1296 (doi 10.1002/sim.7992), summarised for users in Riley RD et al.,
"Calculating the sample size required for developing a clinical prediction model", BMJ
2020;368:m441. Written here from the papers' equations (no code taken from any
implementation). A development set of ``n`` participants with ``p`` candidate predictor
parameters should give:

(i) small optimism: an expected uniform shrinkage factor ``S >= 0.9``::

        n = p / ((S - 1) * ln(1 - R2_CS / S))

(ii) a small difference (<= 0.05) between the apparent and the optimism-adjusted Nagelkerke
     R²: criterion (i) with ``S = R2_CS / (R2_CS + delta * max(R2_CS))``;

(iii) a precise estimate of the overall risk (margin ``m`` = 0.05 with 95% confidence)::

        n = (1.96 / m)² * phi * (1 - phi)

and the required number of events and events per candidate predictor parameter (EPP) follow
from the largest ``n``. ``max(R2_CS) = 1 - exp(2 * lnL_null / n)`` with ``lnL_null / n =
phi ln(phi) + (1 - phi) ln(1 - phi)``, the largest Cox-Snell R² a model can reach at
outcome proportion ``phi``. Without an anticipated R² from earlier models, the BMJ paper
suggests a conservative value: 15% of ``max(R2_CS)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = [
    "DEFAULT_R2_FRACTION",
    "RileySampleSize",
    "max_r2_cs",
    "riley_binary",
]

#: Anticipated Cox-Snell R² as a fraction of its maximum when no earlier model informs it
#: (Riley et al., BMJ 2020: a conservative 15%).
DEFAULT_R2_FRACTION = 0.15
_Z = 1.96  # two-sided 95% normal quantile, as the papers write it


@dataclass(frozen=True)
class RileySampleSize:
    """The minimum development-set size by each criterion, and what it implies.

    ``n_*`` are participants (rounded up), ``events`` and ``epp`` follow from ``n_required``.
    """

    parameters: int
    prevalence: float
    r2_cs: float
    max_r2_cs: float
    shrinkage: float
    shrinkage_ii: float  # the shrinkage criterion (ii) implies
    n_shrinkage: int  # criterion (i)
    n_r2_difference: int  # criterion (ii)
    n_overall_risk: int  # criterion (iii)

    @property
    def n_required(self) -> int:
        """Participants that meet all three criteria."""
        return max(self.n_shrinkage, self.n_r2_difference, self.n_overall_risk)

    @property
    def events(self) -> float:
        """Outcome events among ``n_required`` participants at the anticipated prevalence."""
        return self.n_required * self.prevalence

    @property
    def epp(self) -> float:
        """Events per candidate predictor parameter at ``n_required``."""
        return self.events / self.parameters

    def unmet(self, n: int) -> list[str]:
        """The criteria ("i", "ii", "iii") a development set of ``n`` participants misses."""
        needed = {"i": self.n_shrinkage, "ii": self.n_r2_difference, "iii": self.n_overall_risk}
        return [k for k, v in needed.items() if n < v]


def _check_prevalence(prevalence: float) -> float:
    phi = float(prevalence)
    if not 0 < phi < 1:
        raise ValueError(f"prevalence must lie strictly between 0 and 1, got {prevalence!r}")
    return phi


def max_r2_cs(prevalence: float) -> float:
    """The largest Cox-Snell R² a binary-outcome model can reach at outcome proportion ``phi``.

    Parameters
    ----------
    prevalence : float
        Outcome proportion in (0, 1).

    Returns
    -------
    float
        ``1 - (phi^phi (1 - phi)^(1 - phi))²`` (Riley et al., Stat Med 2019, eq. 23).
    """
    phi = _check_prevalence(prevalence)
    loglik_per_case = phi * math.log(phi) + (1 - phi) * math.log(1 - phi)
    return 1 - math.exp(2 * loglik_per_case)


def _n_for_shrinkage(parameters: int, r2_cs: float, shrinkage: float) -> int:
    # Rounded to 9 decimals before the ceiling so that an n that is an exact integer in the
    # papers' arithmetic is not pushed up by one by floating-point noise.
    n = parameters / ((shrinkage - 1) * math.log(1 - r2_cs / shrinkage))
    return math.ceil(round(n, 9))


def riley_binary(
    *,
    parameters: int,
    prevalence: float,
    r2_cs: float | None = None,
    r2_fraction: float = DEFAULT_R2_FRACTION,
    shrinkage: float = 0.9,
    r2_difference: float = 0.05,
    margin: float = 0.05,
) -> RileySampleSize:
    """Riley et al.'s minimum sample size for a binary-outcome prediction model.

    Parameters
    ----------
    parameters : int
        Candidate predictor parameters considered for inclusion (before any selection).
    prevalence : float
        Anticipated outcome proportion in (0, 1).
    r2_cs : float, optional
        Anticipated (optimism-adjusted) Cox-Snell R². Default: ``r2_fraction`` of
        :func:`max_r2_cs`.
    r2_fraction : float, default 0.15
        Used when ``r2_cs`` is not given (the BMJ 2020 paper's conservative choice).
    shrinkage : float, default 0.9
        Target expected shrinkage factor of criterion (i).
    r2_difference : float, default 0.05
        Largest acceptable gap between apparent and adjusted Nagelkerke R² (criterion ii).
    margin : float, default 0.05
        Absolute margin of error of the overall risk (criterion iii), 95% confidence.

    Returns
    -------
    RileySampleSize

    Raises
    ------
    ValueError
        A value outside its range, or an R² that no model can reach at this prevalence.
    """
    if int(parameters) < 1:
        raise ValueError(f"parameters must be at least 1, got {parameters!r}")
    phi = _check_prevalence(prevalence)
    top = max_r2_cs(phi)
    if r2_cs is None:
        if not 0 < r2_fraction < 1:
            raise ValueError(f"r2_fraction must lie in (0, 1), got {r2_fraction!r}")
        r2_cs = r2_fraction * top
    if not 0 < r2_cs < top:
        raise ValueError(
            f"anticipated Cox-Snell R² {r2_cs:g} must lie in (0, {top:.4f}), the maximum at "
            f"prevalence {phi:g}"
        )
    if not r2_cs < shrinkage < 1:
        raise ValueError(f"shrinkage must lie in (R²={r2_cs:g}, 1), got {shrinkage!r}")
    s_ii = r2_cs / (r2_cs + r2_difference * top)
    n_iii = math.ceil(round((_Z / margin) ** 2 * phi * (1 - phi), 9))
    return RileySampleSize(
        parameters=int(parameters),
        prevalence=phi,
        r2_cs=float(r2_cs),
        max_r2_cs=top,
        shrinkage=float(shrinkage),
        shrinkage_ii=s_ii,
        n_shrinkage=_n_for_shrinkage(int(parameters), r2_cs, shrinkage),
        n_r2_difference=_n_for_shrinkage(int(parameters), r2_cs, s_ii),
        n_overall_risk=n_iii,
    )
