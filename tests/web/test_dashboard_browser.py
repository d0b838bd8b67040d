"""
The dashboard and ``/docs`` in a real browser: Playwright driving Debian's chromium
against ``closefunnel serve`` running as a real process.

Every request the page makes is intercepted: anything for another host fails the test
(and is refused), so "no request leaves the host" is checked, not assumed. Every
console error fails the test too. The numbers on the page are compared with the JSON
API's for the same query, and their text with the command line's own formatting
(closefunnel.cli._render), so the page's JavaScript cannot drift from the CLI's rules.

No chromium, or Playwright not installed: the tests skip saying how to get them, and
fail under ``CI=true`` (``.ci/run`` installs chromium), as the Redis tests do. Playwright
never downloads a browser: it is pointed at /usr/bin/chromium.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlencode, urlsplit

import pytest

from closefunnel._query import DateRange
from closefunnel.cli._render import METRIC_LABELS, change_text, format_delta, format_value
from closefunnel.cli._render import range_label as cli_range_label
from closefunnel.cli.serve import TOKEN_ENV
from tests.needs import missing
from tests.web.fake_close import FakeClose

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = ["--no-sandbox", "--disable-background-networking"]
SCRIPT = shutil.which("closefunnel") or str(Path(sys.executable).with_name("closefunnel"))
NOW = "2026-11-18T15:30:00Z"
#: Where a copy of the dashboard's screenshot goes when set (the README's picture).
SCREENSHOT_ENV = "CLOSEFUNNEL_SCREENSHOT_DIR"
TOKEN = "browser-token-7c6b5a49"
COUNTS = ("count", "count_total_complete", "count_total_won")
ROUTES = {"/health", "/pipelines", "/users", "/funnel/{pipeline_id}"}
ROUTES |= {"/funnel/{pipeline_id}/users.csv"}


def _unavailable(reason: str) -> NoReturn:
    message = (
        f"browser tests need chromium and Playwright: {reason} (apt-get install -y chromium; "
        "pip install -e '.[test]')"
    )
    missing(message)


@pytest.fixture(name="browser", scope="module")
def _browser() -> Iterator[Browser]:
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed")
    if not os.path.exists(CHROMIUM):
        _unavailable(f"{CHROMIUM} is missing")
    playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS
        )
    except Error as exc:
        playwright.stop()
        _unavailable(f"chromium did not start ({str(exc).splitlines()[0]})")
    try:
        yield browser
    finally:
        browser.close()
        playwright.stop()


@contextmanager
def _serve(*argv: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """``closefunnel serve ... --port 0`` as a process; yields its URL once it is bound."""
    base = {k: v for k, v in os.environ.items() if k not in ("CLOSE_API_KEY", TOKEN_ENV)}
    process = subprocess.Popen(
        [SCRIPT, "serve", "--port", "0", *argv],
        env={**base, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    seen: list[str] = []
    try:
        while True:
            line = lines.get(timeout=30)
            if line is None:
                raise AssertionError(f"serve stopped before serving: {''.join(seen)}")
            seen.append(line)
            found = re.search(r"on (http://127\.0\.0\.1:\d+)/", line)
            if found:
                break
        yield found.group(1)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)
        assert process.stderr is not None
        process.stderr.close()


@pytest.fixture(name="app_url", scope="module")
def _app_url() -> Iterator[str]:
    with _serve("--emulator", "--now", NOW) as url:
        yield url


def _get_json(url: str, headers: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=20) as response:
        return json.loads(response.read())


class Watched:
    """A page whose every request and console error is recorded."""

    def __init__(self, page: Page, host: str) -> None:
        self.page = page
        self.outside: list[str] = []
        self.errors: list[str] = []
        self._host = host
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))

    def _console(self, message: Any) -> None:
        if message.type == "error":
            self.errors.append(message.text)

    def route(self, route: Any) -> None:
        url = urlsplit(route.request.url)
        if url.scheme in ("http", "https") and url.netloc == self._host:
            route.continue_()
        else:
            self.outside.append(route.request.url)
            route.abort()


@contextmanager
def _page(browser: Browser, url: str, **options: Any) -> Iterator[Watched]:
    context = browser.new_context(accept_downloads=True, **options)
    page = context.new_page()
    watched = Watched(page, urlsplit(url).netloc)
    context.route("**/*", watched.route)
    try:
        yield watched
    finally:
        context.close()


def _ready(page: Page) -> None:
    page.wait_for_selector("#results[data-ready=true]", timeout=30_000)


def _number(raw: str | None) -> float | None:
    assert raw is not None
    return None if raw == "null" else float(raw)


def _label(data: dict[str, str]) -> str:
    start, end = (datetime.fromisoformat(data[k]) for k in ("start", "end"))
    return cli_range_label(DateRange(start, end))


def _screenshot(page: Page, tmp_path: Path, name: str) -> None:
    page.screenshot(path=str(tmp_path / name), full_page=True)
    keep = os.environ.get(SCREENSHOT_ENV)
    if keep:  # the top of the page, as a person first sees it
        page.evaluate("window.scrollTo(0, 0)")
        page.screenshot(path=str(Path(keep) / name), full_page=False)


def test_the_dashboard_shows_the_apis_numbers(
    browser: Browser, app_url: str, tmp_path: Path
) -> None:
    pipelines = _get_json(f"{app_url}/pipelines")
    names = {user["id"]: user["name"] for user in _get_json(f"{app_url}/users")}
    with _page(browser, app_url, viewport={"width": 1280, "height": 900}) as watched:
        page = watched.page
        page.goto(f"{app_url}/")
        page.wait_for_selector("body[data-pipelines=loaded]")
        # The default: every pipeline against last month, one report each.
        page.click("#show")
        _ready(page)
        shown = page.locator("section.report").evaluate_all(
            "nodes => nodes.map(n => [n.dataset.pipeline, n.querySelector('h2').textContent])"
        )
        assert shown == [[p["id"], p["name"]] for p in pipelines]

        # One pipeline, this quarter against last quarter and last year.
        pipeline = pipelines[1]["id"]
        page.select_option("#pipeline", pipeline)
        page.select_option("#range", "this-quarter")
        page.select_option("#compared-list li:nth-child(1) select", "last-quarter")
        page.click("#add-compared")
        page.select_option("#compared-list li:nth-child(2) select", "last-year")
        page.click("#show")
        _ready(page)
        asked = [("range", "this-quarter"), ("compare", "last-quarter"), ("compare", "last-year")]
        assert page.url.endswith("#" + urlencode([("pipeline", pipeline), *asked]))
        expected = _get_json(f"{app_url}/funnel/{pipeline}?{urlencode(asked)}")
        report = page.locator(f'section.report[data-pipeline="{pipeline}"]')
        assert report.locator("h2").text_content() == pipelines[1]["name"]

        # The ten metrics: raw numbers as the API's, text as the command line writes them.
        base = expected["base"]["aggregations"]
        for metric in METRIC_LABELS:
            row = report.locator(f'table.metrics tr[data-metric="{metric}"]')
            cell = row.locator('td[data-period="base"]')
            assert _number(cell.get_attribute("data-raw")) == base[metric], metric
            assert cell.text_content() == format_value(metric, base[metric]), metric
            for index, period in enumerate(expected["comparisons"]):
                d = period["aggregations"][metric]
                cells = row.locator(f'td[data-period="{index}"]')
                value, delta, change = (cells.nth(i) for i in range(3))
                assert _number(value.get_attribute("data-raw")) == d["compared"]
                assert value.text_content() == format_value(metric, d["compared"])
                assert _number(delta.get_attribute("data-raw")) == d["delta"]
                assert delta.text_content() == format_delta(metric, d["delta"])
                assert _number(change.get_attribute("data-raw")) == d["change"]
                mark = change_text(metric, d["change"])
                assert change.text_content() == mark.plain, (metric, index)
                colour = {"green": "good", "red": "bad", "dim": "flat"}[str(mark.style)]
                assert colour in (change.get_attribute("class") or "").split()

        # The chart: one bar per stage and period, the API's counts.
        for metric in COUNTS:
            bars = report.locator(f'svg.funnel rect[data-metric="{metric}"]')
            values = [float(v) for v in bars.evaluate_all("b => b.map(x => x.dataset.value)")]
            wanted = [base[metric]] + [
                p["aggregations"][metric]["compared"] for p in expected["comparisons"]
            ]
            assert values == wanted, metric

        # The resolved dates of each period, written as the command line writes them.
        dates = report.locator(".periods .dates")
        assert dates.nth(0).text_content() == f"({_label(expected['base_range'])})"
        for index, period in enumerate(expected["comparisons"], start=1):
            assert dates.nth(index).text_content() == f"({_label(period['compared_range'])})"

        # Per user: everyone of every period, by name, with the base numbers.
        rows = report.locator("table.users tbody tr")
        by_user = {row["user_id"]: row for row in expected["base"]["data"]}
        everyone = set(by_user) | {
            row["user_id"] for period in expected["comparisons"] for row in period["users"]
        }
        ids = rows.evaluate_all("rows => rows.map(r => r.dataset.user)")
        assert set(ids) == everyone
        for user_id in ids[:5]:
            row = report.locator(f'table.users tr[data-user="{user_id}"]')
            assert row.locator("td.name").text_content() == names[user_id]
            count = row.locator('td[data-metric="count"]').get_attribute("data-raw")
            assert _number(count) == by_user[user_id]["count"]

        _screenshot(page, tmp_path, "dashboard.png")

        # Sorting by clicking a header, then by keyboard on the same header.
        header = report.locator("table.users th").nth(1)
        header.locator("button").click()
        assert header.get_attribute("aria-sort") == "descending"
        counts = rows.evaluate_all("rs => rs.map(r => Number(r.children[1].dataset.raw))")
        assert counts == sorted(counts, reverse=True)
        header.locator("button").focus()
        page.keyboard.press("Enter")
        assert header.get_attribute("aria-sort") == "ascending"
        counts = rows.evaluate_all("rs => rs.map(r => Number(r.children[1].dataset.raw))")
        assert counts == sorted(counts)

        # The per-user CSV, downloaded through the page, is the API's.
        with page.expect_download() as download:
            report.locator("button.csv").click()
        saved = Path(download.value.path())
        with urllib.request.urlopen(
            f"{app_url}/funnel/{pipeline}/users.csv?{urlencode(asked)}", timeout=20
        ) as response:
            assert saved.read_bytes() == response.read()

        # The fragment is a link to the same view.
        page.reload()
        _ready(page)
        again = page.locator(f'section.report[data-pipeline="{pipeline}"] table.metrics')
        assert again.locator('tr[data-metric="count"] td[data-period="base"]').text_content() == (
            format_value("count", base["count"])
        )
    assert watched.outside == []
    assert watched.errors == []


def test_dates_are_days_in_the_browsers_zone(browser: Browser, app_url: str) -> None:
    """Days picked on the page (the last one inclusive) are the API's START..END."""
    pipeline = _get_json(f"{app_url}/pipelines")[0]["id"]
    with _page(browser, app_url, timezone_id="Europe/Berlin") as watched:  # +1 in November
        page = watched.page
        page.goto(f"{app_url}/")
        page.wait_for_selector("body[data-pipelines=loaded]")
        page.select_option("#pipeline", pipeline)
        # A same-days comparison needs dates: the API's refusal is shown as it said it.
        page.select_option("#compared-list li:nth-child(1) select", "same-days-last-year")
        page.click("#show")
        _ready(page)
        query = urlencode([("range", "this-month"), ("compare", "same-days-last-year")])
        with pytest.raises(urllib.error.HTTPError) as refused:
            _get_json(f"{app_url}/funnel/{pipeline}?{query}")
        refusal = json.loads(refused.value.read())
        refused.value.close()
        assert page.text_content("section.report .error") == refusal["detail"]
        page.select_option("#range", "custom")
        page.fill("#range-start", "2026-11-01")
        page.click("#show")  # the last day is missing: said, nothing asked
        assert "last day" in (page.text_content("#status") or "")
        # Nothing new was asked: the last answer is still the one shown.
        assert page.text_content("section.report .error") == refusal["detail"]
        page.fill("#range-end", "2026-11-18")
        page.click("#show")
        _ready(page)
        asked = [
            ("range", "2026-11-01..2026-11-19"),
            ("compare", "same-days-last-year"),
            ("tz_offset", "1"),
        ]
        expected = _get_json(f"{app_url}/funnel/{pipeline}?{urlencode(asked)}")
        assert expected["base_range"]["start"] == "2026-11-01T00:00:00+01:00"
        dates = page.locator(".periods .dates")
        assert dates.nth(0).text_content() == "(Nov 1\u201318, 2026)"
        # The page sent the browser's offset: its report starts at midnight in Berlin.
        assert dates.nth(0).get_attribute("data-start") == expected["base_range"]["start"]
        assert (
            dates.nth(1).text_content()
            == f"({_label(expected['comparisons'][0]['compared_range'])})"
        )
        cell = page.locator('table.metrics tr[data-metric="count"] td[data-period="0"]').first
        wanted = expected["comparisons"][0]["aggregations"]["count"]["compared"]
        assert _number(cell.get_attribute("data-raw")) == wanted
    assert watched.outside == []
    # The one expected console line: the browser noting the refused (422) request.
    assert [e for e in watched.errors if "status of 422" not in e] == []


