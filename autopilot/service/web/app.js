// The dashboard of `autopilot serve`: plain JS over /api/v1, charts by uPlot (vendored from
// npm, loaded from /dashboard/vendor/), live over each run's Server-Sent Events stream.
//
// The token: typed once and kept in sessionStorage (this tab only, gone when it closes),
// sent as `Authorization: Bearer` on every request. EventSource cannot send headers, so
// the stream is opened with a short-lived ticket from POST .../stream-ticket (signed with
// the token, one run, one minute) rather than with the token in its URL.
"use strict";

const API = "/api/v1";
const TOKEN_KEY = "train-autopilot-token";
const COLORS = { applied: "#2563eb", rollback: "#ea580c", rewind: "#dc2626", reflex: "#9333ea" };
const MAX_CHARTS = 4;
// points per series asked of the server (LTTB there); a series streamed past twice that is
// thinned back to it here, so a page left open on a long run stays about one size.
// `?max_points=N` in the page's URL overrides it (the tests use a small one).
const MAX_POINTS = Math.min(Math.max(
  +new URLSearchParams(location.search).get("max_points") || 2000, 3), 100000);
const $ = (sel) => document.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "on") for (const [ev, fn] of Object.entries(v)) node.addEventListener(ev, fn);
    else if (k === "dataset") Object.assign(node.dataset, v);
    else if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

// -- token and requests --------------------------------------------------------------------
const token = () => sessionStorage.getItem(TOKEN_KEY) || "";

function showToken() {
  $("#token-state").textContent = token() ? "token set (this tab)" : "no token: read only";
}

function message(text, kind) {
  const box = $("#message");
  box.textContent = text;
  box.className = kind || "";
}

async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (token()) headers.Authorization = `Bearer ${token()}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const answer = await fetch(API + path, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = await answer.json().catch(() => ({}));
  if (!answer.ok) {
    const error = new Error(`${answer.status}: ${data.detail || answer.statusText}`);
    error.status = answer.status;
    throw error;
  }
  return data;
}

async function write(method, path, body, done) {
  try {
    const data = await api(method, path, body);
    message(done(data), "ok");
    refreshRun();
    return data;
  } catch (error) {
    message(`refused: ${error.message}`, "error");
    return null;
  }
}

// -- formatting ----------------------------------------------------------------------------
const num = (v) => (v === null || v === undefined ? "–" : typeof v === "number"
  ? (Math.abs(v) >= 1e4 || (v !== 0 && Math.abs(v) < 1e-3) ? v.toExponential(3) : +v.toPrecision(4))
  : Array.isArray(v) ? `[${v.map(num).join(", ")}]` : String(v));
const usd = (v) => `$${(v || 0).toFixed(4)}`;

function describeAction(a) {
  if (a.op === "rewind") return `rewind to ${a.to === "step" ? `step ${a.to_step}` : a.to}`;
  return a.multiplier ? `${a.knob} ×${a.multiplier}` : `${a.knob} = ${num(a.value)}`;
}

function usageText(u) {
  if (!u || !u.calls) return "no LLM call";
  return `${u.tokens_in} tokens in, ${u.tokens_out} out, ${u.calls} call(s), ${usd(u.cost_usd)}`;
}

function verdictList(verdicts) {
  return el("ul", {}, verdicts.map((v) => el("li", { class: `verdict ${v.status}` },
    `${v.knob}: ${v.status}${v.rule ? ` by ${v.rule}` : ""}`,
    v.value !== null && v.value !== undefined ? ` → ${num(v.value)}` : "", ` (${v.reason})`)));
}

// -- the overview --------------------------------------------------------------------------
async function refreshOverview() {
  let runs;
  try { runs = await api("GET", "/runs"); } catch (error) { message(error.message, "error"); return; }
  const rows = runs.map((r) => el("tr", { dataset: { run: r.id } },
    el("td", {}, el("a", { href: `#/run/${encodeURIComponent(r.id)}` }, r.id)),
    el("td", { class: "status" }, r.status), el("td", {}, num(r.last_step)),
    el("td", {}, r.key_metric ? `${r.key_metric} ${num(r.key_value)}` : "–"),
    el("td", {}, r.heartbeat_age_s === null ? "–" : `${r.heartbeat_age_s.toFixed(1)} s`),
    el("td", {}, r.mode || "unset"), el("td", {}, r.pilot.state),
    el("td", {}, r.pending_reviews), el("td", {}, usd(r.spend_usd))));
  $("#runs tbody").replaceChildren(...rows);
  if (!runs.length) $("#runs tbody").append(el("tr", {}, el("td", { colspan: 9 }, "no runs under the root yet")));
}

