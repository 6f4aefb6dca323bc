"""The docs a newcomer reads: README.md stays short, no link in it or in docs/ is broken, and
docs/development.md maps every module.

Every relative link and image in README.md and docs/*.md must point to a file or folder that
exists, and every ``#anchor`` to a heading of the target page, slugged as GitHub does.  Links
with a scheme (https:, mailto: ...) are not fetched.  The map is the "## Layout" section of
docs/development.md: each module appears there, outside code blocks, as its path from the
repository root in backticks (`streamer/live/frames.py`); the packages' __init__.py files are
not listed.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parent.parent
README_MAX_LINES = 260

FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
# [text](target) and ![alt](target); the text may hold one level of brackets or code spans.
INLINE_LINK = re.compile(r"!?\[((?:[^\[\]]|\[[^\]]*\])*)\]\(\s*(<[^>]*>|[^)\s]+)(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*(<[^>]*>|\S+)")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
MAPPED_MODULE = re.compile(r"`(streamer/[\w/]+\.py)`")
MAP_HEADING = "Layout"


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def prose_lines(text: str) -> list[tuple[int, str]]:
    """(line number, line) of the lines outside fenced code blocks."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            lines.append((number, line))
    return lines


def links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every inline link, image and reference definition."""
    found = []
    for number, line in prose_lines(text):
        bare = INLINE_CODE.sub(lambda m: " " * len(m.group(0)), line)
        for match in INLINE_LINK.finditer(bare):
            found.append((number, match.group(2).strip("<>")))
        match = REFERENCE_DEF.match(bare)
        if match:
            found.append((number, match.group(1).strip("<>")))
    return found


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text, lower case, punctuation gone, spaces as hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading: its text
    text = re.sub(r"<[^>]+>", "", text)  # inline HTML
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)  # keeps letters, digits, _ and -, as GitHub does
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor GitHub gives the headings of a markdown file (a repeated one gets -1, -2 ...)."""
    seen: dict[str, int] = {}
    result = set()
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        result.add(base if count == 0 else f"{base}-{count}")
    return result


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def broken_links(path: Path) -> list[str]:
    """One line for each relative link of the file whose target or anchor does not exist."""
    problems = []
    for number, target in links(path.read_text(encoding="utf-8")):
        where = f"{_shown(path)}:{number}"
        if SCHEME.match(target) or target.startswith("//"):
            continue  # a web address: not fetched
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / unquote(file_part)).resolve() if file_part else path
        if not resolved.exists():
            problems.append(f"{where}: {target!r}: no such file {resolved}")
            continue
        if anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            problems.append(f"{where}: {target!r}: no heading with anchor #{anchor} in {resolved.name}")
    return problems


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(path):
    problems = broken_links(path)
    assert not problems, "broken links:\n" + "\n".join(problems)


def test_readme_is_short():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail into docs/"


def test_readme_shows_the_preview_and_links_every_doc():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = {target.partition("#")[0] for _, target in links(readme)}
    assert "docs/preview.png" in targets
    for doc in sorted((ROOT / "docs").glob("*.md")):
        assert f"docs/{doc.name}" in targets, f"README.md does not link docs/{doc.name}"


def test_every_doc_the_code_names_exists():
    """A comment, docstring or config line that says "see docs/<page>.md" points at a page of the
    repository, not at one that was renamed or never written."""
    named = re.compile(r"\bdocs/[\w.-]+\.(?:md|png)\b")
    places = [ROOT / "config.yaml", ROOT / "pyproject.toml", *sorted((ROOT / "systemd").iterdir())]
    for folder in ("streamer", "tests", "bench"):
        places += sorted((ROOT / folder).rglob("*.py"))
    missing = [
        f"{_shown(path)}:{number}: {name}"
        for path in places
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        for name in named.findall(line)
        if not (ROOT / name).exists()
    ]
    assert not missing, "these name a doc that does not exist:\n" + "\n".join(missing)


def package_modules(root: Path, package: str = "streamer") -> set[str]:
    """Every module of the package, as its path from root (``streamer/live/frames.py``)."""
    return {
        path.relative_to(root).as_posix()
        for path in (root / package).rglob("*.py")
        if path.name != "__init__.py" and "__pycache__" not in path.parts
    }