#: Values where the page's JavaScript could part from Python's formatting: exact ties
#: (Python rounds half to even), signs, zero, the scientific notation past 1e12. Whole
#: numbers are ints: JSON cannot tell 5.0 from 5, and the counts, the only metrics shown
#: as plain numbers, are ints.
EDGES: list[float | int | None] = [
    None,
    0,
    1,
    -1,
    0.25,
    0.75,
    1.25,
    -0.25,
    0.05,
    0.15,
    2.675,
    50,
    150,
    250,
    -250,
    12_345,
    -12_345,
    1_234_567.5,
    999_999.95,
    0.0025,
    0.00125,
    21_600,
    43_200,
    129_600,
    10**12,
    150 * 10**12,
    -250 * 10**12,
    123_456_789_012_345,
    0.333333333333,
    1 / 3,
]


def test_the_pages_formatting_is_the_command_lines(browser: Browser, app_url: str) -> None:
    """Every metric, every edge value: the page writes what closefunnel.cli._render writes."""
    cases = [(metric, value) for metric in METRIC_LABELS for value in EDGES]
    with _page(browser, app_url) as watched:
        page = watched.page
        page.goto(f"{app_url}/")
        page.wait_for_selector("body[data-pipelines=loaded]")
        shown = page.evaluate(
            """cases => cases.map(([metric, value]) => {
                const f = window.closefunnelFormat;
                return [f.formatValue(metric, value), f.formatDelta(metric, value),
                        f.changeMark(metric, value)[0]];
            })""",
            cases,
        )
        labels = page.evaluate(
            "specs => specs.map(s => window.closefunnelFormat.rangeLabel(s))",
            [None, "this-month", "same-days-last-year", *(r for r, _ in RANGES)],
        )
    for (metric, value), (text, delta, change) in zip(cases, shown, strict=True):
        assert text == format_value(metric, value), (metric, value)
        assert delta == format_delta(metric, value), (metric, value)
        assert change == change_text(metric, value).plain, (metric, value)
    expected = [cli_range_label(None), cli_range_label("this-month")]
    expected += [cli_range_label("same-days-last-year"), *(label for _, label in RANGES)]
    assert labels == expected
    assert watched.errors == []


