"""Model identities: the names the pipeline writes into predictions (exact strings, never to
change) and the file names, all derived from (family, classifier)."""

from __future__ import annotations

import pytest

from radfusion.families import DEEP_CLASSIFIER, FAMILIES, ModelId


def test_deep_model_names_are_the_papers():
    # bundles, reports and resumed runs key on these names
    assert ModelId.network("1ch", 18).name == "1ch_ResNet18"
    assert ModelId.network("2ch", 101).name == "2ch_ResNet101"
    assert ModelId.network("1ch", 18).classifier == DEEP_CLASSIFIER == "ResNet"


def test_file_names_are_those_of_earlier_runs_and_bundles():
    assert ModelId("radiomics", "XGBoost").file_stem == "XGBoost"
    assert ModelId.single("stacked").file_stem == "LR"
    assert ModelId.single("clinical").file_stem == "ClinicalLR"


def test_a_recorded_name_gives_back_its_identity():
    for model in (
        ModelId("radiomics", "LR"),
        ModelId("merged2", "SVM"),
        ModelId.network("2ch", 34),
        ModelId.single("stacked"),
        ModelId.single("clinical"),
    ):
        back = ModelId.from_record(model.family, model.classifier, model.name)
        assert back == model and back.name == model.name


@pytest.mark.parametrize(
    ("family", "classifier", "name"),
    [
        ("radiomics", "LR", "Radiomics-RF"),  # another classifier's name
        ("merged1", "LR", "Radiomics-LR"),  # another family's
        ("1ch", "ResNet", "1ch_ResNet"),  # no depth
        ("1ch", "ResNet", "2ch_ResNet18"),
        ("clinical", "LR", "Stacked"),
        ("unknown", "LR", "Unknown-LR"),
    ],
)
def test_a_name_that_is_not_the_models_is_refused(family, classifier, name):
    with pytest.raises(ValueError, match="is not the name of"):
        ModelId.from_record(family, classifier, name)


def test_the_depth_names_a_network_but_is_not_part_of_its_identity():
    # a score-level model reads an arm by (family, classifier), as bundle.json records it
    assert ModelId.network("1ch", 18) == ModelId("1ch", DEEP_CLASSIFIER)
    assert hash(ModelId.network("1ch", 18)) == hash(ModelId("1ch", DEEP_CLASSIFIER))
    with pytest.raises(ValueError, match="depth"):
        _ = ModelId("1ch", DEEP_CLASSIFIER).name
    assert sorted(ModelId(f, "LR") for f in reversed(FAMILIES))[0].family == "1ch"
