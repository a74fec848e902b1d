// The UGRO dashboard: reads the JSON API (/api/..., the CLI's --json shapes) and draws it with
// uPlot. Every value from the API goes into the page as text (textContent), never as markup.
// Views: #/ (nodes, queue, jobs, health changes), #/job/<id> (live curves, ranks, nodes, logs),
// #/compare?jobs=a,b (what differs, curves overlaid), #/serving (deployments, and a prompt box
// whose answer streams in as the deployment writes it).
"use strict";

const POLL_MS = 2000;
const COLORS = ["#175cd3", "#dc6803", "#039855", "#d92d20", "#7a5af8", "#0e9384", "#c11574", "#667085"];
let timers = [];
let charts = [];

// --- small helpers -------------------------------------------------------------------------
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

async function api(path) {
  const response = await fetch(path, { credentials: "same-origin" });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

// One number format with the CLI's (ugro/display/console.py, `number`): a loss to 4 decimals,
// a whole number with separators, a fraction below 1 to 4 significant digits, any other with
// separators and one decimal (12,217.1 tokens/s, never 1.222e+4).
function fmt(value, key = "") {
  if (value === null || value === undefined) return "-";
  if (Array.isArray(value)) return value.join(", ") || "-";
  if (typeof value !== "number") return String(value);
  if (String(key).includes("loss")) return value.toFixed(4);
  if (Number.isInteger(value)) return value.toLocaleString("en-US");
  if (Math.abs(value) < 1) return String(Number(value.toPrecision(4)));
  return value.toLocaleString("en-US", { minimumFractionDigits: 1, maximumFractionDigits: 1 });
}

function table(headers, rows, numeric = []) {
  const head = el("tr", {}, ...headers.map((h) => el("th", { text: h })));
  const body = rows.map((row) => {
    const tr = el("tr", row.attrs || {});
    // What a figure is (a loss?): its column's header, else its row's name.
    const name = typeof row.cells[0] === "string" ? row.cells[0] : "";
    row.cells.forEach((cell, i) => {
      const td = el("td", numeric.includes(i) ? { class: "num" } : {});
      td.append(cell instanceof Node ? cell : fmt(cell, headers[i] || name));
      tr.append(td);
    });
    return tr;
  });
  return el("table", {}, el("thead", {}, head), el("tbody", {}, ...body));
}

// A job's state, or its status line where one says more ("failed (attempt 1 of 3); attempt 2
// starts in 5 s": ugro/records/job_status.py).
function stateText(state, line = "") {
  return el("span", { class: `state-${state}`, text: line || state });
}

function stamp() {
  document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
}

function every(ms, task) {
  const run = async () => {
    try {
      await task();
      stamp();
    } catch (error) {
      showError(error);
    }
  };
  run();
  timers.push(setInterval(run, ms));
}

function showError(error) {
  const view = document.getElementById("view");
  let box = document.getElementById("error");
  if (!box) {
    box = el("div", { id: "error", class: "error" });
    view.prepend(box);
  }
  box.textContent = String(error.message || error);
}

// --- charts ----------------------------------------------------------------------------------
// A chart of several series over one x axis; data = [xs, ys1, ys2, ...] (null where a series
// has no point at that x).
function tick(value) {
  if (value === null || value === undefined) return "";
  const size = Math.abs(value);
  return size > 0 && (size < 0.01 || size >= 1e6) ? value.toExponential(1) : value.toLocaleString();
}

function chart(container, title, labels, data, xLabel = "step", owner = null) {
  const panel = el("div", { class: "panel" }, el("h3", { text: title }));
  container.append(panel);
  const width = Math.max(320, panel.clientWidth - 20);
  const options = {
    width,
    height: 220,
    scales: { x: { time: false } },
    axes: [{ label: xLabel }, { values: (u, splits) => splits.map(tick), size: 60 }],
    series: [{ label: xLabel }, ...labels.map((label, i) => ({
      label, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: true, points: { show: false },
    }))],
    legend: { live: false },
  };
  const plot = new uPlot(options, data, panel);
  charts.push(plot);
  if (owner) owner.push(plot);
  return { plot, panel };
}

// Destroy one section's charts (not the page's others) before that section draws again.
function destroy(owned) {
  for (const plot of owned.splice(0)) {
    plot.destroy();
    charts = charts.filter((c) => c !== plot);
  }
}

// Series keyed by x (step or second) -> aligned columns for uPlot.
function align(seriesList) {
  const xs = [...new Set(seriesList.flatMap((s) => [...s.keys()]))].sort((a, b) => a - b);
  return [xs, ...seriesList.map((s) => xs.map((x) => (s.has(x) ? s.get(x) : null)))];
}

// --- overview --------------------------------------------------------------------------------
async function overview(view) {
  const nodes = el("section");
  const queue = el("section");
  const jobs = el("section");
  const history = el("section");
  view.append(nodes, queue, jobs, history);
  every(POLL_MS * 2, async () => {
    const [info, q, list] = await Promise.all([api("/api/cluster"), api("/api/queue"), api("/api/jobs")]);
    document.getElementById("cluster-name").textContent = info.cluster;
    renderNodes(nodes, info);
    renderQueue(queue, q);
    renderJobs(jobs, list);
  });
  every(POLL_MS * 15, async () => renderHistory(history, await api("/api/health/history")));
}

function renderNodes(section, info) {
  const health = info.health || {};
  const verdicts = health.nodes || {};
  const source = health.source === "daemon" ? `the daemon's probe, ${fmt(health.age_s)} s ago`
    : health.source === "probe" ? `the last health check (${health.checked_at})` : "no health check yet";
  const rows = info.nodes.map((node) => {
    const verdict = verdicts[node.name] || {};
    // The daemon's probe sample, else the same facts from the last health check's report.
    const report = verdict.report || {};
    const gpus = report.gpus || [];
    const sample = verdict.sample || {
      gpus: gpus.map((g) => g.name),
      vram_gb: gpus.length ? Math.min(...gpus.map((g) => g.vram_total_mb || 0)) / 1024 : null,
      disk_free_gb: report.disk_free_gb,
      load1: report.load1,
    };
    return {
      cells: [node.name, node.rank, node.role, node.address,
        el("span", { class: `status-${verdict.status || "unknown"}`, text: verdict.status || "unknown" }),
        verdict.message || "", fmt(sample.gpus), fmt(sample.vram_gb), fmt(sample.disk_free_gb), fmt(sample.load1)],
    };
  });
  section.replaceChildren(el("h2", { text: `Nodes (${source})` }),
    table(["node", "rank", "role", "address", "health", "detail", "GPUs", "VRAM GB", "disk free GB", "load"], rows, [1, 7, 8, 9]));
}

function renderQueue(section, q) {
  const parts = [el("h2", { text: `Queue (${q.running.length} running, ${q.queued.length} waiting)` })];
  if (q.paused) parts.push(el("div", { class: "banner", text: "The queue is paused: running jobs go on, no queued job starts." }));
  if (!q.daemon && q.queued.length) parts.push(el("div", { class: "banner", text: "No daemon runs: queued jobs wait until `ugro daemon start`." }));
  if (q.queued.length) {
    parts.push(table(["#", "job", "wants", "why it waits"], q.queued.map((w) => ({
      cells: [w.position, el("a", { href: `#/job/${w.job_id}`, text: w.job_id }), w.wants, w.reason],
    }))));
  }
  section.replaceChildren(...parts);
}

function renderJobs(section, list) {
  const chosen = new Set([...section.querySelectorAll("input:checked")].map((box) => box.value));
  const rows = list.map((job) => {
    const box = el("input", { type: "checkbox", value: job.job_id });
    box.checked = chosen.has(job.job_id);
    return {
      cells: [box, el("a", { href: `#/job/${job.job_id}`, text: job.job_id }), stateText(job.state, job.status_line),
        job.attempt, fmt(job.nodes), job.sweep || "", job.created_at, job.reason || ""],
    };
  });
  const button = el("button", { id: "compare-selected", text: "Compare selected" });
  button.addEventListener("click", () => {
    const ids = [...section.querySelectorAll("input:checked")].map((b) => b.value);
    if (ids.length > 1) location.hash = `#/compare?jobs=${ids.map(encodeURIComponent).join(",")}`;
  });
  section.replaceChildren(el("h2", { text: `Jobs (${list.length})` }), button,
    table(["", "job", "state", "attempt", "nodes", "sweep", "created", "reason"], rows, [3]));
}

function renderHistory(section, changes) {
  const rows = changes.slice(-20).reverse().map((c) => ({
    cells: [new Date(c.at * 1000).toLocaleString(), c.node, el("span", { class: `status-${c.status}`, text: c.status }), c.change],
  }));
  section.replaceChildren(el("h2", { text: "Health changes" }),
    rows.length ? table(["when", "node", "status", "what changed"], rows) : el("p", { class: "muted", text: "None recorded (the daemon keeps this history)." }));
}

// --- one job -----------------------------------------------------------------------------------
async function jobPage(view, jobId) {
  const summary = el("section", { id: "summary" });
  const curves = el("div", { class: "grid", id: "curves" });
  const nodes = el("div", { class: "grid", id: "nodes" });
  const ranks = el("section");
  const logs = el("section");
  view.append(el("h2", { text: jobId }), summary, el("h2", { text: "Training" }), curves,
    el("h2", { text: "Ranks" }), ranks, el("h2", { text: "Nodes" }), nodes, el("h2", { text: "Logs" }), logs);

  const points = { train: [], evals: [], last: 0 };
  let lossChart = null;
  let live = true;
  const trainingCharts = [];
  const nodeCharts = [];
  const draw = () => {
    destroy(trainingCharts);
    curves.replaceChildren();
    const loss = new Map(points.train.map((p) => [p.step, p.loss]));
    const evals = new Map(points.evals.map((p) => [p.step, p.eval_loss]));
    lossChart = chart(curves, "loss (train, eval)", ["train", "eval"], align([loss, evals]), "step", trainingCharts);
    lossChart.panel.id = "loss-chart";
    lossChart.panel.dataset.points = String(points.train.length);
    chart(curves, "tokens/s (the cluster's)", ["tokens/s"],
      align([new Map(points.train.filter((p) => p.tokens_per_s !== null).map((p) => [p.step, p.tokens_per_s]))]), "step", trainingCharts);
    chart(curves, "learning rate", ["lr"],
      align([new Map(points.train.filter((p) => p.learning_rate !== null).map((p) => [p.step, p.learning_rate]))]), "step", trainingCharts);
    const byRank = new Map();
    for (const p of points.train) {
      for (const r of p.ranks || []) {
        const key = `r${r.rank} ${r.node}`;
        if (!byRank.has(key)) byRank.set(key, new Map());
        byRank.get(key).set(p.step, r.own_s);
      }
    }
    if (byRank.size) chart(curves, "each rank's own step time (s; waiting for peers left out)", [...byRank.keys()], align([...byRank.values()]), "step", trainingCharts);
  };

  const refresh = async () => {
    const [result, fresh] = await Promise.all([
      api(`/api/jobs/${encodeURIComponent(jobId)}/results`),
      api(`/api/jobs/${encodeURIComponent(jobId)}/curves?since=${points.last}`),
    ]);
    renderSummary(summary, result);
    renderRanks(ranks, result);
    if (fresh.train.length || fresh.evals.length || !lossChart) {
      points.train.push(...fresh.train);
      points.evals.push(...fresh.evals);
      points.last = Math.max(points.last, ...fresh.train.map((p) => p.step), ...fresh.evals.map((p) => p.step));
      draw();
    }
    live = ["queued", "launching", "running"].includes(result.status);
  };
  const refreshNodes = async () => {
    const [telemetry, tails] = await Promise.all([
      api(`/api/jobs/${encodeURIComponent(jobId)}/telemetry`),
      api(`/api/jobs/${encodeURIComponent(jobId)}/logs`),
    ]);
    renderTelemetry(nodes, telemetry, nodeCharts);
    renderLogs(logs, tails);
  };
  await Promise.all([refresh(), refreshNodes()]);
  timers.push(setInterval(() => { if (live) refresh().then(stamp).catch(showError); }, POLL_MS));
  timers.push(setInterval(() => { if (live) refreshNodes().catch(showError); }, POLL_MS * 3));
}

function renderSummary(section, r) {
  const rows = [
    ["status", stateText(r.status, r.status_line)], ["steps", r.steps], ["final loss", r.final_loss], ["best loss", r.best_loss],
    ["final eval loss", r.final_eval_loss], ["tokens/s", r.tokens_per_s], ["training time (s)", r.train_s],
    ["duration (s)", r.duration_s], ["metrics from", r.metrics_source], ["directory", r.experiment_dir],
  ].map(([key, value]) => ({ cells: [key, value] }));
  for (const s of r.stragglers || []) {
    rows.push({ attrs: { class: "slow" }, cells: ["straggler", `rank ${s.rank} on ${s.node}: ${s.own_step_s.toFixed(3)} s of its own per step, ${s.ratio.toFixed(2)}x the median rank's ${s.median_s.toFixed(3)} s`] });
  }
  const reason = (r.detail || {}).reason;
  if (reason && r.status !== "succeeded") rows.push({ cells: ["reason", reason] });
  section.replaceChildren(table(["", ""], rows));
}

function renderRanks(section, r) {
  const slow = new Set((r.stragglers || []).map((s) => s.rank));
  const rows = (r.ranks || []).map((k) => ({
    attrs: slow.has(k.rank) ? { class: "slow" } : {},
    cells: [k.rank, k.node, k.steps, k.step_time_s, k.own_step_s, k.data_s, k.sync_s, k.tokens, k.peak_memory_mb],
  }));
  section.replaceChildren(rows.length
    ? table(["rank", "node", "steps", "step s", "own s", "data s", "waiting s", "tokens", "peak MB"], rows, [0, 2, 3, 4, 5, 6, 7, 8])
    : el("p", { class: "muted", text: "No per-rank figures (the job's script does not write them)." }));
}

function renderTelemetry(container, telemetry, owned) {
  destroy(owned);
  container.replaceChildren();
  const names = Object.keys(telemetry);
  if (!names.length) {
    container.append(el("p", { class: "muted", text: "No telemetry yet (written on each node while the job runs, collected with its logs)." }));
    return;
  }
  const start = Math.min(...names.map((n) => telemetry[n][0].t));
  const memory = [], util = [], labels = [];
  for (const node of names) {
    const samples = telemetry[node];
    const gpus = samples.some((s) => (s.gpus || []).length);
    const mem = new Map(), use = new Map();
    for (const s of samples) {
      const x = Math.round(s.t - start);
      mem.set(x, gpus ? (s.gpus || []).reduce((a, g) => a + (g.mem_used_mb || 0), 0) : s.job_rss_mb);
      use.set(x, gpus ? Math.max(0, ...(s.gpus || []).map((g) => g.util || 0)) : s.job_cpu_percent);
    }
    labels.push(gpus ? `${node} (GPU)` : `${node} (job's CPU)`);
    memory.push(mem);
    util.push(use);
  }
  chart(container, "memory per node (MB)", labels, align(memory), "s", owned);
  chart(container, "utilisation per node (%; 100 = a core without a GPU)", labels, align(util), "s", owned);
}

function renderLogs(section, tails) {
  if (!tails.length) {
    section.replaceChildren(el("p", { class: "muted", text: "No logs collected yet." }));
    return;
  }
  const current = section.dataset.rank || String(tails[0].rank);
  const tabs = el("div", { class: "tabs" });
  for (const t of tails) {
    const button = el("button", { text: `${t.node} r${t.rank}` });
    button.disabled = String(t.rank) === current;
    button.addEventListener("click", () => { section.dataset.rank = String(t.rank); renderLogs(section, tails); });
    tabs.append(button);
  }
  const shown = tails.find((t) => String(t.rank) === current) || tails[0];
  section.replaceChildren(tabs, el("pre", { class: "log", text: shown.lines.join("\n") }));
}

// --- comparison ------------------------------------------------------------------------------
async function comparePage(view, ids) {
  if (ids.length < 2) {
    view.append(el("p", { class: "muted", text: "Pick two jobs or more on the overview (or a sweep: #/compare?jobs=<sweep name>)." }));
    if (ids.length === 0) return;
  }
  const c = await api(`/api/compare?jobs=${ids.map(encodeURIComponent).join(",")}`);
  const rows = Object.entries(c.differs).map(([key, values]) => ({ cells: [key, ...c.jobs.map((j) => values[j])] }));
  for (const key of Object.keys(c.results[c.jobs[0]] || {})) {
    rows.push({ cells: [key, ...c.jobs.map((j) => c.results[j][key])] });
  }
  view.append(el("h2", { text: "What differs, and how each did" }), table(["", ...c.jobs], rows));
  const curves = el("div", { class: "grid" });
  view.append(el("h2", { text: "Curves" }), curves);
  const losses = await Promise.all(c.jobs.map((j) => api(`/api/jobs/${encodeURIComponent(j)}/curves`)));
  chart(curves, "train loss", c.jobs, align(losses.map((l) => new Map(l.train.map((p) => [p.step, p.loss])))));
  chart(curves, "tokens/s", c.jobs, align(losses.map((l) => new Map(l.train.filter((p) => p.tokens_per_s !== null).map((p) => [p.step, p.tokens_per_s])))));
}

// --- serving ---------------------------------------------------------------------------------
async function servingPage(view) {
  const list = el("section");
  const boxes = el("section");
  view.append(list, boxes);
  const made = new Set();
  every(POLL_MS, async () => {
    const deployments = await api("/api/deployments");
    list.replaceChildren(el("h2", { text: "Deployments" }));
    if (!deployments.length) {
      list.append(el("p", { class: "muted", text: "None: `ugro serve up JOB` serves a job's adapter." }));
    } else {
      list.append(table(
        ["name", "node", "URL", "engine", "models", "state", "requests", "p50 ms", "p99 ms", "tokens/s"],
        deployments.map((d) => ({ cells: [d.name, d.node, d.url, d.engine, d.models.join(", "),
          stateText(d.state, d.message ? `${d.state}: ${d.message}` : d.state), d.requests,
          d.latency_p50_ms, d.latency_p99_ms, d.tokens_per_s] })),
        [6, 7, 8, 9],
      ));
    }
    for (const d of deployments.filter((x) => x.state === "serving" && !made.has(x.name))) {
      made.add(d.name);
      boxes.append(promptBox(d));
    }
  });
}

// One deployment's prompt box: a model, chat or completion, the text; the answer as it streams.
function promptBox(deployment) {
  const model = el("select", { "aria-label": "model" }, ...deployment.models.map((m) => el("option", { value: m, text: m })));
  if (deployment.models.length > 1) model.value = deployment.models[1];
  const kind = el("select", { "aria-label": "kind" }, el("option", { value: "chat", text: "chat" }), el("option", { value: "completions", text: "completion" }));
  const prompt = el("textarea", { rows: "3", cols: "80", "aria-label": "prompt", placeholder: "Say something" });
  const tokens = el("input", { type: "number", value: "64", min: "1", "aria-label": "max tokens" });
  const temperature = el("input", { type: "number", value: "0", min: "0", max: "2", step: "0.1", "aria-label": "temperature" });
  const send = el("button", { type: "button", text: "Send" });
  const out = el("pre", { class: "log answer", "aria-label": "answer" });
  const status = el("span", { class: "muted" });
  send.addEventListener("click", async () => {
    out.textContent = "";
    status.textContent = "…";
    send.disabled = true;
    const chat = kind.value === "chat";
    const body = { model: model.value, max_tokens: Number(tokens.value), temperature: Number(temperature.value) };
    if (chat) body.messages = [{ role: "user", content: prompt.value }];
    else body.prompt = prompt.value;
    try {
      const response = await fetch(`/api/deployments/${encodeURIComponent(deployment.name)}/${kind.value}`, {
        method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
      });
      if (!response.ok) {
        const error = await response.json();
        throw new Error(error.error && error.error.message ? error.error.message : error.error || response.statusText);
      }
      await readEvents(response, (event) => {
        const choice = (event.choices || [])[0];
        if (choice) out.textContent += chat ? (choice.delta.content || "") : (choice.text || "");
        if (choice && choice.finish_reason) status.textContent = `done (${choice.finish_reason})`;
      });
    } catch (error) {
      status.textContent = String(error.message || error);
    } finally {
      send.disabled = false;
    }
  });
  return el("div", { class: "panel prompt", "data-deployment": deployment.name },
    el("h3", { text: `Try ${deployment.name}` }),
    el("div", {}, model, " ", kind, " max tokens ", tokens, " temperature ", temperature, " ", send, " ", status),
    prompt, out);
}

// Server-sent events from a fetch response: each `data:` line's JSON, until [DONE].
async function readEvents(response, onEvent) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = event.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("");
      if (data === "[DONE]") return;
      if (data) onEvent(JSON.parse(data));
    }
  }
}

// --- routing ---------------------------------------------------------------------------------
async function route() {
  timers.forEach(clearInterval);
  timers = [];
  charts.forEach((c) => c.destroy());
  charts = [];
  const view = document.getElementById("view");
  view.replaceChildren();
  const hash = location.hash || "#/";
  try {
    if (hash.startsWith("#/job/")) {
      await jobPage(view, decodeURIComponent(hash.slice(6)));
    } else if (hash.startsWith("#/serving")) {
      await servingPage(view);
    } else if (hash.startsWith("#/compare")) {
      const query = new URLSearchParams(hash.split("?")[1] || "");
      await comparePage(view, (query.get("jobs") || "").split(",").filter(Boolean));
    } else {
      await overview(view);
    }
  } catch (error) {
    showError(error);
  }
}

window.addEventListener("hashchange", route);
api("/api/cluster").then((info) => { document.getElementById("cluster-name").textContent = info.cluster; }).catch(showError);
route();