def _range(start: str, end: str) -> tuple[dict[str, str], str]:
    data = {"start": start, "end": end}
    return data, _label(data)


#: Date ranges as the API writes them, and the command line's labels for them.
RANGES = [
    _range("2026-11-01T00:00:00Z", "2026-11-19T00:00:00Z"),
    _range("2026-11-18T00:00:00+02:00", "2026-11-19T00:00:00+02:00"),
    _range("2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z"),
    _range("2026-10-15T00:00:00Z", "2026-11-03T00:00:00Z"),
    _range("2025-12-20T00:00:00-05:00", "2026-01-04T00:00:00-05:00"),
    _range("2026-11-01T08:30:00Z", "2026-11-19T17:00:00Z"),
    _range("2026-02-01T00:00:00Z", "2026-03-01T00:00:00Z"),
]


def test_phone_width_dark_scheme_and_keyboard(
    browser: Browser, app_url: str, tmp_path: Path
) -> None:
    pipeline = _get_json(f"{app_url}/pipelines")[0]["id"]
    link = f"{app_url}/#" + urlencode([("pipeline", pipeline), ("compare", "last-month")])
    backgrounds = {}
    for scheme in ("light", "dark"):
        options: dict[str, Any] = {"viewport": {"width": 390, "height": 844}}
        with _page(browser, app_url, color_scheme=scheme, **options) as watched:
            page = watched.page
            page.goto(link)
            _ready(page)
            # Nothing wider than the phone: wide tables scroll inside their own box.
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
            backgrounds[scheme] = page.evaluate("getComputedStyle(document.body).backgroundColor")
            page.keyboard.press("Tab")
            assert page.evaluate("document.activeElement.id") == "pipeline"
            outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
            assert outline == "solid"  # the focus is visible
            if scheme == "dark":
                _screenshot(page, tmp_path, "dashboard-phone-dark.png")
        assert watched.outside == []
        assert watched.errors == []
    assert backgrounds["light"] != backgrounds["dark"]
    dark = [int(v) for v in re.findall(r"\d+", backgrounds["dark"])[:3]]
    assert sum(dark) < 3 * 64  # a dark background, not just another light one


