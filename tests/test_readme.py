"""The README is a user's reference: every local link and picture in it points at a file that
exists, every figure it quotes links to a stored report, and it stays short."""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
#: [text](target) and ![alt](target), with an optional "title"; targets without a scheme are local.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REPORTS = ROOT / "benchmarks" / "results"


def local_targets(text: str):
    for target in LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
            continue
        yield target.split("#", 1)[0]


def test_link_pattern_finds_links_and_pictures():
    text = "see [the report](a/b.md#x), ![pic](c.png \"t\"), [web](https://x.org), [here](#sec)"
    assert list(local_targets(text)) == ["a/b.md", "c.png"]


@pytest.mark.parametrize("target", sorted(set(local_targets(README.read_text()))))
def test_readme_link_exists(target):
    assert (ROOT / target).exists(), f"README links to {target}, which is not in the repository"


def test_readme_is_a_short_reference():
    text = README.read_text()
    assert len(text.splitlines()) <= 300
    for word in (r"\bsessions?\b", r"issue #\d+", r"this VM", r"\blent\b"):
        assert not re.search(word, text, re.IGNORECASE), f"the README speaks of how it is developed: {word}"


def test_readme_figures_link_to_stored_reports():
    """Each headline table is followed by a link to the report under benchmarks/results/ that
    it comes from, and those reports name their machine and the command that reproduces them."""
    reports = [t for t in local_targets(README.read_text()) if t.startswith("benchmarks/results/") and t.endswith(".md")]
    assert reports, "the README links to no stored report"
    for target in reports:
        text = (ROOT / target).read_text()
        assert re.search(r"machine|cpu", text, re.IGNORECASE), f"{target} does not name its machine"
        assert "command" in text.lower() or "reproduce" in text.lower(), f"{target} gives no command to reproduce it"
