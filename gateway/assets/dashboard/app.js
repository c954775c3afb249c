// Peer Compute gateway dashboard. Plain ES2020, no dependencies, no build step.
// First paint comes from the GET endpoints; then the event stream (/api/v1/events, read with
// fetch() because EventSource cannot send Authorization) patches the state in memory and
// re-renders the affected region. The token, when the listener asks for one, stays in
// sessionStorage and goes out only as a Bearer header.
"use strict";

// Errors for the browser test (and for a person opening the console).
window.__pcErrors = [];
// Capture phase: failed resource loads (a script, a stylesheet) arrive here too.
window.addEventListener("error", (e) => {
  const t = e.target;
  window.__pcErrors.push(e.message ? String(e.message) : "failed to load " + ((t && (t.src || t.href)) || "a resource"));
}, true);
window.addEventListener("unhandledrejection", (e) => window.__pcErrors.push("unhandled: " + String(e.reason)));
document.addEventListener("securitypolicyviolation", (e) => window.__pcErrors.push("csp: " + e.violatedDirective));

const TOKEN_KEY = "peercompute-admin-token";
const EVENTS_KEPT = 100;
const SPARK_POINTS = 60;

const state = {
  token: sessionStorage.getItem(TOKEN_KEY) || "",
  role: "read",
  providers: [],
  routes: [],
  certificates: [],
  events: [],
  series: new Map(), // route -> requests per second, last 60 s
  lastId: null,
};

// A tiny DOM helper: h("td", {class: "num"}, "12", child...).
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const $ = (id) => document.getElementById(id);

function bytes(n) {
  if (n < 1024) return n + " B";
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let i = -1;
  do { v /= 1024; i++; } while (v >= 1024 && i < units.length - 1);
  return v.toFixed(v < 10 ? 1 : 0) + " " + units[i];
}

const ms = (v) => (v === null || v === undefined ? "–" : v < 10 ? v.toFixed(2) : v.toFixed(0));
const short = (peer) => (peer && peer.length > 16 ? peer.slice(0, 8) + "…" + peer.slice(-6) : peer || "–");

function when(rfc3339) {
  if (!rfc3339) return "–";
  const d = new Date(rfc3339);
  return isNaN(d) ? rfc3339 : d.toLocaleString();
}

function ago(rfc3339) {
  const s = Math.max(0, Math.round((Date.now() - new Date(rfc3339).getTime()) / 1000));
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min";
  return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
}

// ---- API -------------------------------------------------------------------------------------

class Unauthorized extends Error {}

function headers(extra) {
  const hs = Object.assign({}, extra);
  if (state.token) hs.Authorization = "Bearer " + state.token;
  return hs;
}

async function api(method, path, body) {
  const init = { method, headers: headers(method === "GET" ? {} : { "Content-Type": "application/json" }) };
  if (body !== undefined) init.body = JSON.stringify(body);
  const resp = await fetch(path, init);
  if (resp.status === 401) throw new Unauthorized();
  const text = await resp.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch (_) { json = null; }
  if (!resp.ok) throw new Error((json && json.error) || text.trim() || resp.status + " " + resp.statusText);
  return json;
}

// ---- rendering -------------------------------------------------------------------------------

function renderProviders() {
  $("providers-count").textContent = "(" + state.providers.length + ")";
  const rows = state.providers.map((p) =>
    h("tr", { "data-peer": p.peer_id },
      h("td", { class: "mono peer", title: p.peer_id }, short(p.peer_id)),
      h("td", {}, p.agent),
      h("td", { class: "mono" }, p.remote_addr),
      h("td", { title: when(p.connected_since) }, ago(p.connected_since)),
      h("td", { class: "num" }, p.rtt_ms.toFixed(1) + " ms"),
      h("td", {}, p.routes.join(", ") || "–"),
      h("td", { class: "num requests" }, p.requests),
      h("td", { class: "num", title: p.errors + " not answered by the app (counted in 5xx or 4xx too)" }, p.status_5xx),
      h("td", { class: "num" }, bytes(p.bytes_in) + " / " + bytes(p.bytes_out)),
      h("td", {},
        state.role === "admin"
          ? h("button", { class: "danger disconnect", "data-testid": "disconnect", type: "button", onclick: () => askDisconnect(p.peer_id) }, "Disconnect")
          : null)));
  $("providers").tBodies[0].replaceChildren(...rows);
}

