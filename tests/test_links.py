"""Issue 30: no tracked file cites a file the repository does not contain.

* every relative Markdown link (``[text](path)`` or ``[text](path#anchor)``) of a tracked Markdown file
  points at a file or folder of the repository, and an anchor at a heading of the Markdown file it
  names;
* every repository path mentioned in Markdown, docstrings and comments (``docs/x.md``,
  ``benchmarks/results/x.md``, ``latenttune/x.py``, ``examples/x.py``, ``tests/x.py``, ``configs/x.toml``,
  ...) exists;
* every Markdown file named anywhere (``x.md``) is one the repository holds.

Names that are outputs of the documented commands (``r.h5``, ``s.cxi``, ``OUT.png``) are not paths of
the repository and are not checked.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Folders of the repository whose files the docs and the code cite.
TOP = ("docs", "benchmarks", "latenttune", "examples", "tests", "configs", "sim", "controllers")

#: A path into the repository: a top folder, then path characters, ending in a known suffix; not part of a
#: longer path (``/work/...``) or a URL.
PATH = re.compile(rf"(?<![\w/.~:-])((?:{'|'.join(TOP)})/[\w./-]*?\.(?:py|md|toml|png|gif|json|sh|pt|cff|txt))\b")

#: A Markdown file named by itself.
MARKDOWN_NAME = re.compile(r"(?<![\w/.-])([\w-]+\.md)\b")

#: Stems that stand for a name the user chooses (``OUT.md``: the ``--out`` of a benchmark), not a file.
PLACEHOLDERS = {"OUT"}

#: Tracked files allowed, for now, to name a file the repository does not hold ({file: {names}}); empty:
#: none may. A file listed here that no longer names it fails the test, so the list cannot go stale.
PENDING: dict[str, set[str]] = {}


#: Folders that hold no repository file (outside a git checkout, the files are found by walking the tree).
_NOT_REPOSITORY = {"__pycache__", "build", "dist", "node_modules"}


def _tracked() -> list[str]:
    """The repository's files: git's (tracked, and new ones not ignored), or the tree's outside a checkout."""
    done = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:  # an unpacked archive: every file outside hidden, cache and build folders
        return sorted(str(f.relative_to(ROOT)) for f in ROOT.rglob("*") if f.is_file()
                      and not any(part.startswith(".") or part in _NOT_REPOSITORY or part.endswith(".egg-info")
                                  for part in f.relative_to(ROOT).parts[:-1]))
    files = [f for f in done.stdout.splitlines() if (ROOT / f).is_file()]
    # files added in this working tree but not yet committed count as the repository's too
    extra = subprocess.run(["git", "ls-files", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True).stdout.splitlines()
    return sorted(set(files) | {f for f in extra if (ROOT / f).is_file()})


TRACKED = _tracked()
TEXT = [f for f in TRACKED if f.endswith((".md", ".py", ".toml", ".sh", ".cff")) and f != "tests/test_links.py"]
MARKDOWN = [f for f in TRACKED if f.endswith(".md")]


def _slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[`*_]{1,2}(?=\w)|(?<=\w)[`*_]{1,2}", lambda m: "_" if m.group(0) == "_" else "", heading)
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)
    return {_slug(h) for h in re.findall(r"^#{1,6} +(.+?) *$", text, flags=re.M)}


def _mentions(text: str, name: str) -> str:
    """What may cite files: a Markdown file whole; in code, its comments and docstrings (string literals)."""
    if name.endswith(".md"):
        return text
    return "\n".join(re.findall(r"#.*$|\"\"\"[\s\S]*?\"\"\"|'''[\s\S]*?'''|\"[^\"\n]*\"|'[^'\n]*'", text,
                                flags=re.M))


@pytest.mark.parametrize("name", MARKDOWN)
def test_relative_markdown_links_point_at_files_and_headings_that_exist(name):
    path = ROOT / name
    text = re.sub(r"^```.*?^```", "", path.read_text(), flags=re.S | re.M)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        resolved = (path.parent / file).resolve() if file else path
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
            broken.append(f"{target}: no heading with that anchor")
    assert not broken, f"{name}: " + "; ".join(broken)


def test_the_repository_files_are_found():
    assert {"README.md", "latenttune/__init__.py", "docs/conventions.md"} <= set(TRACKED)


def test_every_repository_path_mentioned_exists():
    missing = []
    for name in TEXT:
        text = _mentions((ROOT / name).read_text(errors="replace"), name)
        for cited in sorted(set(PATH.findall(text))):
            if not (ROOT / cited).exists():
                missing.append(f"{name}: {cited}")
    assert not missing, "files cited but not in the repository:\n" + "\n".join(missing)


def test_every_markdown_file_named_is_in_the_repository():
    names = {Path(f).name for f in MARKDOWN}
    missing = []
    for name in TEXT:
        text = _mentions((ROOT / name).read_text(errors="replace"), name)
        for cited in sorted(set(MARKDOWN_NAME.findall(text)) - names):
            if cited not in PENDING.get(name, set()) and Path(cited).stem not in PLACEHOLDERS:
                missing.append(f"{name}: {cited}")
    assert not missing, "Markdown files named but not in the repository:\n" + "\n".join(missing)
    for name, cited in PENDING.items():  # a pending file that no longer cites the name: drop it from PENDING
        text = (ROOT / name).read_text()
        assert all(c in text for c in cited), f"{name} no longer names {cited}: remove it from PENDING"
