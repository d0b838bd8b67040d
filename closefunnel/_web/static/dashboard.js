// closefunnel dashboard: asks the JSON API next to this page and draws what it answers.
//
// No library and no other host: every URL is relative to the page, so the dashboard works
// under any prefix and offline. Everything the server sends (pipeline and user names,
// error messages) reaches the page through textContent or an attribute, never as HTML.
// Numbers are formatted by the command line's rules (closefunnel/cli/_render.py), which
// the browser tests check cell by cell.
"use strict";

(function () {
  const NONE = "\u2014"; // em dash: no value
  const DASH = "\u2013"; // en dash: date spans
  const DAY = 86400;
  const HUGE = 1e12;
  const MAX_PIPELINES = 20; // "All pipelines" shows at most this many reports
  const TOKEN_KEY = "closefunnel.token";
  const SVG = "http://www.w3.org/2000/svg";

  const METRIC_LABELS = [
    ["count", "Opportunities"],
    ["count_total_complete", "Completed"],
    ["count_total_won", "Won"],
    ["count_win_rate", "Win rate"],
    ["value_total_complete", "Value completed"],
    ["value_total_won", "Value won"],
    ["value_win_rate", "Value win rate"],
    ["average_value_annualized_per_won_opportunity", "Avg value per win"],
    ["average_time_to_win", "Avg time to win"],
    ["sales_velocity", "Velocity / day"],
  ];
  const LABEL = Object.fromEntries(METRIC_LABELS);
  const FUNNEL = ["count", "count_total_complete", "count_total_won"];
  const USER_COLUMNS = ["count", "count_total_won", "count_win_rate", "value_total_won"];
  const MONEY = new Set([
    "value_total_complete",
    "value_total_won",
    "average_value_annualized_per_won_opportunity",
    "sales_velocity",
  ]);
  const RATES = new Set(["count_win_rate", "value_win_rate"]);
  const DURATIONS = new Set(["average_time_to_win"]);
  const LOWER_IS_BETTER = new Set(["average_time_to_win"]);
  const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

  // -- numbers, as the command line writes them -------------------------------------------

  function missing(value) {
    return typeof value !== "number" || !Number.isFinite(value);
  }

  function grouped(digits) {
    // "1234567.5" -> "1,234,567.5" (the integer part only).
    const [whole, fraction] = digits.split(".");
    const withCommas = whole.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
    return fraction === undefined ? withCommas : withCommas + "." + fraction;
  }

  function roundHalfEven(x) {
    // Python's round(): an exact .5 goes to the even neighbour.
    if (Math.abs(x % 1) === 0.5) return 2 * Math.round(x / 2);
    return Math.round(x);
  }

  function fixed1(x) {
    // Python's f"{x:.1f}": toFixed rounds the exact binary value as Python does, except
    // on exact ties (x = odd/4: 0.25, 0.75), where Python goes to the even digit.
    const quarter = x * 4;
    if (Number.isInteger(quarter) && quarter % 2 !== 0 && Math.abs(x) < 1e15) {
      return ((2 * Math.round((x * 10) / 2)) / 10).toFixed(1);
    }
    return x.toFixed(1);
  }

  function g3(x) {
    // Python's f"{x:.3g}" for x >= 1e12 (always the exponent form there).
    const [mantissa, exponent] = x.toExponential(2).split("e");
    const e = Number(exponent);
    const m = mantissa.includes(".") ? mantissa.replace(/0+$/, "").replace(/\.$/, "") : mantissa;
    return m + "e" + (e < 0 ? "-" : "+") + String(Math.abs(e)).padStart(2, "0");
  }

  function money(cents, signed) {
    const dollars = roundHalfEven(cents / 100);
    let prefix = "";
    if (signed) prefix = dollars > 0 ? "+" : dollars < 0 ? "-" : "\u00b1";
    else if (dollars < 0) prefix = "-";
    return prefix + "$" + grouped(String(Math.abs(dollars)));
  }

  function huge(metric, value, signed) {
    let scale = 1;
    if (MONEY.has(metric)) scale = 0.01;
    else if (RATES.has(metric)) scale = 100;
    else if (DURATIONS.has(metric)) scale = 1 / DAY;
    const shown = value * scale;
    if (!Number.isFinite(shown)) return NONE;
    if (Math.abs(shown) < HUGE) return null;
    const sign = signed ? (shown > 0 ? "+" : "-") : shown < 0 ? "-" : "";
    const unit = MONEY.has(metric) ? "$" : "";
    let suffix = "";
    if (RATES.has(metric)) suffix = signed ? " pp" : "%";
    else if (DURATIONS.has(metric)) suffix = " d";
    return sign + unit + g3(Math.abs(shown)) + suffix;
  }

  function signedFixed1(x, withCommas) {
    // f"{x:+.1f}", or f"{x:+,.1f}" with commas (the CLI groups plain numbers only).
    const text = withCommas ? grouped(fixed1(x)) : fixed1(x);
    return text.startsWith("-") ? text : "+" + text;
  }

  function formatValue(metric, value) {
    if (missing(value)) return NONE;
    const big = huge(metric, value, false);
    if (big !== null) return big;
    if (MONEY.has(metric)) return money(value, false);
    if (RATES.has(metric)) return fixed1(value * 100) + "%";
    if (DURATIONS.has(metric)) return fixed1(value / DAY) + " d";
    return Number.isInteger(value) ? grouped(String(value)) : grouped(fixed1(value));
  }

  function formatDelta(metric, value) {
    if (missing(value)) return NONE;
    const big = huge(metric, value, true);
    if (big !== null) return big;
    if (MONEY.has(metric)) return money(value, true);
    if (RATES.has(metric)) return signedFixed1(value * 100, false) + " pp";
    if (DURATIONS.has(metric)) return signedFixed1(value / DAY, false) + " d";
    if (Number.isInteger(value)) return (value < 0 ? "" : "+") + grouped(String(value));
    return signedFixed1(value, true);
  }

  function changeMark(metric, change) {
    // [text, class]: ▲/▼ and the relative change, "good"/"bad" by the metric's direction.
    if (missing(change)) return [NONE, "flat"];
    if (change === 0) return ["0.0%", "flat"];
    const up = change > 0;
    const good = up !== LOWER_IS_BETTER.has(metric);
    const percent = Math.abs(change) * 100;
    const shown = percent >= HUGE ? g3(percent) : grouped(fixed1(percent));
    return [(up ? "\u25b2 " : "\u25bc ") + shown + "%", (up ? "up " : "down ") + (good ? "good" : "bad")];
  }

  // -- ranges ------------------------------------------------------------------------------

  function wallClock(text) {
    // The date and time as written (in the range's own offset), not in the browser's zone.
    const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d+))?)?/.exec(String(text));
    if (!m) return null;
    const [year, month, day, hour, minute, second] = m.slice(1, 7).map((v) => Number(v || 0));
    const fraction = Number(m[7] || 0);
    return { year, month, day, hour, minute, second, fraction, text: String(text) };
  }

  function pad(n) {
    return String(n).padStart(2, "0");
  }

  function dayLabel(w) {
    return MONTHS[w.month - 1] + " " + w.day;
  }

  function dateTime(w) {
    return w.year + "-" + pad(w.month) + "-" + pad(w.day) + " " + pad(w.hour) + ":" + pad(w.minute);
  }

  function dateRangeLabel(range) {
    // The command line's range_label: half-open, so an end at midnight shows the day before.
    const start = wallClock(range.start);
    const end = wallClock(range.end);
    if (!start || !end) return String(range.start) + ".." + String(range.end);
    const midnight = end.hour === 0 && end.minute === 0 && end.second === 0 && end.fraction === 0;
    const startMidnight = start.hour === 0 && start.minute === 0 && start.second === 0 && start.fraction === 0;
    if (!midnight || !startMidnight) return dateTime(start) + " " + DASH + " " + dateTime(end);
    const lastDate = new Date(Date.UTC(end.year, end.month - 1, end.day - 1));
    const last = { year: lastDate.getUTCFullYear(), month: lastDate.getUTCMonth() + 1, day: lastDate.getUTCDate() };
    if (last.year === start.year && last.month === start.month && last.day === start.day) {
      return dayLabel(start) + ", " + start.year;
    }
    if (start.year === last.year && start.month === last.month) {
      return dayLabel(start) + DASH + last.day + ", " + start.year;
    }
    if (start.year === last.year) {
      return dayLabel(start) + " " + DASH + " " + dayLabel(last) + ", " + start.year;
    }
    return dayLabel(start) + ", " + start.year + " " + DASH + " " + dayLabel(last) + ", " + last.year;
  }

  function rangeLabel(spec) {
    if (spec === null || spec === undefined) return "any time";
    if (typeof spec === "string") return spec.replace(/-/g, " ");
    return dateRangeLabel(spec);
  }

  // -- the page's state: the form, mirrored in the URL's fragment ---------------------------

  const meta = (name) => {
    const element = document.querySelector('meta[name="' + name + '"]');
    return element ? element.getAttribute("content") || "" : "";
  };
  const RELATIVE = meta("closefunnel-ranges").split(" ").filter(Boolean);
  const SAME_DAYS = meta("closefunnel-same-days").split(" ").filter(Boolean);
  const MAX_COMPARED = Math.max(0, Number(meta("closefunnel-max-compared")) || 0);

  const $ = (id) => document.getElementById(id);
  const form = $("query");
  const pipelineSelect = $("pipeline");
  const rangeSelect = $("range");
  const comparedList = $("compared-list");
  const addCompared = $("add-compared");
  const statusLine = $("status");
  const results = $("results");
  const tokenForm = $("token-form");

  let pipelines = [];
  let userNames = new Map();
  let namesLoaded = false;
  let pending = null; // what to run again once a token is given

  function el(tag, attributes, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "text") node.textContent = String(value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(typeof child === "string" ? document.createTextNode(child) : child);
    }
    return node;
  }

  function svg(tag, attributes, text) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, String(value));
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  function addOption(select, value, label) {
    select.append(el("option", { value, text: label }));
  }

  function fillRangeSelect(select, withSameDays) {
    for (const name of RELATIVE) addOption(select, name, rangeLabel(name));
    if (withSameDays) for (const name of SAME_DAYS) addOption(select, name, rangeLabel(name) + " (needs dates)");
    addOption(select, "custom", "Dates…");
  }

  function isoDay(date) {
    return date.getFullYear() + "-" + pad(date.getMonth() + 1) + "-" + pad(date.getDate());
  }

  function nextDay(day) {
    const [y, m, d] = day.split("-").map(Number);
    return isoDay(new Date(y, m - 1, d + 1));
  }

  function previousDay(day) {
    const [y, m, d] = day.split("-").map(Number);
    return isoDay(new Date(y, m - 1, d - 1));
  }

  function datesInputs(prefix, labelText) {
    const start = el("input", { type: "date", id: prefix + "-start", "aria-label": labelText + ": first day" });
    const end = el("input", { type: "date", id: prefix + "-end", "aria-label": labelText + ": last day (inclusive)" });
    const box = el("span", { class: "field dates", hidden: true }, start, " to ", end);
    return { box, start, end };
  }

  // A range as the API takes it: a name, or START..END days (the end day is inclusive on
  // the page, exclusive in the API) read in the browser's time zone via tz_offset.
  function rangeValue(select, start, end) {
    if (select.value !== "custom") return select.value;
    if (!start.value || !end.value) return "";
    return start.value + ".." + nextDay(end.value);
  }

  function setRange(select, start, end, box, value) {
    const custom = /^(\d{4}-\d{2}-\d{2})\.\.(\d{4}-\d{2}-\d{2})$/.exec(value || "");
    if (custom) {
      select.value = "custom";
      start.value = custom[1];
      end.value = previousDay(custom[2]);
    } else if (value && [...select.options].some((o) => o.value === value)) {
      select.value = value;
    }
    box.hidden = select.value !== "custom";
  }

  let comparedCount = 0;

  function addComparedRow(value) {
    if (comparedList.children.length >= MAX_COMPARED) return null;
    comparedCount += 1;
    const id = "compared-" + comparedCount;
    const select = el("select", { id, class: "compared-range" });
    fillRangeSelect(select, true);
    const dates = datesInputs(id, "Compared period");
    const remove = el("button", { type: "button", class: "remove", text: "Remove" });
    const label = el("label", { for: id, text: "Period" });
    const row = el("li", {}, label, select, dates.box, remove);
    row.rangeParts = { select, start: dates.start, end: dates.end, box: dates.box };
    select.value = "last-month";
    select.addEventListener("change", () => {
      dates.box.hidden = select.value !== "custom";
    });
    remove.addEventListener("click", () => {
      row.remove();
      updateAddButton();
      addCompared.focus();
    });
    comparedList.append(row);
    if (value) setRange(select, dates.start, dates.end, dates.box, value);
    updateAddButton();
    return row;
  }

  function updateAddButton() {
    addCompared.disabled = comparedList.children.length >= MAX_COMPARED;
    addCompared.hidden = MAX_COMPARED === 0;
  }

  function datesProblem(select, start, end, what) {
    // Dates asked for but not usable: said, rather than the period silently left out.
    if (select.value !== "custom") return null;
    if (!start.value || !end.value) return what + ": pick the first and the last day.";
    if (end.value < start.value) return what + ": the last day is before the first.";
    return null;
  }

  function formProblem() {
    const problems = [datesProblem(rangeSelect, $("range-start"), $("range-end"), "Range")];
    for (const row of comparedList.children) {
      const parts = row.rangeParts;
      problems.push(datesProblem(parts.select, parts.start, parts.end, "Compared period"));
    }
    return problems.find(Boolean) || null;
  }

  function readForm() {
    const range = rangeValue(rangeSelect, $("range-start"), $("range-end"));
    const compared = [...comparedList.children].map((row) =>
      rangeValue(row.rangeParts.select, row.rangeParts.start, row.rangeParts.end),
    );
    return { pipeline: pipelineSelect.value, range, compared };
  }

  function writeFragment(state) {
    const params = new URLSearchParams();
    params.set("pipeline", state.pipeline);
    if (state.range) params.set("range", state.range);
    for (const value of state.compared) params.append("compare", value);
    history.replaceState(null, "", "#" + params.toString());
  }

  function readFragment() {
    const params = new URLSearchParams(location.hash.replace(/^#/, ""));
    return {
      pipeline: params.get("pipeline"),
      range: params.get("range"),
      compared: params.getAll("compare").slice(0, MAX_COMPARED),
    };
  }

  function queryString(state) {
    const params = new URLSearchParams();
    if (state.range) params.set("range", state.range);
    for (const value of state.compared) params.append("compare", value);
    const custom = [state.range, ...state.compared].some((v) => /^\d{4}-\d{2}-\d{2}\.\./.test(v));
    if (custom) params.set("tz_offset", String(-new Date().getTimezoneOffset() / 60));
    return params.toString();
  }

  // -- the API -------------------------------------------------------------------------------

  class NeedsToken extends Error {}
  class ApiError extends Error {}

  function bounded(text, limit) {
    const value = String(text);
    return value.length > limit ? value.slice(0, limit) + "…" : value;
  }

  async function api(path, accept) {
    const headers = { Accept: accept || "application/json" };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = "Bearer " + token;
    let response;
    try {
      response = await fetch(path, { headers, credentials: "same-origin", cache: "no-store" });
    } catch (error) {
      throw new ApiError("the server could not be reached (" + bounded(error.message, 200) + ")");
    }
    if (response.status === 401) throw new NeedsToken("this server needs its token");
    if (!response.ok) {
      let detail = "HTTP " + response.status;
      try {
        const body = await response.json();
        if (body && typeof body.detail === "string") detail = body.detail;
      } catch (ignored) {
        // not JSON: keep the status
      }
      throw new ApiError(bounded(detail, 1000));
    }
    return accept ? response : response.json();
  }

  function askForToken(retry) {
    pending = retry;
    tokenForm.hidden = false;
    statusLine.textContent = "This server needs its token.";
    $("token").focus();
  }

  tokenForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token").value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_KEY, token);
    $("token").value = "";
    tokenForm.hidden = true;
    const retry = pending;
    pending = null;
    if (retry) retry();
  });

  // -- drawing -------------------------------------------------------------------------------

  function periodsOf(result, state) {
    // [{label, range, totals, deltas, cls}], the base first.
    const comparison = Array.isArray(result.comparisons) ? result : null;
    const base = comparison ? result.base : result;
    const baseRange = comparison ? result.base_range : result.range;
    const list = [
      { key: "base", label: rangeLabel(state.range || "this-month"), range: baseRange, totals: base, deltas: null },
    ];
    for (const [index, period] of (comparison ? result.comparisons : []).entries()) {
      list.push({
        key: String(index),
        label: rangeLabel(period.compared),
        range: period.compared_range,
        totals: period.totals,
        deltas: period,
      });
    }
    return list.map((period, index) => ({ ...period, cls: "p" + (index % 5) }));
  }

  function periodList(periods) {
    const list = el("ul", { class: "periods" });
    for (const [index, period] of periods.entries()) {
      const item = el(
        "li",
        { "data-period": period.key },
        el("span", { class: "swatch " + period.cls, "aria-hidden": "true" }),
        el("strong", { text: index === 0 ? "Base: " : "Compared: " }),
        period.label,
      );
      if (period.range && typeof period.range === "object") {
        item.append(" ", el("span", { class: "dates", "data-start": period.range.start, "data-end": period.range.end, text: "(" + dateRangeLabel(period.range) + ")" }));
      }
      list.append(item);
    }
    return list;
  }

  function funnelChart(periods, title) {
    const values = periods.map((p) => FUNNEL.map((metric) => (p.totals.aggregations ? p.totals.aggregations[metric] : null)));
    const finite = values.flat().filter((v) => !missing(v) && v > 0);
    const max = finite.length ? Math.max(...finite) : 1;
    const bar = 16;
    const gap = 3;
    const groupGap = 14;
    // As wide as the space it has (no wider than 640): at phone width the text stays legible.
    const width = Math.round(Math.max(300, Math.min(640, (results.clientWidth || 640) - 34)));
    const left = width < 480 ? 96 : 112;
    const right = 80;
    const plot = width - left - right;
    const groupHeight = periods.length * (bar + gap) - gap;
    const height = FUNNEL.length * (groupHeight + groupGap) + 6;
    const chart = svg("svg", { class: "funnel", viewBox: "0 0 " + width + " " + height, role: "img", "aria-label": title });
    chart.append(svg("title", {}, title));
    FUNNEL.forEach((metric, stage) => {
      const top = 4 + stage * (groupHeight + groupGap);
      chart.append(svg("text", { class: "stage", x: 0, y: top + groupHeight / 2 + 4 }, LABEL[metric]));
      periods.forEach((period, row) => {
        const value = values[row][stage];
        const y = top + row * (bar + gap);
        const w = missing(value) || value <= 0 ? 0 : Math.max(1, (value / max) * plot);
        const rect = svg("rect", {
          class: period.cls,
          x: left,
          y,
          width: w.toFixed(1),
          height: bar,
          rx: 2,
          "data-metric": metric,
          "data-period": period.key,
          "data-value": missing(value) ? "" : value,
        });
        rect.append(svg("title", {}, period.label + ": " + LABEL[metric] + " " + formatValue(metric, value)));
        chart.append(rect);
        chart.append(svg("text", { x: left + w + 6, y: y + bar - 4 }, formatValue(metric, value)));
      });
    });
    chart.append(svg("line", { x1: left, x2: left, y1: 0, y2: height }));
    return chart;
  }

  function cell(tag, attributes, text) {
    return el(tag, { ...attributes, text });
  }

  function rawValue(value) {
    return missing(value) ? "null" : String(value);
  }

  function metricsTable(periods) {
    const table = el("table", { class: "metrics" }, el("caption", { text: "Metrics" }));
    const head = el("tr", {}, el("th", { scope: "col", text: "Metric" }));
    for (const period of periods) {
      head.append(el("th", { scope: "col", class: period.key === "base" ? "base" : null, text: period.label }));
      if (period.key !== "base") {
        head.append(el("th", { scope: "col", "aria-label": "Change vs " + period.label, text: "\u0394" }));
        head.append(el("th", { scope: "col", "aria-label": "Relative change vs " + period.label, text: "%" }));
      }
    }
    table.append(el("thead", {}, head));
    const body = el("tbody");
    const base = periods[0].totals.aggregations;
    for (const [metric, label] of METRIC_LABELS) {
      const row = el("tr", { "data-metric": metric }, el("th", { scope: "row", text: label }));
      const baseValue = base ? base[metric] : null;
      row.append(cell("td", { class: "base", "data-period": "base", "data-kind": "value", "data-raw": rawValue(baseValue) }, formatValue(metric, baseValue)));
      for (const period of periods.slice(1)) {
        const d = period.deltas && period.deltas.aggregations ? period.deltas.aggregations[metric] : null;
        const at = { "data-period": period.key };
        row.append(cell("td", { ...at, "data-kind": "value", "data-raw": rawValue(d && d.compared) }, formatValue(metric, d ? d.compared : null)));
        row.append(cell("td", { ...at, "data-kind": "delta", "data-raw": rawValue(d && d.delta) }, formatDelta(metric, d ? d.delta : null)));
        const [text, cls] = changeMark(metric, d ? d.change : null);
        row.append(cell("td", { ...at, "data-kind": "change", "data-raw": rawValue(d && d.change), class: cls }, text));
      }
      body.append(row);
    }
    table.append(body);
    return table;
  }

  function userName(id) {
    return userNames.get(id) || id;
  }

  function usersTable(periods) {
    const base = new Map(periods[0].totals.data.map((row) => [row.user_id, row]));
    const ids = new Set(base.keys());
    const byPeriod = periods.slice(1).map((period) => {
      const rows = new Map((period.deltas ? period.deltas.users : []).map((row) => [row.user_id, row]));
      for (const id of rows.keys()) ids.add(id);
      return rows;
    });
    const columns = [{ label: "User", kind: "text" }];
    for (const metric of USER_COLUMNS) columns.push({ label: LABEL[metric], kind: "number", metric });
    for (const period of periods.slice(1)) columns.push({ label: "Value won vs " + period.label, kind: "number", change: true, period: period.key });
    const rows = [...ids].map((id) => {
      const row = base.get(id);
      const keys = [userName(id).toLocaleLowerCase()];
      const tr = el("tr", { "data-user": id }, cell("td", { class: "name" }, userName(id)));
      for (const metric of USER_COLUMNS) {
        const value = row ? row[metric] : null;
        keys.push(missing(value) ? null : value);
        tr.append(cell("td", { "data-metric": metric, "data-raw": rawValue(value) }, formatValue(metric, value)));
      }
      byPeriod.forEach((rowsOfPeriod, index) => {
        const deltas = rowsOfPeriod.get(id);
        const change = deltas ? deltas.value_total_won.change : null;
        const [text, cls] = changeMark("value_total_won", change);
        keys.push(missing(change) ? null : change);
        tr.append(cell("td", { class: cls, "data-period": String(index), "data-raw": rawValue(change) }, text));
      });
      return { tr, keys };
    });
    const table = el("table", { class: "users" }, el("caption", { text: "By user (" + periods[0].label + ")" }));
    const head = el("tr");
    const body = el("tbody");
    const headers = columns.map((column, index) => {
      const arrow = el("span", { class: "arrow", "aria-hidden": "true" });
      const button = el("button", { type: "button", "data-column": index }, column.label, " ", arrow);
      const th = el("th", { scope: "col", "aria-sort": "none" }, button);
      button.addEventListener("click", () => sortBy(index));
      head.append(th);
      return { th, arrow };
    });
    table.append(el("thead", {}, head), body);
    let current = { index: -1, ascending: false };

    function sortBy(index, ascending) {
      const next = ascending !== undefined ? ascending : current.index === index ? !current.ascending : columns[index].kind === "text";
      current = { index, ascending: next };
      const direction = next ? 1 : -1;
      rows.sort((a, b) => {
        const x = a.keys[index];
        const y = b.keys[index];
        if (x === null && y === null) return a.keys[0].localeCompare(b.keys[0]);
        if (x === null) return 1; // nothing to show sorts last either way
        if (y === null) return -1;
        const order = typeof x === "string" ? x.localeCompare(y) : x - y;
        return order !== 0 ? direction * order : a.keys[0].localeCompare(b.keys[0]);
      });
      headers.forEach(({ th, arrow }, i) => {
        th.setAttribute("aria-sort", i === index ? (next ? "ascending" : "descending") : "none");
        arrow.textContent = i === index ? (next ? "\u2191" : "\u2193") : "";
      });
      body.replaceChildren(...rows.map((row) => row.tr));
    }

    if (rows.length === 0) {
      body.append(el("tr", {}, el("td", { colspan: columns.length, class: "note", text: "no opportunities in scope" })));
    } else {
      sortBy(1 + USER_COLUMNS.indexOf("value_total_won"), false); // as the command line: value won first
    }
    return table;
  }

  function csvButton(pipeline, state) {
    const button = el("button", { type: "button", class: "csv", text: "Download per-user CSV" });
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        const path = "funnel/" + encodeURIComponent(pipeline.id) + "/users.csv?" + queryString(state);
        const response = await api(path, "text/csv");
        const blob = await response.blob();
        const link = el("a", { href: URL.createObjectURL(blob), download: "funnel-" + pipeline.id.replace(/[^A-Za-z0-9_.-]/g, "_") + ".csv" });
        document.body.append(link);
        link.click();
        link.remove();
        setTimeout(() => URL.revokeObjectURL(link.href), 10000);
      } catch (error) {
        if (error instanceof NeedsToken) askForToken(() => button.click());
        else statusLine.textContent = "The CSV could not be fetched: " + bounded(error.message, 500);
      } finally {
        button.disabled = false;
      }
    });
    return button;
  }

  function drawReport(section, pipeline, state, result) {
    const periods = periodsOf(result, state);
    section.replaceChildren(
      el("h2", { text: pipeline.name }),
      periodList(periods),
      el("h3", { text: "Funnel" }),
      funnelChart(periods, "Funnel of " + pipeline.name + ": opportunities, completed, won, per period"),
      el("div", { class: "table-wrap" }, metricsTable(periods)),
      el("div", { class: "table-wrap" }, usersTable(periods)),
      el("div", { class: "tools" }, csvButton(pipeline, state)),
    );
    if (!namesLoaded) section.append(el("p", { class: "note", text: "User names could not be loaded; ids are shown." }));
  }

  // -- running a query -------------------------------------------------------------------------

  async function loadNames() {
    if (namesLoaded) return;
    try {
      const users = await api("users");
      userNames = new Map(users.map((user) => [String(user.id), String(user.name)]));
      namesLoaded = true;
    } catch (error) {
      if (error instanceof NeedsToken) throw error;
      // Names are a nicety: the report still shows, with ids.
    }
  }

  async function run(state) {
    const button = $("show");
    button.disabled = true;
    statusLine.textContent = "Loading…";
    results.removeAttribute("data-ready");
    results.replaceChildren();
    try {
      await loadNames();
      const chosen = state.pipeline === "*" ? pipelines.slice(0, MAX_PIPELINES) : pipelines.filter((p) => p.id === state.pipeline);
      const sections = chosen.map((pipeline) => {
        const section = el("section", { class: "report", "data-pipeline": pipeline.id, "aria-busy": "true" }, el("h2", { text: pipeline.name }), el("p", { class: "note", text: "Loading…" }));
        results.append(section);
        return { pipeline, section };
      });
      const query = queryString(state);
      let failed = 0;
      let next = 0;
      async function worker() {
        while (next < sections.length) {
          const { pipeline, section } = sections[next++];
          try {
            const result = await api("funnel/" + encodeURIComponent(pipeline.id) + (query ? "?" + query : ""));
            drawReport(section, pipeline, state, result);
          } catch (error) {
            if (error instanceof NeedsToken) throw error;
            failed += 1;
            section.replaceChildren(el("h2", { text: pipeline.name }), el("p", { class: "error", role: "alert", text: error.message }));
          } finally {
            section.setAttribute("aria-busy", "false");
          }
        }
      }
      await Promise.all([worker(), worker()]); // two at a time: the app's key is shared
      let note = "";
      if (state.pipeline === "*" && pipelines.length > MAX_PIPELINES) {
        note = " Showing the first " + MAX_PIPELINES + " of " + pipelines.length + " pipelines; pick one to see the others.";
      }
      statusLine.textContent = (failed ? failed + " of " + sections.length + " reports failed." : "") + (sections.length ? "" : "No such pipeline.") + note;
      results.setAttribute("data-ready", "true");
    } catch (error) {
      if (error instanceof NeedsToken) askForToken(() => run(state));
      else statusLine.textContent = error.message;
    } finally {
      button.disabled = false;
    }
  }

  async function start() {
    fillRangeSelect(rangeSelect, false);
    rangeSelect.value = "this-month";
    rangeSelect.addEventListener("change", () => {
      $("range-dates").hidden = rangeSelect.value !== "custom";
    });
    addCompared.addEventListener("click", () => {
      const row = addComparedRow();
      if (row) row.rangeParts.select.focus();
    });
    updateAddButton();
    const wanted = readFragment();
    setRange(rangeSelect, $("range-start"), $("range-end"), $("range-dates"), wanted.range);
    if (wanted.pipeline === null) {
      if (MAX_COMPARED > 0) addComparedRow("last-month");
    } else {
      for (const value of wanted.compared) addComparedRow(value);
    }
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const problem = formProblem();
      if (problem) {
        statusLine.textContent = problem;
        return;
      }
      const state = readForm();
      writeFragment(state);
      run(state);
    });
    loadPipelines(wanted);
  }

  async function loadPipelines(wanted) {
    try {
      statusLine.textContent = "Loading pipelines…";
      pipelines = (await api("pipelines")).map((p) => ({ id: String(p.id), name: String(p.name) }));
      pipelineSelect.replaceChildren(el("option", { value: "*", text: "All pipelines" }));
      for (const pipeline of pipelines) addOption(pipelineSelect, pipeline.id, pipeline.name);
      statusLine.textContent = pipelines.length ? "" : "This organization has no pipelines.";
      document.body.setAttribute("data-pipelines", "loaded");
      if (wanted.pipeline !== null && (wanted.pipeline === "*" || pipelines.some((p) => p.id === wanted.pipeline))) {
        pipelineSelect.value = wanted.pipeline;
        run(readForm());
      }
    } catch (error) {
      if (error instanceof NeedsToken) askForToken(() => loadPipelines(wanted));
      else statusLine.textContent = "The pipelines could not be loaded: " + error.message;
    }
  }

  // The formatting rules, for the browser tests (checked against the command line's) and
  // for anyone at the console; frozen, and nothing here reads or changes the page.
  window.closefunnelFormat = Object.freeze({ formatValue, formatDelta, changeMark, rangeLabel });

  start();
})();
