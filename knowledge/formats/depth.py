"""Nesting-depth checks run before a parser builds a tree (parser bombs, issue 11).

    check_html_depth(name, data, limits.max_depth)      # 10,000 nested <div>s: refused at once
    check_xml_depth(name, stream, limits.max_depth)     # a DOCX part, streamed

BeautifulSoup's tree work grows faster than linearly with nesting (10,000 nested divs took 22 s,
100,000 over five minutes), so depth is measured first with lxml's pull parser, which reports
elements as it reads and lets us stop at the first one too deep. Either check raises
TooComplexError (422) naming the limit.
"""

from __future__ import annotations

from typing import IO

from lxml import etree

from knowledge.errors import CorruptDocumentError, TooComplexError

_FEED = 1 << 16


def _refuse(name: str, limit: int) -> TooComplexError:
    return TooComplexError(
        f"{name!r} nests elements more than {limit:,} levels deep "
        "(knowledge.max_nesting_depth); refused as a possible parser bomb"
    )


def check_html_depth(name: str, data: bytes, limit: int) -> None:
    """Raise TooComplexError if HTML elements nest deeper than `limit` (implied ends count)."""
    parser = etree.HTMLPullParser(events=("start", "end"), recover=True)
    depth = 0
    for offset in range(0, len(data), _FEED):
        parser.feed(data[offset : offset + _FEED])
        for event, _ in parser.read_events():
            depth += 1 if event == "start" else -1
            if depth > limit:
                raise _refuse(name, limit)
    try:
        parser.close()
    except etree.LxmlError:  # the real parser (BeautifulSoup) says what it makes of it
        return


def check_xml_depth(name: str, stream: IO[bytes], limit: int) -> None:
    """Raise TooComplexError if XML elements nest deeper than `limit` (no entity expansion)."""
    parser = etree.XMLPullParser(
        events=("start", "end"), resolve_entities=False, no_network=True, huge_tree=False
    )
    depth = 0
    try:
        while chunk := stream.read(_FEED):
            parser.feed(chunk)
            for event, _ in parser.read_events():
                depth += 1 if event == "start" else -1
                if depth > limit:
                    raise _refuse(name, limit)
        parser.close()
    except etree.XMLSyntaxError as exc:
        if "depth" in str(exc).lower():  # libxml2's own cap (256 without XML_PARSE_HUGE)
            raise TooComplexError(
                f"{name!r} nests elements more than {min(limit, 256):,} levels deep (the XML "
                "parser's limit); refused as a possible parser bomb"
            ) from exc
        raise CorruptDocumentError(f"{name!r} is not a readable Word document: {exc}") from exc
