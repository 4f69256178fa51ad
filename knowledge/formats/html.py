"""HTML pages: visible text in reading order, headings as Markdown headings and spans.

Parsed with BeautifulSoup on lxml's HTML parser (no network, no entity expansion), after a depth
check (knowledge/formats/depth.py: deep nesting makes BeautifulSoup slow). Scripts, styles and
other invisible parts are dropped; block elements become paragraphs, `<br>` a line break.
"""

from __future__ import annotations

import re

from bs4 import BeautifulSoup, Comment, UnicodeDammit

from knowledge.errors import BadInputError
from knowledge.formats import Extracted, HeadingPath, Limits, Span
from knowledge.formats.depth import check_html_depth
from knowledge.formats.detect import looks_binary
from knowledge.formats.text import _checked

_INVISIBLE = ["script", "style", "noscript", "template", "head", "svg", "iframe", "object"]
_BLOCKS = [
    "p", "div", "section", "article", "main", "header", "footer", "aside", "nav", "li", "ul",
    "ol", "dl", "dt", "dd", "table", "tr", "pre", "blockquote", "figure", "figcaption", "hr",
    "address", "form", "fieldset", "caption",
]  # fmt: skip
_HEADINGS = ["h1", "h2", "h3", "h4", "h5", "h6"]
_MARK = "\ue000"  # a private-use character (not whitespace): marks heading lines
_HEADING_LINE = re.compile(f"^{_MARK}([1-6])(.*)$")


def parse_html(name: str, data: bytes, limits: Limits) -> Extracted:
    html = UnicodeDammit(data, is_html=True).unicode_markup
    if html is None or looks_binary(html):
        raise BadInputError(f"{name!r} is not readable HTML text")
    check_html_depth(name, html.encode("utf-8", "surrogatepass"), limits.max_depth)
    soup = BeautifulSoup(html, "lxml")
    title_tag = soup.find("title")
    title = " ".join(title_tag.get_text(" ").split()) if title_tag else ""
    for tag in soup.find_all(_INVISIBLE):
        tag.decompose()
    for comment in soup.find_all(string=lambda s: isinstance(s, Comment)):
        comment.extract()
    for br in soup.find_all("br"):
        br.replace_with("\n")
    for cell in soup.find_all(["td", "th"]):
        cell.insert_after(" | ")
    for tag in soup.find_all(_HEADINGS):
        heading = " ".join(tag.get_text(" ").split())
        level = int(tag.name[1])
        tag.replace_with(f"\n\n{_MARK}{level}{heading}\n\n" if heading else "\n\n")
    for tag in soup.find_all(_BLOCKS):
        tag.insert_before("\n\n")
        tag.insert_after("\n\n")

    lines: list[str] = []
    spans, path, first_heading = [Span(0)], HeadingPath(), None
    offset = 0
    for raw in soup.get_text().split("\n"):
        line = re.sub(r"[ \t\f\v\xa0]+", " ", raw).strip().strip("|").strip()
        if not line:
            if lines and lines[-1]:
                lines.append("")
                offset += 1
            continue
        if (mark := _HEADING_LINE.match(line)) is not None:
            level, heading = int(mark.group(1)), mark.group(2).strip()
            first_heading = first_heading or heading
            spans.append(Span(offset, heading=path.enter(level, heading)))
            line = f"{'#' * level} {heading}"
        lines.append(line)
        offset += len(line) + 1
    text = "\n".join(lines).strip("\n") + "\n"
    if not text.strip():
        raise BadInputError(f"{name!r} has no visible text")
    # Spans were counted on the un-stripped text; leading blank lines are never emitted.
    return Extracted(title=title or first_heading, text=_checked(name, text, limits), spans=spans)