// -- one run -------------------------------------------------------------------------------
let run = null;

function newRun(id) {
  return { id, offset: 0, segment: null, series: {}, ledger: [], decisions: [], review: [],
    charts: {}, stream: null, timer: null, pending: {} };
}

function markers() {
  const found = [];
  for (const row of run.ledger) {
    if (row.decision !== "applied" || row.step === null) continue;
    const rewind = row.op === "rewind" || row.intent === "rewind";
    if (!rewind && row.op !== "set") continue;
    const kind = row.reflex ? "reflex" : row.intent === "rollback" ? "rollback" : rewind ? "rewind" : "applied";
    const what = rewind ? `rewind to step ${row.snapshot_step}` : `${row.knob} ${num(row.before)} → ${num(row.after)}`;
    found.push({ step: row.step, kind, text: `step ${row.step}: ${kind}, ${what} (${row.source})` });
  }
  return found;
}

function episodes() {
  const bands = {};
  for (const view of run.decisions) {
    for (const d of view.record.diagnoses) {
      if (!d.episode) continue;
      const band = bands[d.episode] || { from: d.onset_step ?? d.step, to: d.step, kind: d.kind };
      band.from = Math.min(band.from, d.onset_step ?? d.step);
      band.to = Math.max(band.to, d.step);
      bands[d.episode] = band;
    }
  }
  return Object.values(bands);
}

function drawMarks(u) {
  const { ctx, bbox } = u;
  ctx.save();
  for (const band of episodes()) {
    const x0 = u.valToPos(band.from, "x", true);
    const x1 = Math.max(u.valToPos(band.to, "x", true), x0 + 3);
    ctx.fillStyle = "#facc1540";
    ctx.fillRect(x0, bbox.top, x1 - x0, bbox.height);
  }
  for (const m of markers()) {
    const x = Math.round(u.valToPos(m.step, "x", true));
    if (x < bbox.left || x > bbox.left + bbox.width) continue;
    ctx.strokeStyle = COLORS[m.kind];
    ctx.lineWidth = 2 * devicePixelRatio;
    ctx.setLineDash(m.kind === "reflex" ? [6, 4] : []);
    ctx.beginPath();
    ctx.moveTo(x, bbox.top);
    ctx.lineTo(x, bbox.top + bbox.height);
    ctx.stroke();
  }
  ctx.restore();
}

// the first metrics page drawn on every chart: the readiness signal a benchmark waits for
function signalDrawn() {
  if (document.body.dataset.chartsReady) return;
  const names = Object.keys(run.series).sort().slice(0, MAX_CHARTS);
  if (!names.every((n) => run.charts[n] && run.charts[n].box.dataset.drawn)) return;
  document.body.dataset.chartsReady = "1";
  performance.mark("charts-drawn");
}

function chartDrawn(u) {
  if (!run || !u.data[0].length) return;
  u.root.parentElement.dataset.drawn = "1";
  signalDrawn();
}

function chart(name) {
  if (run.charts[name]) return run.charts[name];
  const box = el("div", { class: "chart", dataset: { metric: name, points: 0 } });
  $("#charts").append(box);
  const width = Math.max(($("#charts").clientWidth || 900) - 10, 300);
  const opts = {
    title: name, width, height: 220,
    scales: { x: { time: false } },
    series: [{ label: "step" }, { label: name, stroke: "#0f766e", width: 1.5, spanGaps: false }],
    hooks: { draw: [drawMarks, chartDrawn] },
  };
  const plot = new uPlot(opts, [[], []], box);
  run.charts[name] = { box, plot };
  return run.charts[name];
}

function addPoints(page) {
  if (page.segment !== run.segment) {
    run.series = {};
    run.segment = page.segment;
  }
  for (const [name, s] of Object.entries(page.series)) {
    const mine = run.series[name] || (run.series[name] = { steps: [], values: [] });
    for (let i = 0; i < s.steps.length; i++) {
      // a rewind replays steps: the abandoned trajectory's points give way to the new ones
      while (mine.steps.length && mine.steps[mine.steps.length - 1] >= s.steps[i]) {
        mine.steps.pop();
        mine.values.pop();
      }
      mine.steps.push(s.steps[i]);
      mine.values.push(s.values[i]);
    }
    if (mine.steps.length > 2 * MAX_POINTS) run.series[name] = thin(mine, MAX_POINTS);
  }
  redraw();
}

