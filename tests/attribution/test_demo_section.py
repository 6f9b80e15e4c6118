"""The demo report's section on local explanations: its Markdown and the files it links."""
import re

import numpy as np
import torch

from flowam_fast.attribution import AttributionStore
from flowam_fast.data import generate_shapes
from flowam_fast.data.modelnet40 import ModelNet40
from flowam_fast.models import PointNet
from flowam_fast.pipelines.attribute import DEFAULT_METHODS, demo_section
from tests.helpers import randomize


def test_demo_section_links_its_sheet_and_curves(tmp_path):
    generate_shapes(tmp_path / "data", train_per_class=1, test_per_class=3, num_points=64, classes=["cube", "cone"])
    test_set = ModelNet40(tmp_path / "data", "test", num_points=64)
    torch.manual_seed(0)
    model = randomize(PointNet(2, width=0.125), seed=5)
    text = demo_section(model, test_set, tmp_path / "attribution", per_class=2)
    assert text.startswith("## Local explanations\n") and "4 test clouds (2 per class)" in text
    rows = [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ") and "method" not in line]
    assert rows == list(DEFAULT_METHODS)
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert links == ["attribution/curves.png", "attribution/attribution.png"]
    assert all((tmp_path / link).read_bytes()[:4] == b"\x89PNG" for link in links)
    # Its attributions are of each class's first two test clouds.
    store = AttributionStore.load(tmp_path / "attribution" / "attribution.h5")
    picked = [i for c in (0, 1) for i in np.nonzero(test_set.labels == c)[0][:2]]
    assert np.array_equal(store.points, test_set.points[sorted(picked)])
