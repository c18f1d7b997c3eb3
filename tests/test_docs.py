"""The documentation a clone ships is self-contained.

* Nothing a user gets (the packages, configs, benchmarks, tests, README, docs/) points at the
  developers' private notes: implementation specs by section number, the paper's supplementary by
  an abbreviation, the shared design file, or paths outside the repository.
* Every relative link and image in README.md and docs/*.md resolves to a file of the repository,
  and every `#anchor` to a heading of the target page (GitHub's heading slugs).
* Every `docs/<page>.md#<anchor>` pointer written in code (docstrings, comments, help texts) names
  an existing page and heading.
"""
from __future__ import annotations

import functools
import pathlib
import re
import sys
import urllib.parse

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCANNED_DIRS = ("imphmr_jax", "neuhmr_jax", "third_party/smpl_jax/smpl_jax", "configs", "bench",
                "tests", "docs")
SCANNED_SUFFIXES = {".py", ".md", ".txt", ".toml", ".cfg", ".yaml", ".yml"}
THIS_FILE = pathlib.Path(__file__).resolve()

# References to material a clone does not contain.
FORBIDDEN = [
    (re.compile(r"spec\s*(§|section\b|sec\.)", re.I), "a spec section"),
    (re.compile(r"\bspec[/ ](imphmr|neuhmr|jax_ecosystem)\b", re.I), "a spec file"),
    (re.compile(r"§"), "a section sign (spec numbering)"),
    (re.compile(r"\bsupp\.", re.I), "'supp.' (cite the paper's supplementary section in words)"),
    (re.compile(r"\.\./shared\b|/work/shared\b"), "the developers' shared folder"),
    (re.compile(r"DESIGN\.md"), "the developers' design notes"),
]


def _shipped_files():
    files = [ROOT / "README.md"]
    for d in SCANNED_DIRS:
        base = ROOT / d
        if base.is_dir():
            files += [p for p in sorted(base.rglob("*"))
                      if p.is_file() and p.suffix in SCANNED_SUFFIXES
                      and "__pycache__" not in p.parts and p.resolve() != THIS_FILE]
    return files


def _markdown_files():
    return [ROOT / "README.md"] + sorted((ROOT / "docs").glob("*.md"))


# ------------------------------------------------------------------------------ markdown parsing
_FENCE = re.compile(r"^\s*(```|~~~)")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_INLINE_CODE = re.compile(r"`[^`]*`")
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
_REF_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
_HTML_ANCHOR = re.compile(r"<a\s+[^>]*(?:name|id)\s*=\s*\"([^\"]+)\"", re.I)


def _prose_lines(text):
    """(line number, line) outside fenced code blocks."""
    in_fence = False
    for i, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line):
            in_fence = not in_fence
            continue
        if not in_fence:
            yield i, line


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: inline markup dropped, lower case, punctuation removed
    (letters, digits, '_' and '-' kept), each space a hyphen."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # links and images -> their text
    text = re.sub(r"<[^>]+>", "", text)                          # inline HTML tags
    text = text.replace("`", "").replace("*", "")
    text = text.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@functools.lru_cache(maxsize=None)
def anchors_of(path: pathlib.Path) -> frozenset:
    """Every anchor a Markdown page offers: heading slugs (with GitHub's -1, -2 suffixes for
    repeated headings) and explicit HTML anchors."""
    seen: dict[str, int] = {}
    out = set()
    for _, line in _prose_lines(path.read_text(encoding="utf-8")):
        m = _HEADING.match(line)
        if m:
            slug = github_slug(m.group(2))
            n = seen.get(slug, 0)
            out.add(slug if n == 0 else f"{slug}-{n}")
            seen[slug] = n + 1
        out.update(_HTML_ANCHOR.findall(line))
    return frozenset(out)