// the server's LTTB (autopilot/service/lttb.py) over the finite points; every null is kept.
// The first and last points stay, so the x range, and the markers drawn on it, do not move.
function thin(series, threshold) {
  const { steps, values } = series;
  const finite = [];
  for (let i = 0; i < steps.length; i++) if (values[i] !== null) finite.push(i);
  const kept = new Set(steps.map((_, i) => i).filter((i) => values[i] === null));
  for (const j of lttb(finite.map((i) => steps[i]), finite.map((i) => values[i]), threshold)) {
    kept.add(finite[j]);
  }
  const order = [...kept].sort((a, b) => a - b);
  return { steps: order.map((i) => steps[i]), values: order.map((i) => values[i]) };
}

function lttb(xs, ys, threshold) {
  const n = xs.length;
  if (n <= threshold) return xs.map((_, i) => i);
  const edges = [];  // the buckets of the inner points, as the server cuts them
  for (let i = 0; i < threshold - 1; i++) edges.push(Math.floor(1 + (i * (n - 2)) / (threshold - 2)));
  const keep = [0];
  let a = 0;
  for (let i = 0; i < threshold - 2; i++) {
    const lo = edges[i], hi = Math.max(edges[i + 1], lo + 1);
    const nextLo = edges[i + 1], nextHi = i + 2 < edges.length ? edges[i + 2] : n;
    let cx = xs[n - 1], cy = ys[n - 1];
    if (nextHi > nextLo) {
      cx = 0; cy = 0;
      for (let j = nextLo; j < nextHi; j++) { cx += xs[j]; cy += ys[j]; }
      cx /= nextHi - nextLo; cy /= nextHi - nextLo;
    }
    let best = lo, area = -1;
    for (let j = lo; j < hi; j++) {
      const s = Math.abs((xs[a] - cx) * (ys[j] - ys[a]) - (xs[a] - xs[j]) * (cy - ys[a]));
      if (s > area) { area = s; best = j; }
    }
    keep.push(best);
    a = best;
  }
  keep.push(n - 1);
  return keep;
}

function redraw() {
  const names = Object.keys(run.series).sort().slice(0, MAX_CHARTS);
  for (const name of names) {
    const { box, plot } = chart(name);
    const s = run.series[name];
    plot.setData([s.steps, s.values]);
    box.dataset.points = s.steps.length;
    box.dataset.firstStep = s.steps[0];
    box.dataset.lastStep = s.steps[s.steps.length - 1];
    box.dataset.markers = markers().length;
  }
  $("#markers").replaceChildren(...markers().slice(-30).map((m) =>
    el("li", { dataset: { kind: m.kind, step: m.step } }, m.text)),
    ...episodes().map((b) => el("li", { dataset: { kind: "episode" } }, `episode ${b.kind}: steps ${b.from}–${b.to}`)));
}

async function loadMetrics() {
  const current = run;
  const page = await api("GET", `/runs/${current.id}/metrics?offset=${current.offset}&max_points=${MAX_POINTS}`);
  if (run !== current) return;
  run.offset = page.next_offset;
  addPoints(page);
  if (!Object.keys(run.series).length) signalDrawn();  // no metrics yet: nothing to draw
}

async function loadLedger() {
  const after = run.ledger.length ? run.ledger[run.ledger.length - 1].seq : 0;
  run.ledger.push(...await api("GET", `/runs/${run.id}/ledger?after_seq=${after}`));
  $("#ledger tbody").replaceChildren(...run.ledger.slice(-40).reverse().map((r) => el("tr",
    { dataset: { seq: r.seq, source: r.source || "" } },
    el("td", {}, r.seq), el("td", {}, num(r.step)), el("td", {}, r.source || "–"),
    el("td", {}, r.decision), el("td", {}, r.op === "set" ? `${r.knob} ${num(r.before)} → ${num(r.after)}` : r.op || "–"),
    el("td", {}, r.error || r.reason || ""))));
  redraw();
}

async function loadDecisions() {
  run.decisions = await api("GET", `/runs/${run.id}/decisions?tail=200`);
  $("#decisions").replaceChildren(...run.decisions.slice(-50).reverse().map(decisionItem));
  redraw();
}

