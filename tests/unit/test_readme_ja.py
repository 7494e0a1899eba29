"""README.ja.md keeps step with README.md: a section for each of its sections, and each of its commands."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
COMMAND = re.compile(r"^(?:\$ )?(?:\./run|python|docker|sudo|pip|for |export |\.ci/)")


def sections(text: str) -> list[str]:
    return [line for line in text.splitlines() if re.match(r"^#{1,3} ", line)]


def commands(text: str) -> set[str]:
    """The commands the page shows: lines of its indented code blocks, and code spans, that run something
    (comments and the prompt's `$ ` left out)."""
    found, prose, fenced = set(), [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and not line.startswith("    "):
            prose.append(line)
        if line.startswith("    ") and not fenced:
            for part in re.split(r" {3,}", line.strip()):  # two terminals side by side
                command = re.sub(r"\s+#.*$", "", part).strip().removeprefix("$ ")
                if COMMAND.match(command):
                    found.add(command)
    for span in re.findall(r"`([^`]+)`", "\n".join(prose)):
        span = " ".join(span.split())  # a span wrapped over two lines
        if COMMAND.match(span):
            found.add(span.removeprefix("$ "))
    return found


def test_the_japanese_guide_has_a_section_for_each_of_the_readmes():
    english = sections((ROOT / "README.md").read_text())
    japanese = sections((ROOT / "README.ja.md").read_text())
    assert [h.split(" ")[0] for h in english] == [h.split(" ")[0] for h in japanese], (english, japanese)


def test_the_japanese_guide_shows_every_command_of_the_readme():
    english = commands((ROOT / "README.md").read_text())
    japanese = commands((ROOT / "README.ja.md").read_text())
    assert len(english) > 20
    assert not english - japanese, sorted(english - japanese)
