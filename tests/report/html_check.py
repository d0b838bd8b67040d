"""
Reading closefunnel's HTML back as a browser's parser would, to check what it says.

:func:`parse` runs the standard library's ``html.parser`` over a document or fragment and
returns every element (tag, attributes, its own text) plus the style text, checking on the
way that every element is closed in order (void elements aside). The checks the tests
make on top (nothing loads from anywhere, no script, no event handler) read the result.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

import attrs

#: Elements that have no end tag in HTML.
VOID = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}
)
#: SVG elements written self-closing (``<rect/>``) in foreign content.
SELF_CLOSING_SVG = frozenset({"rect", "line", "path", "circle"})
#: Attributes that make a browser fetch or navigate.
URL_ATTRIBUTES = frozenset(
    {"src", "href", "xlink:href", "action", "formaction", "poster", "data", "srcset", "ping"}
)
#: Elements that load or run something.
ACTIVE = frozenset(
    {"script", "link", "iframe", "frame", "img", "object", "embed", "base", "form", "image"}
)


@attrs.define
class Element:
    """One element: its tag, attributes, and the text directly and deeply inside it."""

    tag: str
    attrs: dict[str, str]
    text: str = ""
    parent: Element | None = None
    children: list[Element] = attrs.field(factory=list)

    def find_all(self, tag: str, **wanted: str) -> list[Element]:
        """Every descendant with *tag* whose attributes include *wanted*
        (underscores in names read as dashes)."""
        found: list[Element] = []
        for child in self.children:
            match = child.tag == tag and all(
                child.attrs.get(name.replace("_", "-")) == value for name, value in wanted.items()
            )
            if match:
                found.append(child)
            found += child.find_all(tag, **wanted)
        return found

    def find(self, tag: str, **wanted: str) -> Element:
        found = self.find_all(tag, **wanted)
        assert found, f"no <{tag}> with {wanted}"
        return found[0]


@attrs.define
class Parsed:
    """A parsed document: its root, every element in order, the style text, the doctype."""

    root: Element
    elements: list[Element]
    styles: list[str]
    doctype: str | None


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#root", {})
        self.current = self.root
        self.elements: list[Element] = []
        self.styles: list[str] = []
        self.doctype: str | None = None

    def handle_decl(self, decl: str) -> None:
        self.doctype = decl

    def handle_starttag(self, tag: str, attributes: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {k: v or "" for k, v in attributes}, parent=self.current)
        self.current.children.append(element)
        self.elements.append(element)
        if "style" in element.attrs:
            self.styles.append(element.attrs["style"])
        if tag not in VOID:
            self.current = element

    def handle_startendtag(self, tag: str, attributes: list[tuple[str, str | None]]) -> None:
        element = Element(tag, {k: v or "" for k, v in attributes}, parent=self.current)
        self.current.children.append(element)
        self.elements.append(element)
        assert tag in VOID | SELF_CLOSING_SVG, f"<{tag}/> is no void element"

    def handle_endtag(self, tag: str) -> None:
        assert tag not in VOID, f"</{tag}> closes a void element"
        assert self.current.tag == tag, f"</{tag}> closes <{self.current.tag}>"
        assert self.current.parent is not None
        self.current = self.current.parent

    def handle_data(self, data: str) -> None:
        if self.current.tag == "style":
            self.styles.append(data)
        element: Element | None = self.current
        while element is not None:
            element.text += data
            element = element.parent


def parse(text: str) -> Parsed:
    """Parse *text*; every element must be closed, in order, by the end."""
    parser = _Parser()
    parser.feed(text)
    parser.close()
    assert parser.current is parser.root, f"<{parser.current.tag}> is never closed"
    return Parsed(parser.root, parser.elements, parser.styles, parser.doctype)


_CSS_URL = re.compile(r"url\s*\(|@import|image-set\s*\(|//", re.IGNORECASE)


def assert_loads_nothing(parsed: Parsed) -> None:
    """
    Nothing in the document can make a browser fetch or run anything: no loading or
    scripting element, no ``on*`` handler, no URL attribute but an in-page ``#anchor``,
    no ``url()``, ``@import`` or ``//`` in any style.
    """
    for element in parsed.elements:
        assert element.tag not in ACTIVE, f"<{element.tag}> in the document"
        for name, value in element.attrs.items():
            assert not name.startswith("on"), f"event handler {name}={value!r} on <{element.tag}>"
            if name in URL_ATTRIBUTES:
                assert value.startswith("#"), f"{name}={value!r} on <{element.tag}>"
    for style in parsed.styles:
        found = _CSS_URL.search(style)
        assert found is None, f"{found.group()!r} in a style"