function decisionItem(view) {
  const r = view.record;
  return el("li", { dataset: { decision: r.id } },
    el("b", {}, `step ${r.step}`), ` ${r.mode}, ${r.proposer || "no proposer"}, route ${r.route}`,
    r.fallback_reason ? el("span", { class: "muted" }, ` (fallback: ${r.fallback_reason})`) : "",
    el("ul", {}, r.diagnoses.map((d) => el("li", {}, `${d.kind} on ${d.metric} (${d.severity}): ${d.message}`,
      Object.keys(d.evidence || {}).length ? el("small", {}, ` evidence ${JSON.stringify(d.evidence)}`) : ""))),
    r.proposal ? el("div", {}, `proposal: ${r.proposal.actions.map(describeAction).join(", ") || "nothing"}; `,
      el("small", {}, r.proposal.reasoning || r.proposal.diagnosis)) : "",
    el("div", { class: "muted" }, usageText(r.usage)),
    r.verdicts.length ? verdictList(r.verdicts) : "",
    view.effects.map((e) => el("div", {}, `effect on ${e.knob}: ${e.verdict}, ${e.key_metric} `,
      `${(100 * e.change_rel).toFixed(1)} % vs projected${e.rolled_back ? ", rolled back" : ""}`)));
}

async function loadReview() {
  run.review = await api("GET", `/runs/${run.id}/review`);
  const pending = run.review.filter((i) => i.status === "pending");
  const decided = run.review.filter((i) => i.status !== "pending").slice(-5).reverse();
  $("#review").replaceChildren(...pending.map(reviewItem), ...decided.map((i) =>
    el("div", { class: "item muted", dataset: { item: i.id, status: i.status } },
      `${i.id}: ${i.status}${i.why ? ` (${i.why})` : ""}`)));
  if (!pending.length) $("#review").prepend(el("p", { class: "muted" }, "nothing waits for review"));
}

function reviewItem(item) {
  const edits = el("input", { class: "edits", size: 18, placeholder: "edits: lr=x0.7, …" });
  const why = el("input", { class: "why-input", size: 18, placeholder: "why reject" });
  const approve = () => write("POST", `/runs/${run.id}/review/${item.id}/approve`,
    { edits: edits.value.split(",").map((s) => s.trim()).filter(Boolean) },
    (a) => `approved ${item.id}: ${a.commands.length} command(s) queued (${a.commands.map((c) => c.source).join(", ")})`);
  const reject = () => write("POST", `/runs/${run.id}/review/${item.id}/reject`,
    { why: why.value || null }, () => `rejected ${item.id}`);
  const p = item.proposal;
  return el("div", { class: "item", dataset: { item: item.id, status: item.status } },
    el("b", {}, item.id), ` at step ${item.step}, by ${p.proposer}, confidence ${p.confidence}`,
    el("div", {}, `diagnosis: ${p.diagnosis}`),
    el("div", {}, `actions: ${p.actions.map(describeAction).join(", ")}`),
    p.reasoning ? el("div", { class: "why" }, p.reasoning) : "",
    el("div", { class: "muted" }, `cost: ${usageText(item.usage)}; expires after step ${item.expires_after_step}`),
    verdictList(item.verdicts),
    el("div", {}, edits, el("button", { class: "approve", on: { click: approve } }, "approve"), " ",
      why, el("button", { class: "reject", on: { click: reject } }, "reject")));
}

async function loadDetail() {
  const d = await api("GET", `/runs/${run.id}`);
  $("#run-status").textContent = `${d.status}, step ${num(d.last_step)}, segment ${num(d.segment)}`;
  $("#mode").value = d.mode || "";
  $("#mode-source").textContent = `set by ${d.mode_source}`;
  $("#pilot").textContent = `autopilot: ${d.pilot.state}${d.pilot.detail ? ` (${d.pilot.detail})` : ""}`
    + (d.fallback_reason ? `; last fallback: ${d.fallback_reason}` : "");
  const knobs = d.kernel ? d.kernel.knobs : [];
  const tbody = $("#knobs tbody");
  const focused = document.activeElement && tbody.contains(document.activeElement);
  if (!focused) tbody.replaceChildren(...knobs.map(knobRow));
  const b = await api("GET", `/runs/${run.id}/budget`);
  gauge("run", b.spent_run_usd, b.per_run_usd);
  gauge("day", b.spent_day_usd, b.per_day_usd);
}

function gauge(which, spent, cap) {
  const meter = $(`#budget-${which}`);
  meter.max = cap || 1;
  meter.value = spent;
  meter.high = 0.8 * (cap || 1);
  $(`#budget-${which}-text`).textContent = `${usd(spent)} of ${usd(cap)}`;
}

