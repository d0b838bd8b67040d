"""
The HTML report as a real browser reads it: Debian's chromium, headless, as a process.

``html.parser`` is not a browser: HTML5 parses ``<svg>`` content by its own rules, and a
name written to break out of an SVG ``<title>`` could pass one parser and not the other.
So the document with hostile names goes through chromium, and the DOM it builds must
have exactly the elements closefunnel wrote: no script, every name still text, every
table row and chart bar where it belongs. A screenshot and a PDF show it renders and
prints. Without chromium the tests skip, saying so; under ``CI=true`` that is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest

import closefunnel as cf
from closefunnel import _html
from closefunnel._display import clean
from tests.needs import missing

from .conftest import HOSTILE, hostile_totals
from .html_check import Parsed, assert_loads_nothing, parse

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")

pytestmark = pytest.mark.slow  # a browser start takes seconds


def _browser() -> str:
    found = shutil.which(CHROMIUM)
    if found is None:
        reason = f"no chromium at {CHROMIUM} (apt-get install chromium, or set CHROMIUM)"
        missing(reason)
    return found


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    command = [
        _browser(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-extensions",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        *args,
    ]
    return subprocess.run(command, capture_output=True, timeout=120, check=True)


def _document() -> str:
    names = {uid: HOSTILE[-1 - n] for n, uid in enumerate(HOSTILE)}
    comparison = cf.merge_comparison(hostile_totals(1), [("last-month", hostile_totals(2))])
    return _html.report_document(
        [(HOSTILE[3], comparison), (HOSTILE[0], hostile_totals())],
        title=HOSTILE[4],
        names=names,
        failures=[(HOSTILE[1], HOSTILE[3])],
    )


def _tags(parsed: Parsed) -> Counter[str]:
    return Counter(element.tag for element in parsed.elements)


def test_chromium_builds_exactly_the_elements_closefunnel_wrote(tmp_path: Path) -> None:
    text = _document()
    report = tmp_path / "report.html"
    report.write_text(text, encoding="utf-8")
    dom = _chromium(tmp_path, "--dump-dom", report.as_uri()).stdout.decode()
    ours, browsers = parse(text), parse(dom)
    assert_loads_nothing(browsers)
    assert not browsers.root.find_all("script")

    # The same elements, tag for tag (the browser adds nothing of its own to this page).
    assert _tags(browsers) == _tags(ours)
    assert [h.text for h in browsers.root.find_all("h2")] == [
        clean(HOSTILE[3]),
        clean(HOSTILE[0]),
        "Failed",
    ]
    for svg in browsers.root.find_all("svg", **{"class": "cf-chart"}):
        assert len(svg.find_all("rect")) == 3 * len(svg.find_all("rect", data_stage="count"))
    rows = [r for r in browsers.root.find_all("tr") if "data-user" in r.attrs]
    assert Counter(r.attrs["data-user"] for r in rows) == Counter(clean(uid) for uid in HOSTILE * 2)
    assert browsers.root.find("title").text == clean(HOSTILE[4])


def test_chromium_renders_and_prints_the_report(tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    report.write_text(_document(), encoding="utf-8")
    png, pdf = tmp_path / "report.png", tmp_path / "report.pdf"
    _chromium(tmp_path, f"--screenshot={png}", "--window-size=1200,900", report.as_uri())
    _chromium(tmp_path, f"--print-to-pdf={pdf}", "--no-pdf-header-footer", report.as_uri())
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 10_000  # a page with tables and charts, not a blank one
    assert pdf.read_bytes()[:5] == b"%PDF-"