function sparkline(values) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", "0 0 " + (SPARK_POINTS - 1) + " 20");
  svg.setAttribute("preserveAspectRatio", "none");
  const max = Math.max(1, ...values);
  const pad = Array(Math.max(0, SPARK_POINTS - values.length)).fill(0).concat(values);
  const line = document.createElementNS(ns, "polyline");
  line.setAttribute("points", pad.map((v, i) => i + "," + (19 - (v / max) * 18).toFixed(2)).join(" "));
  svg.append(line);
  return svg;
}

function renderRoutes() {
  const rows = state.routes.map((r) =>
    h("tr", { "data-route": r.name },
      h("td", { class: "name" }, r.name),
      h("td", { class: "mono", title: r.owner || "" }, short(r.owner)),
      h("td", {}, r.online ? h("span", { class: "on" }, "online")
        : h("span", { class: "off", title: r.last_seen ? "last seen " + when(r.last_seen) : "" }, "offline")),
      h("td", { class: "num" }, r.req_per_s_1m.toFixed(2)),
      h("td", { class: "num requests" }, r.requests),
      h("td", { class: "num status-4xx" }, r.status_4xx),
      h("td", { class: "num status-5xx" }, r.status_5xx),
      h("td", { class: "num errors", title: "not answered by the app (offline, unreachable, timeout, bad body, served by another gateway); also in 4xx/5xx" }, r.errors),
      h("td", { class: "num" }, bytes(r.bytes_in) + " / " + bytes(r.bytes_out)),
      h("td", { class: "num" }, ms(r.p50_ms) + " / " + ms(r.p99_ms) + " ms"),
      h("td", { class: "traffic", "data-testid": "spark" }, sparkline(state.series.get(r.name) || [])),
      h("td", {},
        state.role === "admin" && r.owner
          ? h("button", { class: "danger release", type: "button", onclick: () => askRelease(r.name) }, "Release")
          : null)));
  $("routes").tBodies[0].replaceChildren(...rows);
}

function renderCertificates() {
  const rows = state.certificates.map((c) =>
    h("tr", { "data-certificate": c.certificate },
      h("td", { title: c.names.join(", ") }, c.certificate),
      h("td", {}, c.source),
      h("td", { class: "mono" }, c.issuer || "–"),
      h("td", {}, when(c.not_after)),
      h("td", {}, when(c.next_renewal)),
      h("td", { class: c.last_error ? "error" : "" }, c.last_error || "–")));
  $("certificates").tBodies[0].replaceChildren(...rows);
}

function describe(e) {
  switch (e.type) {
    case "provider_connected": return short(e.peer) + " from " + e.remote + " (" + e.agent + ")";
    case "provider_disconnected": return short(e.peer) + ": " + e.reason;
    case "name_registered": return e.name + " by " + short(e.peer);
    case "name_refused": return e.name + " for " + short(e.peer) + ": " + e.reason;
    case "name_released": return e.name + " (was " + short(e.owner) + ")";
    case "provider_revoked": return short(e.peer);
    case "certificate_issued":
    case "certificate_renewed": return e.certificate + " until " + when(e.not_after);
    case "certificate_failed": return e.certificate + ": " + e.error;
    case "rate_limit_started": return e.route + " (" + e.kind + ")";
    case "rate_limit_ended": return e.route;
    case "cluster_lost": return e.error;
    case "cluster_back": return "etcd answers again (" + e.endpoints + ")";
    default: return JSON.stringify(e);
  }
}

function renderEvents() {
  const items = state.events.slice().reverse().map((e) =>
    h("li", { "data-type": e.type, "data-seq": e.seq },
      h("span", { class: "time" }, new Date(e.at_unix_ms).toLocaleTimeString()),
      h("span", { class: "type" }, e.type),
      describe(e)));
  $("events").replaceChildren(...items);
}

function renderFleets(fleets) {
  $("fleets-section").hidden = fleets.length === 0;
  const blocks = fleets.map(({ fleet, robots }) =>
    h("div", { class: "fleet", "data-fleet": fleet.fleet_id },
      h("h3", {}, (fleet.name || "(unnamed)") + " ",
        h("span", { class: "count" }, fleet.robots + " robots, " + fleet.reporting + " reporting, groups: " + (fleet.groups.join(", ") || "–"))),
      h("table", {},
        h("thead", {}, h("tr", {}, ["Robot", "Name", "Groups", "Health", "Releases", "Last seen"].map((t) => h("th", {}, t)))),
        h("tbody", {}, robots.map((r) =>
          h("tr", { "data-robot": r.robot },
            h("td", { class: "mono", title: r.robot }, short(r.robot)),
            h("td", {}, r.name || "–"),
            h("td", {}, r.groups.join(", ") || "–"),
            h("td", { class: r.health === "healthy" ? "on" : r.health === "degraded" ? "off" : "" }, r.health),
            h("td", {}, r.apps.map((a) => a.group + ": " + a.version + " (" + a.phase + ")").join("; ") || "–"),
            h("td", {}, r.last_seen ? ago(r.last_seen) + " ago" : "never")))))));
  $("fleets").replaceChildren(...blocks);
}