def links_of(path: pathlib.Path):
    """(line number, target) of every Markdown link, image and reference definition outside code."""
    for i, line in _prose_lines(path.read_text(encoding="utf-8")):
        m = _REF_DEF.match(line)
        if m:
            yield i, m.group(1)
            continue
        for target in _LINK.findall(_INLINE_CODE.sub("", line)):
            yield i, target


def _check_target(source: pathlib.Path, target: str):
    """None if the relative link `target` of page `source` resolves, else the reason."""
    if not target or re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # http:, mailto:, ...
        return None
    path_part, _, anchor = target.partition("#")
    path_part = urllib.parse.unquote(path_part)
    dest = source if not path_part else (source.parent / path_part).resolve()
    if not path_part.startswith("/") and ROOT not in (dest, *dest.parents):
        return f"{target!r} leaves the repository"
    if not dest.exists():
        return f"{target!r}: no file {dest.relative_to(ROOT) if ROOT in dest.parents else dest}"
    if anchor:
        if dest.suffix != ".md":
            return f"{target!r}: anchor into a non-Markdown file"
        if urllib.parse.unquote(anchor) not in anchors_of(dest):
            return f"{target!r}: no heading with anchor #{anchor} in {dest.name}"
    return None


# ----------------------------------------------------------------------------------------- tests
def test_no_references_to_unshipped_material():
    problems = []
    for path in _shipped_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for i, line in enumerate(text.splitlines(), 1):
            for pattern, what in FORBIDDEN:
                if pattern.search(line):
                    problems.append(f"{path.relative_to(ROOT)}:{i}: {what}: {line.strip()[:100]}")
    assert not problems, ("references to files a clone does not have; point at docs/ instead:\n"
                          + "\n".join(problems))


@pytest.mark.parametrize("page", _markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_markdown_links_resolve(page):
    bad = []
    for line, target in links_of(page):
        reason = _check_target(page, target)
        if reason:
            bad.append(f"{page.relative_to(ROOT)}:{line}: {reason}")
    assert not bad, "\n".join(bad)


_DOC_POINTER = re.compile(r"\bdocs/([\w.-]+\.md)(?:#([\w-]+))?")


def test_doc_pointers_in_code_resolve():
    bad = []
    for path in _shipped_files():
        if path.suffix != ".py":
            continue
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for page, anchor in _DOC_POINTER.findall(line):
                target = ROOT / "docs" / page
                if not target.exists():
                    bad.append(f"{path.relative_to(ROOT)}:{i}: docs/{page} does not exist")
                elif anchor and anchor not in anchors_of(target):
                    bad.append(f"{path.relative_to(ROOT)}:{i}: docs/{page} has no heading "
                               f"#{anchor}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("heading, slug", [
    ("ImpHMR's paper components", "imphmrs-paper-components"),
    ("SMPL in JAX: `smpl_jax`", "smpl-in-jax-smpl_jax"),
    ("Rendering and cameras: `imphmr_jax.render`, `imphmr_jax.geometry`",
     "rendering-and-cameras-imphmr_jaxrender-imphmr_jaxgeometry"),
    ("Feature field h", "feature-field-h"),
    ("Interrupted builds, rebuilding", "interrupted-builds-rebuilding"),
])
def test_github_slug(heading, slug):
    assert github_slug(heading) == slug


def test_link_checker_catches_bad_links(tmp_path, monkeypatch):
    """The checker itself: a missing file and a missing heading are reported, good links are not."""
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "a.md").write_text("# Title\n\n## Some Section\n", encoding="utf-8")
    page = tmp_path / "b.md"
    page.write_text("[ok](a.md#some-section) [ok2](#local) ![img](a.md) [web](https://x.org/y)\n"
                    "## Local\n[bad](missing.md) [bad2](a.md#nope)\n"
                    "```\n[in code](ignored.md)\n```\n`[inline](ignored2.md)`\n", encoding="utf-8")
    reasons = [r for _, t in links_of(page) if (r := _check_target(page, t))]
    assert len(reasons) == 2 and "missing.md" in reasons[0] and "#nope" in reasons[1], reasons
