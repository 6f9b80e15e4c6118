"""`flowam-fast explain` with an objective: --channel LAYER --targets, and --objective EXPR,
the same explanations as from Python, and the errors a user meets."""
import numpy as np

from flowam_fast.am.engine import AM
from flowam_fast.am.explanations import Explanations
from flowam_fast.am.flows import Flows
from flowam_fast.cli import main
from flowam_fast.models import load_checkpoint
from flowam_fast.objectives import channel_prior, neuron

from tests.cli.test_explain_flows import _tiny_model_and_flows


def test_channels_and_objectives_from_the_command_line(tmp_path, capsys):
    data, ckpt, flows = _tiny_model_and_flows(tmp_path)
    out = tmp_path / "units.h5"
    base = ["explain", "--model", str(ckpt), "--flows", str(flows), "--seeds", "0", "--steps", "3", "--quiet"]
    assert main(base + ["--channel", "feat.act3", "--targets", "0-2,7", "--out", str(out),
                        "--png", str(tmp_path / "u.png"), "--html", str(tmp_path / "u.html")]) == 0
    e = Explanations.load(out)
    assert e.target_layer == "feat.act3" and sorted(e.classes.tolist()) == [0, 1, 2, 7]
    assert (tmp_path / "u.png").stat().st_size > 1000
    page = (tmp_path / "u.html").read_text()  # the viewer's labels, escaped inside its JSON
    assert "channel 7\\u003c\\u002fb\\u003e of feat.act3" in page and "predicted class" in page
    assert "explanations of channels of feat.act3" in capsys.readouterr().out
    # The same run from Python: the same explanations, bit for bit.
    model, f = load_checkpoint(ckpt), Flows.load(flows)
    py = AM(model, channel_prior("feat.act3"), flows=f, steps=3, quiet=True).run([0, 1, 2, 7], [0])
    assert py.config == e.config and np.array_equal(py.sorted().points, e.sorted().points)

    expr = tmp_path / "expr.h5"
    assert main(base + ["--objective", "neuron('feat.act3', 5) + 0.5 * continuity()", "--targets", "4",
                        "--out", str(expr)]) == 0
    again = AM(model, neuron("feat.act3", 5) + 0.5 * __import__("flowam_fast").objectives.continuity(), flows=f,
               steps=3, quiet=True).run([4], [0])
    assert np.array_equal(Explanations.load(expr).points, again.points)

    capsys.readouterr()
    for extra, message in [(["--channel", "feat.act3", "--targets", "999"], "channel 999 of layer 'feat.act3': it has"),
                           (["--channel", "nope", "--targets", "0"], "unknown layer names"),
                           (["--objective", "open('x')"], "not allowed"),
                           (["--objective", "logit()", "--method", "vanilla"], "give one of --method, --objective"),
                           (["--objective", "logit()", "--flow-weight", "3"], "write them into --objective"),
                           (["--channel", "feat.act3", "--targets", "0", "--data", str(data), "--png",
                             str(tmp_path / "v.png")], "the targets here are channels")]:
        assert main(base + extra + ["--out", str(tmp_path / "bad.h5")]) == 1, extra
        assert message in capsys.readouterr().err, extra
