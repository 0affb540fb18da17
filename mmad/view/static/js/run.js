/* A run: its settings and headline numbers, per subset the metrics, status counts and the score
   distribution per level (box plots), then the item table: filtered, sorted (mis-ranked first, ...),
   100 rows a page. The query lives in the URL, so back and reload keep it. */
"use strict";

(function () {
  const { h } = MV;
  const PAGE = 100;
  const LEVEL_COLOURS = ["#2f7d4a", "#c9a227", "#e07b24", "#c8361d", "#8e1b5a", "#4b2a8c", "#1f4e8c", "#555"];

  function facts(page) {
    const m = page.metrics, j = page.jobs, w = page.settings;
    const items = [["items", MV.int(j.total)], ["ok", MV.int(j.ok)], ["failed", MV.int(j.failed)],
      ["to-do", MV.int(j.todo)], ["spend", MV.usd(page.cost_usd)], ["wall time", MV.secs(page.wall_s)]];
    if ("auroc" in m) items.push(["AUC %", MV.pct(m.auroc)], ["Ken", MV.tau(m.kendall_tau_b)], ["C %", MV.pct(m.c_index)]);
    if ("accuracy" in m) items.push(["accuracy %", MV.pct(m.accuracy)]);
    if ("macro_f1" in m) items.push(["macro-F1 %", MV.pct(m.macro_f1)]);
    return [
      h("p.meta", {}, h("span.kind.kind-" + page.kind, {}, page.kind), " ", w.provider ? w.provider + " · " : "",
        h("strong", {}, w.model || "—"), w.prompt ? " · prompt " + w.prompt : "",
        Object.entries(w.other).map(([k, v]) => h("span.chip", {}, k + " " + v))),
      h("dl.facts", {}, items.map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, v)))),
      h("p.muted", {}, page.folder, page.created ? " · created " + page.created : "",
        page.wall_note ? " · wall time: " + page.wall_note : "", page.cost_note ? " · " + page.cost_note : ""),
    ];
  }

  function boxes(entry) {
    if (!entry.levels || !entry.levels.length || !entry.range) return "—";
    const [low, high] = entry.range, span = high - low || 1, width = 200, row = 12;
    const x = (v) => 4 + ((v - low) / span) * (width - 8);
    const svg = MV.svg("svg", { width, height: row * entry.levels.length + 4, role: "img", class: "boxes",
      "aria-label": "scores per level: " + entry.levels.map((l) => `level ${l.level} median ${MV.score(l.median)}`).join(", ") });
    entry.levels.forEach((l, k) => {
      const y = 2 + k * row + row / 2, colour = LEVEL_COLOURS[Math.min(l.level, LEVEL_COLOURS.length - 1)];
      const title = MV.svg("title");
      title.textContent = `level ${l.level}: n=${l.n}, min ${MV.score(l.min)}, median ${MV.score(l.median)}, max ${MV.score(l.max)}`;
      svg.appendChild(MV.svg("g", {}, title,
        MV.svg("line", { x1: x(l.min), x2: x(l.max), y1: y, y2: y, stroke: colour }),
        MV.svg("rect", { x: x(l.q1), y: y - 4, width: Math.max(x(l.q3) - x(l.q1), 1), height: 8, fill: colour, "fill-opacity": 0.35, stroke: colour }),
        MV.svg("line", { x1: x(l.median), x2: x(l.median), y1: y - 5, y2: y + 5, stroke: "#111", "stroke-width": 2 })));
    });
    return [svg, h("span.range", {}, `${MV.score(low)} … ${MV.score(high)}`)];
  }

  function subsetTable(page) {
    const score = page.per_subset.some((s) => "auroc" in s);
    const head = ["subset", "items", "ok", "failed", "to-do"].concat(score ? ["AUC %", "C %", "Ken", "scores by level"] : ["accuracy %"]);
    return h("div.scroll", {}, h("table.subsets.cards", {},
      h("thead", {}, h("tr", {}, head.map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, page.per_subset.map((s) => {
        const st = s.statuses, ok = (st.ok || 0) + (st["ok (no JSONL)"] || 0), todo = st["to-do"] || 0;
        const cells = [s.subset, MV.int(s.items), MV.int(ok), MV.int(s.items - ok - todo), MV.int(todo)];
        if (score) cells.push(MV.pct(s.auroc), MV.pct(s.c_index), MV.tau(s.kendall_tau_b), boxes(s));
        else cells.push(MV.pct(s.accuracy));
        return h("tr", { title: (s.notes || []).join("; ") }, cells.map((c, k) => MV.td(head[k], c)));
      }))));
  }

  function itemRow(page, cols, i, params) {
    const qa = page.kind === "qa", cls = page.kind === "classify";
    const link = h("a.itemlink", { href: MV.href("item", [page.rid, i], params) }, cols.key[i]);
    const thumb = cols.thumb && cols.images[cols.sub[i]] ? h("img.thumb", { src: cols.thumb.replace("ROW", i), alt: "", loading: "lazy", width: 48, height: 48 }) : "";
    const status = cols.statuses[cols.status[i]];
    const cells = [["", thumb], ["item", link], ["subset", cols.subsets[cols.sub[i]]]];
    if (qa) cells.push(["subtask", cols.extra[i] || "—"], ["right", cols.truth[i] || "—"], ["answer", cols.answer[i] || "—"]);
    else if (cls) cells.push(["level", MV.level(cols.sev[i]) ?? "—"], ["truth", cols.truth[i] || "—"], ["answer", cols.answer[i] || "—"]);
    else cells.push(["level", MV.level(cols.sev[i]) ?? "—"], ["score", MV.score(cols.score[i])]);
    cells.push([qa || cls ? "wrong" : "mis-ranked", cols.mis[i] === null ? "—" : qa || cls ? (cols.mis[i] ? "wrong" : "right") : MV.num(cols.mis[i], 3)],
      ["status", h("span.status.st-" + status.replace(/[^a-z]/g, ""), {}, status)],
      ["source", cols.source[i] < 0 ? "—" : cols.sources[cols.source[i]]],
      ["reason", h("span.reason", {}, cols.reason[i] || "")], ["tokens", MV.int(cols.tok[i])],
      ["latency", cols.lat[i] === null ? "—" : cols.lat[i].toFixed(2) + " s"], ["tries", cols.att[i] ?? "—"]);
    return h("tr", {}, cells.map(([label, c]) => MV.td(label, c)));
  }

  MV.pages.run = async function (main, route) {
    const rid = route.args[0];
    const started = performance.now();
    const page = await MV.load("run/" + rid);
    const cols = page.columns;
    const params = route.params;
    main.replaceChildren();
    MV.title(main, page.name);
    MV.append(main, [h("p.crumbs", {}, h("a", { href: "#/runs" }, "← all runs")), facts(page),
      h("h2", {}, "Per subset"), subsetTable(page), h("h2#items", {}, "Items")]);

    const levels = [...new Set(MV.levels(cols).filter((l) => l !== null))].sort((a, b) => a - b);
    const select = (name, label, options) => h("label", {}, label + " ", h("select", { name },
      h("option", { value: "" }, "any"), options.map(([v, t]) => h("option", { value: v, selected: params.get(name) === String(v) }, t))));
    const sortSelect = h("select", { name: "sort" }, Object.entries(MV.SORTS).map(([v, t]) =>
      h("option", { value: v, selected: (params.get("sort") || "file") === v }, t)));
    const text = h("input", { type: "search", name: "q", value: params.get("q") || "", placeholder: "text in the answer",
      "aria-label": "text in the answer", id: "itemfilter" });
    const form = h("form.toolbar", { role: "search", onsubmit: (e) => e.preventDefault() },
      select("sub", "subset", cols.subsets.map((s, k) => [k, s])), select("lvl", "level", levels.map((l) => [l, l])),
      select("st", "status", cols.statuses.map((s) => [s, s])), select("src", "source", cols.sources.map((s) => [s, s])),
      h("label", {}, "sort ", sortSelect), text);
    const count = h("p.count", { role: "status" });
    const pager = h("nav.pager", { "aria-label": "pages" });
    const body = h("tbody");
    const qa = page.kind === "qa", cls = page.kind === "classify";
    const heads = ["", "item", "subset"].concat(qa ? ["subtask", "right", "answer"] : cls ? ["level", "truth", "answer"] : ["level", "score"],
      [qa || cls ? "wrong" : "mis-ranked", "status", "source", "reason", "tokens", "latency", "tries"]);
    MV.append(main, [form, count, h("div.scroll", {}, h("table.items.cards", {},
      h("thead", {}, h("tr", {}, heads.map((t) => h("th", { scope: "col" }, t)))), body)), pager]);

    function state() {
      const p = new URLSearchParams();
      for (const el of form.elements) if (el.name && el.value && !(el.name === "sort" && el.value === "file")) p.set(el.name, el.value);
      return p;
    }
    function draw(pageNumber) {
      const p = state();
      if (p.get("q") && !cols.raw) { // the answer texts first (loaded once)
        count.textContent = "loading the answer texts…";
        MV.withText(rid, cols).then(() => draw(pageNumber), (error) => { count.textContent = String(error.message); });
        return;
      }
      const rows = MV.query(cols, p);
      const pages = Math.max(1, Math.ceil(rows.length / PAGE));
      const at = Math.min(Math.max(pageNumber, 1), pages);
      if (at > 1) p.set("page", at);
      MV.lastList = { rid, rows, params: p };
      MV.go("run", [rid], p, true);
      const shown = rows.slice((at - 1) * PAGE, at * PAGE);
      body.replaceChildren(...shown.map((i) => itemRow(page, cols, i, null)));
      count.textContent = rows.length ? `${MV.int((at - 1) * PAGE + 1)}–${MV.int((at - 1) * PAGE + shown.length)} of ${MV.int(rows.length)} items` +
        (rows.length < cols.n ? ` (${MV.int(cols.n)} in the run)` : "") : "no item matches";
      pager.replaceChildren(
        h("button", { type: "button", disabled: at <= 1, onclick: () => draw(at - 1) }, "← previous"),
        h("span", {}, ` page ${at} of ${pages} `),
        h("button", { type: "button", disabled: at >= pages, onclick: () => draw(at + 1) }, "next →"));
      drawn = at;
    }
    let drawn = 1;
    // the text field redraws as it is typed in; its `change` on leaving it (a click on a result link)
    // must not redraw the table under that click
    form.addEventListener("change", (event) => { if (event.target !== text) draw(1); });
    let typing;
    text.addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(() => draw(1), 150); });
    MV.keys = { "/": () => text.focus(), j: () => MV.moveFocus("a.itemlink", 1), k: () => MV.moveFocus("a.itemlink", -1),
      n: () => draw(drawn + 1), p: () => draw(drawn - 1), m: () => { sortSelect.value = "mis"; draw(1); } };
    draw(Number(params.get("page") || 1));
    main.dataset.ready = "1";
    main.dataset.paintMs = String(Math.round(performance.now() - started));
  };
})();