// ---- loading ---------------------------------------------------------------------------------

async function loadProviders() { state.providers = await api("GET", "/api/v1/providers"); renderProviders(); }
async function loadRoutes() { state.routes = await api("GET", "/api/v1/routes"); renderRoutes(); }
async function loadCertificates() { state.certificates = await api("GET", "/api/v1/certificates"); renderCertificates(); }

async function loadFleets() {
  const fleets = await api("GET", "/api/v1/fleets");
  const withRobots = await Promise.all(fleets.map(async (fleet) =>
    ({ fleet, robots: await api("GET", "/api/v1/fleets/" + encodeURIComponent(fleet.fleet_id) + "/robots") })));
  renderFleets(withRobots);
}

async function loadTraffic() {
  const t = await api("GET", "/api/v1/traffic");
  state.series.clear();
  t.ticks.forEach((tick, i) => {
    for (const r of tick.routes) {
      if (!state.series.has(r.route)) state.series.set(r.route, Array(i).fill(0));
      state.series.get(r.route).push(r.requests);
    }
    for (const [route, values] of state.series) if (values.length < i + 1) values.push(0);
  });
}

async function loadAll() {
  const who = await api("GET", "/api/v1/whoami");
  state.role = who.role;
  $("role").textContent = who.tokens_required ? who.role + " token" : "";
  await loadTraffic();
  await Promise.all([loadProviders(), loadRoutes(), loadCertificates()]);
  // The fleet table is extra: its failure must not keep the page from showing.
  loadFleets().catch(report);
}

// Coalesces the refreshes a burst of events asks for.
const pending = new Set();
let pendingTimer = null;
function refresh(what) {
  pending.add(what);
  if (pendingTimer) return;
  pendingTimer = setTimeout(() => {
    pendingTimer = null;
    const jobs = [...pending];
    pending.clear();
    for (const job of jobs) job().catch(report);
  }, 50);
}

function applyTick(tick) {
  const seen = new Set();
  for (const r of tick.routes) {
    seen.add(r.route);
    const route = state.routes.find((x) => x.name === r.route);
    if (route) {
      route.requests += r.requests;
      route.status_4xx += r.status_4xx;
      route.status_5xx += r.status_5xx;
      route.errors += r.errors;
      route.bytes_in += r.bytes_in;
      route.bytes_out += r.bytes_out;
    }
    const s = state.series.get(r.route) || [];
    s.push(r.requests);
    state.series.set(r.route, s.slice(-SPARK_POINTS));
  }
  for (const [route, s] of state.series) {
    if (!seen.has(route)) { s.push(0); state.series.set(route, s.slice(-SPARK_POINTS)); }
  }
  renderRoutes();
}

function onEvent(type, data, id) {
  if (id) state.lastId = id;
  if (type === "traffic") return applyTick(JSON.parse(data));
  if (type === "fleet") { refresh(loadFleets); return; }
  if (type === "lagged") { refresh(loadAll); return; }
  const list = type === "snapshot" ? JSON.parse(data) : [JSON.parse(data)];
  state.events = state.events.concat(list).slice(-EVENTS_KEPT);
  renderEvents();
  if (type === "snapshot") return;
  if (type.startsWith("provider_")) { refresh(loadProviders); refresh(loadRoutes); }
  if (type.startsWith("name_") || type.startsWith("rate_limit_")) { refresh(loadRoutes); refresh(loadProviders); }
  if (type.startsWith("certificate_")) refresh(loadCertificates);
}

// Server-Sent Events over fetch: blocks separated by a blank line, fields "name: value".
// One stream at a time: a new start() or the login form ends the previous one.
let generation = 0;
let streamCtl = null;

