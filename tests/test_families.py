"""Model names the pipeline writes into predictions: exact strings, never to change."""

from __future__ import annotations

from radfusion.families import deep_model_name


def test_deep_model_names_are_the_papers():
    # bundles, reports and resumed runs key on these names
    assert deep_model_name("1ch", 18) == "1ch_ResNet18"
    assert deep_model_name("2ch", 101) == "2ch_ResNet101"