def test_docs_render_their_operations_offline(browser: Browser, app_url: str) -> None:
    with _page(browser, app_url) as watched:
        page = watched.page
        page.goto(f"{app_url}/docs")
        page.wait_for_selector(".opblock-summary-path", timeout=30_000)
        paths = page.locator(".opblock-summary-path").evaluate_all(
            "nodes => nodes.map(n => n.textContent.replace(/\\u200b/g, ''))"
        )
        summaries = page.locator(".opblock-summary-description").all_text_contents()
    assert set(paths) >= ROUTES
    assert "The organization's users" in summaries
    assert watched.outside == []
    assert watched.errors == []


def test_strangers_names_stay_text_and_the_token_is_asked_for(browser: Browser) -> None:
    """Markup in pipeline and user names shows as typed; the page asks for the token."""
    pipeline_name = '<img src=x onerror="window.__pwned=1">Sales'
    first, last = "<script>window.__pwned=2</script>", '"><b>bold</b>'
    fake = FakeClose(pipelines=[("pipe_1", pipeline_name)], users=[("user_1", first, last)])
    env = {"CLOSE_API_KEY": "api_test.secret", TOKEN_ENV: TOKEN}
    with (
        fake.in_thread(),
        _serve("--base-url", fake.base_url, env=env) as url,
        _page(browser, url) as watched,
    ):
        page = watched.page
        page.goto(f"{url}/")
        page.wait_for_selector("#token-form:not([hidden])")
        page.fill("#token", TOKEN)
        page.keyboard.press("Enter")
        page.wait_for_selector("body[data-pipelines=loaded]")
        option = page.locator('#pipeline option[value="pipe_1"]')
        assert option.text_content() == pipeline_name
        page.select_option("#pipeline", "pipe_1")
        page.click("#show")
        _ready(page)
        report = page.locator("section.report")
        assert report.locator("h2").text_content() == pipeline_name
        name = report.locator('table.users tr[data-user="user_1"] td.name')
        assert name.text_content() == f"{first} {last}"
        assert page.locator("#results img, #results script, #results b").count() == 0
        assert page.evaluate("window.__pwned") is None
        stored = page.evaluate("sessionStorage.getItem('closefunnel.token')")
        assert stored == TOKEN
        assert page.evaluate("localStorage.length") == 0  # never kept beyond the tab
    assert watched.outside == []
    # The one expected console line: the browser noting the first, refused, request.
    unexpected = [e for e in watched.errors if "status of 401" not in e]
    assert unexpected == []
