"""The identities of results (`flowam_fast.identity`): the demo's stamp and the model
description read the stored forms of every version, compare by their identity fields, and
refuse what a newer package wrote."""
import json

import pytest

from flowam_fast.am.flows import ModelDescription, describe_model
from flowam_fast.pipelines.demo import DEMO_RECIPE, DemoConfig


def test_the_demo_stamp_reads_every_stored_form():
    assert DemoConfig.from_json('{"version": 2}') == DemoConfig(recipe=2, model="pointnet")  # before "recipe"
    assert DemoConfig.from_json('{"version": 2, "model": "dgcnn"}') == DemoConfig(recipe=2, model="dgcnn")
    now = DemoConfig(model="dgcnn")
    assert now.recipe == DEMO_RECIPE and json.loads(now.to_json()) == {"model": "dgcnn", "recipe": DEMO_RECIPE}
    assert json.loads(DemoConfig().to_json()) == {"recipe": DEMO_RECIPE}  # the PointNet's: model left out
    assert DemoConfig.from_json(now.to_json()).matches(now) and now.matches(now.to_json())
    assert DemoConfig(recipe=1).changes(now) == ["recipe", "model"] and not now.matches('{"version": 1}')
    with pytest.raises(ValueError, match="version 9"):
        DemoConfig.from_json('{"version": 9, "recipe": 2}')
    with pytest.raises(ValueError, match="fields unknown to this version \\(colour\\)"):
        DemoConfig.from_json('{"recipe": 2, "colour": "red"}')
    with pytest.raises(ValueError, match="not a stored demo stamp"):
        DemoConfig.from_json("[]")


def test_the_model_description_keeps_its_stored_form_and_implies_the_first_taps():
    from flowam_fast.models import DGCNN, PointNet

    pn = PointNet(num_classes=3, width=0.125)
    text = describe_model(pn)
    assert json.loads(text) == {"class": "PointNet", "feature_transform": True, "num_classes": 3,
                                "parameters": sum(p.numel() for p in pn.parameters()), "tap_version": 2}
    desc = ModelDescription.from_json(text)
    assert desc.arch == "PointNet" and desc.tap_version == PointNet.tap_version and desc.to_json() == text
    old = json.loads(text)
    del old["tap_version"]  # as written before taps had versions
    assert ModelDescription.from_json(json.dumps(old)).tap_version == 1
    dg = describe_model(DGCNN(num_classes=3, k=4, emb_dims=32, width=0.125))
    # A model without taps of its own writes no tap version; the absence reads as the first taps,
    # which only a model that has taps versions compares (`Flows.check_taps`).
    assert "tap_version" not in json.loads(dg) and ModelDescription.from_json(dg).arch == "DGCNN"
