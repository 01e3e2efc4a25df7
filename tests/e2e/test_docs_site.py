"""The docs site renders every page whole: built with mkdocs (strict, as `make docs`), each page's
HTML shows no stray fence or test marker, every code block of its source inside one <pre>, and
no table broken into raw pipes. `mkdocs build --strict` alone passes a page whose fence is
broken: it only checks links."""

from __future__ import annotations

import html
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```$", re.M | re.S)
PRE = re.compile(r"<pre[^>]*>(.*?)</pre>", re.S)
TAG = re.compile(r"<[^>]+>")
COMMENT = re.compile(r"<!--.*?-->", re.S)
PAGES = sorted(p for p in DOCS.glob("*.md"))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    mkdocs = Path(sys.executable).with_name("mkdocs")
    done = subprocess.run(
        [str(mkdocs), "build", "--strict", "-q", "-d", str(out)], cwd=ROOT,
        capture_output=True, text=True, timeout=300, env={"NO_MKDOCS_2_WARNING": "1",
                                                         "PATH": str(mkdocs.parent)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def page_html(site: Path, page: Path) -> str:
    name = page.stem
    built = site / "index.html" if name == "index" else site / name / "index.html"
    return built.read_text()


def text_of(fragment: str) -> str:
    return html.unescape(TAG.sub("", fragment))


def squash(code: str) -> str:
    return "\n".join(line.rstrip() for line in code.strip("\n").splitlines())


def article(page: str) -> str:
    """The page's own content: Material's <article>, without HTML comments."""
    found = re.search(r"<article[^>]*>(.*)</article>", page, re.S)
    assert found is not None
    return COMMENT.sub("", found.group(1))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_page_renders_whole(site: Path, page: Path) -> None:
    body = article(page_html(site, page))
    pres = [squash(text_of(p)) for p in PRE.findall(body)]
    outside = text_of(PRE.sub("", body))
    assert "```" not in outside, (
        f"{page.name}: a stray fence: {outside[outside.find('```') - 200 :][:400]}"
    )
    # (the development page names the marker's syntax, in inline code)
    shown = re.sub(r"<code>&lt;!-- notest: [^<]*--&gt;</code>", "", body)
    assert "notest:" not in text_of(shown), f"{page.name}: a test marker shows"
    for line in outside.splitlines():
        assert not re.fullmatch(r"\s*\|.*\|\s*", line), f"{page.name}: a table broke: {line!r}"
    source = page.read_text()
    for match in FENCE.finditer(source):
        code = squash(match.group(1))
        if "--8<--" in code or not code:
            continue
        assert any(code == p for p in pres), (
            f"{page.name}:{source.count(chr(10), 0, match.start()) + 1}: its block is not one "
            f"<pre> of the page:\n{code[:300]}"
        )
