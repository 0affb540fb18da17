/* mmad view: the shared core. Loading payloads (live: the server's /api; export: data/*.js scripts,
   which a page opened from file:// may run although it may not fetch), the hash router, DOM and
   number helpers, and the keyboard map. Every text goes in through text nodes, never as HTML. */
"use strict";

const MV = (window.MV = {});
MV.mode = document.documentElement.dataset.mode || "live";
MV.cache = new Map();
MV.waiting = new Map();
MV.pages = {};
MV.lastList = null; // {rid, rows, query}: the run page's filtered order, for prev/next on item pages

window.mmadData = function (name, payload) {
  MV.cache.set(name, payload);
  const waiter = MV.waiting.get(name);
  if (waiter) { MV.waiting.delete(name); waiter(payload); }
};

MV.load = function (name, { fresh = false } = {}) {
  if (!fresh && MV.cache.has(name)) return Promise.resolve(MV.cache.get(name));
  if (MV.mode === "live") {
    return fetch("api/" + name + ".json").then((response) => {
      if (!response.ok) return response.text().then((text) => { throw new Error(text || response.statusText); });
      return response.json();
    }).then((payload) => { if (!/^(runs|summary\/)/.test(name)) MV.cache.set(name, payload); return payload; });
  }
  return new Promise((resolve, reject) => {
    MV.waiting.set(name, resolve);
    const script = document.createElement("script");
    script.src = "data/" + name.replace(/\//g, "-") + ".js";
    script.onerror = () => { MV.waiting.delete(name); reject(new Error("not in this export: " + name)); };
    document.head.appendChild(script);
  });
};

/* h("tag.class#id", {attr: value, onclick: fn}, child, "text", [children]) */
MV.h = function (spec, attrs, ...children) {
  const match = /^([a-z0-9]+)((?:[.#][\w-]+)*)$/i.exec(spec);
  const node = document.createElement(match ? match[1] : spec);
  if (match && match[2]) {
    for (const part of match[2].match(/[.#][\w-]+/g)) {
      if (part[0] === ".") node.classList.add(part.slice(1)); else node.id = part.slice(1);
    }
  }
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  MV.append(node, children);
  return node;
};

MV.append = function (node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
};

/* A table cell that reads as "label: value" when tables show as cards (narrow screens). */
MV.td = function (label, content, attrs = {}) {
  return MV.h("td", { "data-label": label, ...attrs }, MV.h("div.v", {}, content));
};

MV.svg = function (tag, attrs, ...children) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
  for (const child of children.flat()) if (child) node.appendChild(child);
  return node;
};

/* ------------------------------------------------------------------ numbers */
const dash = "—";
MV.pct = (v) => (v === null || v === undefined || Number.isNaN(v) ? dash : (100 * v).toFixed(2));
MV.tau = (v) => (v === null || v === undefined || Number.isNaN(v) ? dash : v.toFixed(3));
MV.num = (v, d = 1) => (v === null || v === undefined ? dash : Number(v).toFixed(d).replace(/\.0+$/, ""));
MV.int = (v) => (v === null || v === undefined ? dash : Number(v).toLocaleString("en"));
MV.usd = (v) => (v === null || v === undefined ? dash : "$" + (v < 10 ? v.toFixed(4) : v.toFixed(2)));
MV.secs = function (v) {
  if (v === null || v === undefined) return dash;
  if (v < 120) return v.toFixed(1) + " s";
  if (v < 7200) return (v / 60).toFixed(1) + " min";
  return (v / 3600).toFixed(1) + " h";
};
MV.score = (v) => (v === null || v === undefined ? dash : Number.isInteger(v) ? String(v) : v.toFixed(3).replace(/0+$/, ""));
MV.level = (sev) => (sev === null || sev === undefined ? null : Math.ceil(sev - 1e-9));

/* ------------------------------------------------------------------ routing */
MV.parseHash = function () {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, search] = raw.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  return { page: parts[0] || "runs", args: parts.slice(1), params: new URLSearchParams(search || "") };
};

MV.href = function (page, args = [], params = null) {
  const query = params && [...params].length ? "?" + params.toString() : "";
  return "#/" + [page, ...args].map(encodeURIComponent).join("/") + query;
};

MV.go = function (page, args, params, replace) {
  const target = MV.href(page, args, params);
  if (replace) history.replaceState(null, "", target); else location.hash = target;
};

MV.render = function () {
  const route = MV.parseHash();
  const main = document.getElementById("app");
  const renderer = MV.pages[route.page] || MV.pages.runs;
  delete main.dataset.ready; // set by each page once drawn (the tests and the benchmark wait for it)
  MV.keys = {};
  main.replaceChildren(MV.h("p.loading", { role: "status" }, "loading…"));
  Promise.resolve(renderer(main, route)).catch((error) => {
    main.replaceChildren(MV.h("h1", { tabindex: "-1" }, "Cannot show this page"),
      MV.h("p.error", { role: "alert" }, String(error.message || error)),
      MV.h("p", {}, MV.h("a", { href: "#/runs" }, "← all runs")));
  });
};

MV.title = function (main, text, ...extra) {
  document.title = text + " · mmad view";
  const heading = MV.h("h1", { tabindex: "-1" }, text, ...extra);
  main.appendChild(heading);
  if (MV.focusHeading) heading.focus({ preventScroll: true });
  return heading;
};

/* ------------------------------------------------------------------ keyboard */
MV.keys = {}; // the current page's single-key actions
document.addEventListener("keydown", (event) => {
  const typing = /^(INPUT|SELECT|TEXTAREA)$/.test(event.target.tagName);
  if (event.key === "Escape" && typing) { event.target.blur(); return; }
  if (typing || event.ctrlKey || event.metaKey || event.altKey) return;
  if (event.key === "?") { document.getElementById("help").toggleAttribute("hidden"); return; }
  const action = MV.keys[event.key];
  if (action) { event.preventDefault(); action(event); }
});

/* Move focus between the links of a list (j / k), keeping the focused one in view. */
MV.moveFocus = function (selector, step) {
  const links = [...document.querySelectorAll(selector)];
  if (!links.length) return;
  const at = links.indexOf(document.activeElement);
  const next = links[Math.max(0, Math.min(links.length - 1, at < 0 ? 0 : at + step))];
  next.focus();
  next.scrollIntoView({ block: "nearest" });
};

window.addEventListener("hashchange", () => { MV.focusHeading = true; MV.render(); });
window.addEventListener("DOMContentLoaded", () => { MV.focusHeading = false; MV.render(); });
