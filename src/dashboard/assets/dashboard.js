// serin dashboard: the overview's rows and a Canary page's sections, kept current from the
// server-sent events of /api/stream; the buttons post to /api/canaries/NS/NAME/ACTION with
// the header the dashboard requires of its own buttons. Text from the cluster is only ever
// set as text (textContent), never parsed as HTML; a Canary's sections come escaped.
"use strict";

const page = document.body.dataset.page;
let lastRows = [];

function connect() {
  const source = new EventSource("/api/stream");
  source.onmessage = (message) => {
    const snapshot = JSON.parse(message.data);
    if (page === "overview") {
      showOverview(snapshot);
    } else {
      refreshCanary(snapshot);
    }
  };
  source.onerror = () => setStatus("Connection lost; reconnecting…");
}

function setStatus(text) {
  const status = document.getElementById("status");
  if (status) status.textContent = text;
}

function showOverview(snapshot) {
  lastRows = snapshot.rows;
  setStatus(snapshot.error
    ? "Cannot list Canaries: " + snapshot.error
    : snapshot.rows.length + " Canaries, live");
  fillSelect("namespace", snapshot.rows.map((r) => r.namespace));
  fillSelect("phase", snapshot.rows.map((r) => r.phase));
  render();
  // When the first rows were shown, in ms since the page began to load (for benchmarks).
  document.body.dataset.firstRender ??= String(Math.round(performance.now()));
}

function fillSelect(id, values) {
  const select = document.getElementById(id);
  const have = new Set([...select.options].map((o) => o.value));
  for (const value of [...new Set(values)].sort()) {
    if (!have.has(value)) select.add(new Option(value, value));
  }
}

function render() {
  const ns = document.getElementById("namespace").value;
  const phase = document.getElementById("phase").value;
  const search = document.getElementById("search").value.trim().toLowerCase();
  const body = document.querySelector("#canaries tbody");
  const rows = lastRows.filter((r) =>
    (!ns || r.namespace === ns) && (!phase || r.phase === phase) &&
    (!search || r.name.toLowerCase().includes(search)));
  body.replaceChildren(...rows.map(rowOf));
}

function cell(text) {
  const td = document.createElement("td");
  td.textContent = text;
  return td;
}

function rowOf(r) {
  const tr = document.createElement("tr");
  tr.dataset.canary = r.namespace + "/" + r.name;
  const name = document.createElement("td");
  const link = document.createElement("a");
  link.href = "/canaries/" + encodeURIComponent(r.namespace) + "/" + encodeURIComponent(r.name);
  link.textContent = r.name + "." + r.namespace + (r.group ? " [" + r.group + "]" : "");
  name.append(link);
  const phase = cell(r.phase);
  phase.className = "phase-" + r.phase;
  const weight = document.createElement("td");
  const bar = document.createElement("span");
  bar.className = "bar";
  bar.setAttribute("role", "img");
  bar.setAttribute("aria-label", "canary " + r.weight + "%, primary " + (100 - r.weight) + "%");
  const fill = document.createElement("span");
  fill.style.width = Math.min(100, Math.max(0, r.weight)) + "%";
  const label = document.createElement("b");
  label.textContent = r.weight + "%";
  bar.append(fill, label);
  weight.append(bar);
  weight.dataset.weight = r.weight;
  tr.append(
    name, phase, weight,
    cell(r.step[0] + " of " + r.step[1]),
    cell(r.failedChecks + " of " + r.threshold),
    cell(r.waitingFor),
    cell(r.inPhaseSeconds == null ? "-" : duration(r.inPhaseSeconds)),
    cell(r.metrics.length ? r.metrics.join(", ") : "-"));
  return tr;
}

function duration(seconds) {
  if (seconds < 120) return seconds + "s";
  if (seconds < 7200) return Math.round(seconds / 60) + "m";
  return Math.round(seconds / 3600) + "h";
}

let lastCanary = null;

async function refreshCanary(snapshot) {
  const { namespace, name } = document.body.dataset;
  const row = snapshot.rows.find((r) => r.namespace === namespace && r.name === name);
  const seen = JSON.stringify(row ? { ...row, inPhaseSeconds: 0, nextStepIn: 0 } : null);
  if (lastCanary === null) {
    lastCanary = seen;
    return;
  }
  if (seen === lastCanary) return;
  lastCanary = seen;
  const answer = await fetch(location.pathname + "/sections");
  if (answer.ok) {
    // Rendered and escaped by the dashboard itself.
    document.getElementById("sections").innerHTML = await answer.text();
  }
}

async function press(action) {
  const { namespace, name } = document.body.dataset;
  if (!confirm(action[0].toUpperCase() + action.slice(1) + " " + name + "." + namespace + "?")) {
    return;
  }
  const result = document.getElementById("result");
  const url = "/api/canaries/" + encodeURIComponent(namespace) + "/" +
    encodeURIComponent(name) + "/" + action;
  try {
    const answer = await fetch(url, { method: "POST", headers: { "X-Serin-Dashboard": "1" } });
    result.textContent = await answer.text();
    result.className = answer.ok ? "" : "refused";
  } catch (e) {
    result.textContent = "The dashboard did not answer: " + e;
    result.className = "refused";
  }
}

if (page === "overview") {
  for (const id of ["namespace", "phase", "search"]) {
    document.getElementById(id).addEventListener("input", render);
  }
} else {
  for (const button of document.querySelectorAll("#controls button")) {
    button.addEventListener("click", () => press(button.dataset.action));
  }
}
connect();