def mapped_modules(doc: Path, heading: str = MAP_HEADING) -> set[str]:
    """The module paths in backticks in the doc's "## heading" section, outside code blocks."""
    found, inside = set(), False
    for _, line in prose_lines(doc.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if match and len(match.group(1)) <= 2:
            inside = match.group(2) == heading
        elif inside:
            found.update(MAPPED_MODULE.findall(line))
    return found


def map_problems(root: Path, doc: Path) -> list[str]:
    """One line for each module missing from the doc's map, and each entry naming no module."""
    modules, mapped = package_modules(root), mapped_modules(doc)
    where = f"{_shown(doc)} (## {MAP_HEADING})"
    return [f"{name}: missing from the map in {where}" for name in sorted(modules - mapped)] + [
        f"{name}: in the map in {where}, but there is no such module" for name in sorted(mapped - modules)
    ]


def test_the_module_map_names_every_module():
    problems = map_problems(ROOT, ROOT / "docs" / "development.md")
    assert not problems, "the map of the modules is out of date:\n" + "\n".join(problems)


def test_the_map_check_catches_missing_and_stale_entries(tmp_path):
    """Control: a module that is not in the map, one named only in a code block or in another
    section, and an entry for a module that is gone are each reported; __init__.py is not."""
    for name in ("__init__.py", "a.py", "b.py", "sub/__init__.py", "sub/c.py", "sub/d.py"):
        (tmp_path / "streamer" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "streamer" / name).write_text("")
    doc = tmp_path / "development.md"
    doc.write_text(
        "# Development\n\n## Layout\n\n- `streamer/a.py`: a\n- `streamer/sub/c.py`: c\n"
        "- `streamer/gone.py`: moved away\n\n```text\n`streamer/b.py`\n```\n\n"
        "### Detail\n\n`streamer/sub/c.py` again\n\n## Tests\n\n`streamer/sub/d.py`\n"
    )
    problems = map_problems(tmp_path, doc)
    assert [p.split(":")[0] for p in problems] == ["streamer/b.py", "streamer/sub/d.py", "streamer/gone.py"], problems
    assert "missing from the map" in problems[0] and "no such module" in problems[2]


def test_the_checker_catches_broken_links(tmp_path):
    """Control: a missing file, a missing anchor and a missing image are each reported."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "other.md").write_text("# Other page\n\n## The `run` command: flags\n")
    page = tmp_path / "docs" / "page.md"
    page.write_text(
        "# Page\n\n"
        "[fine](other.md#the-run-command-flags) [also fine](#page) [web](https://example.com/x)\n"
        "[gone](missing.md) ![gone](missing.png) [bad anchor](other.md#no-such-heading)\n"
        "`[not a link](nowhere.md)`\n\n```\n[in code](nowhere.md)\n```\n"
    )
    problems = broken_links(page)
    assert len(problems) == 3, problems
    assert any("missing.md" in p for p in problems)
    assert any("missing.png" in p for p in problems)
    assert any("#no-such-heading" in p for p in problems)


@pytest.mark.parametrize(
    "heading, expected",
    [
        ("`streamer run`: the live pipeline", "streamer-run-the-live-pipeline"),
        ('Heartbeats: telling "nothing detected" from "dead"', "heartbeats-telling-nothing-detected-from-dead"),
        ("One camera: `streamer.service`", "one-camera-streamerservice"),
        ("Requests, pacing and cost", "requests-pacing-and-cost"),
        ("Several cameras: `streamer@.service`", "several-cameras-streamerservice"),
    ],
)
def test_slugs_follow_github(heading, expected):
    assert slug(heading) == expected


def test_no_readme_block_installs_two_opencv_choices():
    """Issue 21: pasted whole, a block with '.[gui]' and '.[headless]' on consecutive lines
    installed both wheels, which overwrite each other's cv2."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:sh|bash)?\n(.*?)```", text, re.S)
    installs = [block for block in blocks if "pip install" in block]
    assert len(installs) >= 3  # one per OpenCV choice
    for block in installs:
        assert block.count("pip install") == 1, block