function knobRow(k) {
  const input = el("input", { class: "knob-value", size: 10, placeholder: "x0.5 or 0.01" });
  const set = () => write("POST", `/runs/${run.id}/commands`,
    { op: "set", assignments: [`${k.name}=${input.value.trim()}`] },
    (q) => `queued ${q.commands[0].id}: ${q.when.join("; ")}`);
  const bounds = k.lo === null && k.hi === null ? "–" : `[${num(k.lo)}, ${num(k.hi)}]`;
  return el("tr", { dataset: { knob: k.name } }, el("td", {}, k.name), el("td", {}, num(k.value)),
    el("td", { class: "bounds" }, bounds), el("td", {}, k.scale), el("td", {}, input),
    el("td", {}, el("button", { class: "set", on: { click: set } }, "set")));
}

async function refreshRun() {
  if (!run) return;
  try {
    await Promise.all([loadDetail(), loadMetrics(), loadLedger(), loadDecisions(), loadReview()]);
  } catch (error) {
    message(error.message, "error");
  }
}

// one reload per kind at a time, however many events arrive
function soon(kind, load) {
  if (run.pending[kind]) return;
  run.pending[kind] = setTimeout(async () => {
    try { await load(); } catch (error) { message(error.message, "error"); }
    if (run) run.pending[kind] = null;
  }, 150);
}

async function openStream(current) {
  let query = "since=now";
  if (token()) {
    try {
      query += `&ticket=${encodeURIComponent((await api("POST", `/runs/${current.id}/stream-ticket`)).ticket)}`;
    } catch (error) { message(`stream without a ticket: ${error.message}`, "error"); }
  }
  if (run !== current) return;
  const stream = new EventSource(`${API}/runs/${current.id}/stream?${query}`);
  current.stream = stream;
  stream.addEventListener("metrics", () => { soon("metrics", loadMetrics); soon("detail", loadDetail); });
  stream.addEventListener("ledger", () => soon("ledger", () => Promise.all([loadLedger(), loadDetail()])));
  stream.addEventListener("decision", () => soon("decisions", loadDecisions));
  stream.addEventListener("review", () => soon("review", loadReview));
  stream.addEventListener("open", () => { document.body.dataset.stream = "open"; });
  stream.onerror = () => {  // a ticket lasts a minute: reconnect with a fresh one
    stream.close();
    document.body.dataset.stream = "closed";
    if (run === current) setTimeout(() => run === current && openStream(current), 2000);
  };
}

function closeRun() {
  if (!run) return;
  if (run.stream) run.stream.close();
  clearInterval(run.timer);
  run = null;
}

async function showRun(id) {
  closeRun();
  run = newRun(id);
  delete document.body.dataset.chartsReady;
  $("#charts").replaceChildren();
  $("#run-id").textContent = id;
  $("#overview").hidden = true;
  $("#run").hidden = false;
  await refreshRun();
  openStream(run);
  run.timer = setInterval(() => soon("detail", loadDetail), 3000);
}

// -- wiring --------------------------------------------------------------------------------
let overviewTimer = null;

function route() {
  clearInterval(overviewTimer);
  const match = location.hash.match(/^#\/run\/(.+)$/);
  if (match) return showRun(decodeURIComponent(match[1]));
  closeRun();
  $("#run").hidden = true;
  $("#overview").hidden = false;
  refreshOverview();
  overviewTimer = setInterval(refreshOverview, 2000);
}

$("#token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("#token").value.trim());
  $("#token").value = "";
  showToken();
  if (run) { run.stream && run.stream.close(); openStream(run); }
});
$("#token-clear").addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); showToken(); });
$("#mode").addEventListener("change", () => write("PUT", `/runs/${run.id}/mode`,
  { mode: $("#mode").value || null }, (m) => `mode ${m.mode || "unset"}`));
for (const button of document.querySelectorAll("button[data-op]")) {
  button.addEventListener("click", () => write("POST", `/runs/${run.id}/commands`,
    { op: button.dataset.op }, (q) => `queued ${button.dataset.op} ${q.commands[0].id}: ${q.when.join("; ")}`));
}
$("#rewind").addEventListener("click", () => write("POST", `/runs/${run.id}/commands`,
  { op: "rewind", to: $("#rewind-to").value }, (q) => `queued rewind ${q.commands[0].id}: ${q.when.join("; ")}`));
window.addEventListener("hashchange", route);
showToken();
route();