async function stream() {
  const hs = headers({ Accept: "text/event-stream" });
  if (state.lastId) hs["Last-Event-ID"] = state.lastId;
  streamCtl = new AbortController();
  const resp = await fetch("/api/v1/events", { headers: hs, signal: streamCtl.signal });
  if (resp.status === 401) throw new Unauthorized();
  if (!resp.ok || !resp.body) throw new Error("event stream: " + resp.status);
  setConn("live", "live");
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value.replace(/\r\n/g, "\n");
    let end;
    while ((end = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, end);
      buf = buf.slice(end + 2);
      let type = "message", id = null;
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith(":")) continue;
        const i = line.indexOf(":");
        const field = i < 0 ? line : line.slice(0, i);
        const val = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
        if (field === "event") type = val;
        else if (field === "data") data.push(val);
        else if (field === "id") id = val;
      }
      if (data.length) onEvent(type, data.join("\n"), id);
    }
  }
}

function setConn(cls, text) {
  const el = $("conn");
  el.className = "conn " + cls;
  el.textContent = text;
}

function report(err) {
  if (err instanceof Unauthorized) return showLogin("the token was not accepted");
  console.warn(err);
}

// Runs the stream for as long as the page is open; after a drop it re-fetches and resumes.
async function live(gen) {
  for (let attempt = 0; gen === generation; attempt++) {
    try {
      if (attempt > 0) await loadAll();
      await stream();
      if (gen !== generation) return;
      setConn("down", "reconnecting…");
    } catch (err) {
      if (gen !== generation) return;
      if (err instanceof Unauthorized) return showLogin("the token was not accepted");
      setConn("down", "reconnecting…");
    }
    await new Promise((r) => setTimeout(r, Math.min(5000, 500 * (attempt + 1))));
  }
}

// ---- controls --------------------------------------------------------------------------------

function confirmDialog(text, withReason) {
  return new Promise((resolve) => {
    const dlg = $("confirm");
    $("confirm-text").textContent = text;
    const reason = $("confirm-reason");
    reason.value = "";
    reason.parentElement.hidden = !withReason;
    const done = (ok) => { dlg.close(); resolve(ok ? reason.value : null); };
    $("confirm-ok").onclick = () => done(true);
    $("confirm-cancel").onclick = () => done(false);
    dlg.showModal();
    if (withReason) reason.focus();
  });
}

async function askDisconnect(peer) {
  const reason = await confirmDialog("Disconnect provider " + peer + "? It reconnects after its backoff.", true);
  if (reason === null) return;
  try { await api("POST", "/api/v1/providers/" + encodeURIComponent(peer) + "/disconnect", { reason: reason || null }); }
  catch (err) { alertError(err); }
}

async function askRelease(name) {
  const ok = await confirmDialog("Release " + name + "? Its owner loses it and the next key to register it owns it.", false);
  if (ok === null) return;
  try { await api("DELETE", "/api/v1/names/" + encodeURIComponent(name)); refresh(loadRoutes); }
  catch (err) { alertError(err); }
}

function alertError(err) {
  if (err instanceof Unauthorized) return showLogin("the token was not accepted");
  state.events = state.events.concat([{ seq: 0, at_unix_ms: Date.now(), type: "error", error: String(err.message) }]);
  renderEvents();
}

function showLogin(message) {
  generation++;
  if (streamCtl) streamCtl.abort();
  $("main").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  setConn("down", "no token");
  $("token").focus();
}

async function start() {
  try {
    await loadAll();
  } catch (err) {
    if (err instanceof Unauthorized) return showLogin(state.token ? "the token was not accepted" : "");
    setConn("down", "error: " + err.message);
    return;
  }
  $("login").hidden = true;
  $("main").hidden = false;
  generation++;
  if (streamCtl) streamCtl.abort();
  live(generation);
}

function useToken() {
  state.token = $("token").value.trim();
  sessionStorage.setItem(TOKEN_KEY, state.token);
  $("token").value = "";
  start();
}

// Behind a token file a plain link would get a bare 401: fetch the document with the token.
async function openApiDocument(e) {
  if (!state.token) return;
  e.preventDefault();
  try {
    const doc = await api("GET", "/api/v1/openapi.json");
    const url = URL.createObjectURL(new Blob([JSON.stringify(doc, null, 2)], { type: "application/json" }));
    window.open(url, "_blank", "noopener");
  } catch (err) { alertError(err); }
}

document.addEventListener("DOMContentLoaded", () => {
  $("api-link").addEventListener("click", openApiDocument);
  $("token-ok").addEventListener("click", useToken);
  $("token").addEventListener("keydown", (e) => { if (e.key === "Enter") useToken(); });
  setInterval(() => { if (!$("main").hidden) refresh(loadRoutes); }, 10000);
  // New log entries come as "fleet" messages; robots' statuses are not on the stream: polled.
  setInterval(() => { if (!$("main").hidden && !$("fleets-section").hidden) refresh(loadFleets); }, 3000);
  start();
});
