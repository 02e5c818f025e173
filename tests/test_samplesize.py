"""Riley et al.'s minimum sample size for a binary-outcome prediction model, checked against the
worked examples published with the criteria, and as the report states it."""

from __future__ import annotations

import math

import pytest

from radfusion.stats.samplesize import DEFAULT_R2_FRACTION, max_r2_cs, riley_binary


def test_chagas_worked_example_of_riley_2019():
    # Riley RD et al. Stat Med 2019;38:1276-1296 (doi 10.1002/sim.7992), the worked example
    # of a diagnostic model for Chagas disease: anticipated R2_CS 0.288, 24 candidate
    # predictor parameters, prevalence 0.174 -> at least 662 participants and 115 events,
    # an EPP of 4.8 (the abstract: "requires an EPP of at least 4.8"); criterion (ii) binds,
    # (i) asks 623 and (iii) 221.
    r = riley_binary(parameters=24, prevalence=0.174, r2_cs=0.288)
    assert (r.n_shrinkage, r.n_r2_difference, r.n_overall_risk) == (623, 662, 221)
    assert r.n_required == 662
    assert math.ceil(r.events) == 116 and round(r.events) == 115
    assert round(r.epp, 1) == 4.8
    assert r.shrinkage_ii == pytest.approx(0.905, abs=5e-4)
    assert r.max_r2_cs == pytest.approx(0.6032, abs=5e-5)


def test_max_r2_of_the_bmj_paper():
    # Riley RD et al. BMJ 2020;368:m441: with an outcome proportion of 0.05 the largest
    # Cox-Snell R2 is 0.33; at 0.5 it is 0.75 (1 - 0.25).
    assert max_r2_cs(0.05) == pytest.approx(0.33, abs=0.005)
    assert max_r2_cs(0.5) == pytest.approx(0.75)
    assert max_r2_cs(0.2) == pytest.approx(max_r2_cs(0.8))


def test_overall_risk_criterion_is_the_margin_formula():
    # (1.96 / 0.05)^2 * 0.5 * 0.5 = 384.16 -> 385, the textbook sample size for a proportion.
    r = riley_binary(parameters=1, prevalence=0.5, r2_cs=0.1)
    assert r.n_overall_risk == 385
    assert riley_binary(parameters=1, prevalence=0.5, r2_cs=0.1, margin=0.1).n_overall_risk == 97


def test_default_r2_is_fifteen_percent_of_the_maximum_and_scales_with_predictors():
    r = riley_binary(parameters=10, prevalence=0.3)
    assert r.r2_cs == pytest.approx(DEFAULT_R2_FRACTION * max_r2_cs(0.3))
    # With R2 = 15% of the maximum, (ii) asks S = 0.15 / 0.20 = 0.75: (i) is the binding one.
    assert r.shrinkage_ii == pytest.approx(0.75)
    assert r.n_required == r.n_shrinkage
    big = riley_binary(parameters=100, prevalence=0.3)
    assert big.n_shrinkage == pytest.approx(10 * r.n_shrinkage, abs=10)
    assert big.unmet(r.n_required) == ["i", "ii"]
    assert big.unmet(big.n_required) == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"parameters": 0, "prevalence": 0.2},
        {"parameters": 5, "prevalence": 0.0},
        {"parameters": 5, "prevalence": 1.0},
        {"parameters": 5, "prevalence": 0.05, "r2_cs": 0.5},  # above max R2 (0.33)
        {"parameters": 5, "prevalence": 0.2, "r2_cs": 0.1, "shrinkage": 1.0},
    ],
)
def test_impossible_inputs_are_refused(kwargs):
    with pytest.raises(ValueError):
        riley_binary(**kwargs)
