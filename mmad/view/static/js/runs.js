/* The runs page: every run found, its settings, jobs, spend, wall time and Table-3 metrics (or
   accuracy); sortable, filterable; two selected runs open side by side. Summaries load after the
   list is shown, two at a time, and fill their rows as they come. */
"use strict";

(function () {
  const { h } = MV;
  const COLUMNS = [
    ["name", "run"], ["kind", "kind"], ["model", "model"], ["prompt", "prompt"], ["settings", "settings"],
    ["ok", "ok"], ["failed", "failed"], ["todo", "to-do"], ["cost", "spend"], ["wall", "wall time"],
    ["auroc", "AUC %"], ["ken", "Ken"], ["c", "C % / acc %"], ["created", "created"],
  ];

  function value(run, key) {
    const s = run.summary, w = run.settings;
    switch (key) {
      case "name": return run.name;
      case "kind": return run.kind;
      case "model": return w.model || "";
      case "prompt": return w.prompt || "";
      case "settings": return Object.entries(w.other).map(([k, v]) => k + "=" + v).join(" ");
      case "created": return run.created || "";
    }
    if (!s) return null;
    const m = s.metrics;
    return { ok: s.jobs.ok, failed: s.jobs.failed, todo: s.jobs.todo, cost: s.cost_usd, wall: s.wall_s,
      auroc: m.auroc, ken: m.kendall_tau_b, c: m.c_index ?? m.accuracy }[key];
  }

  function cells(run) {
    const s = run.summary, w = run.settings;
    const pending = run.error ? h("span.bad", { title: run.error }, "unreadable") : h("span.pending", { title: "reading its result files" }, "…");
    const chips = Object.entries(w.other).map(([k, v]) => h("span.chip", {}, k + " " + v));
    const m = s ? s.metrics : {};
    return [
      [h("a.runlink", { href: MV.href("run", [run.rid]), title: run.folder }, run.name),
        run.error ? h("div.bad.small", { role: "note" }, run.error) : null],
      h("span.kind.kind-" + run.kind, {}, run.kind),
      [w.provider ? h("span.muted", {}, w.provider + " · ") : null, w.model || "—"],
      w.prompt || "—",
      chips.length ? chips : "—",
      s ? MV.int(s.jobs.ok) : pending.cloneNode(true),
      s ? h(s.jobs.failed ? "strong.bad" : "span", {}, MV.int(s.jobs.failed)) : pending.cloneNode(true),
      s ? MV.int(s.jobs.todo) : pending.cloneNode(true),
      s ? h("span", { title: s.cost_note || "" }, MV.usd(s.cost_usd)) : pending.cloneNode(true),
      s ? h("span", { title: s.wall_note || "" }, MV.secs(s.wall_s)) : pending.cloneNode(true),
      s ? MV.pct(m.auroc) : pending.cloneNode(true),
      s ? MV.tau(m.kendall_tau_b) : pending.cloneNode(true),
      s ? MV.pct(m.c_index ?? m.accuracy) : pending.cloneNode(true),
      (run.created || "").replace("T", " ").replace("+00:00", "Z"),
    ];
  }

  MV.pages.runs = async function (main, route) {
    const listing = await MV.load("runs", { fresh: true });
    const params = route.params;
    const state = { sort: params.get("sort") || "", q: params.get("q") || "", kind: params.get("kind") || "",
      selected: new Set((params.get("sel") || "").split(",").filter(Boolean)) };
    main.replaceChildren();
    MV.title(main, `${listing.runs.length} runs`);
    main.appendChild(h("p.muted", {}, "from " + listing.sources.join(", ")));
    for (const note of listing.notes) main.appendChild(h("p.note", {}, "note: " + note));

    const compare = h("button.primary", { type: "button", disabled: true }, "Compare selected");
    const filter = h("input", { type: "search", placeholder: "filter: name, model, prompt, setting", value: state.q,
      "aria-label": "filter runs", id: "runfilter" });
    const kinds = h("select", { "aria-label": "kind of run" }, h("option", { value: "" }, "every kind"),
      ["score", "detector", "hybrid", "classify", "qa"].map((k) => h("option", { value: k, selected: k === state.kind }, k)));
    const order = h("select", { "aria-label": "sort runs by" }, h("option", { value: "" }, "as found"),
      COLUMNS.flatMap(([key, label]) => [h("option", { value: key }, label + " ▲"), h("option", { value: "-" + key }, label + " ▼")]));
    order.value = state.sort;
    order.addEventListener("change", () => { state.sort = order.value; remember(); draw(); });
    main.appendChild(h("div.toolbar", {}, filter, kinds, h("label", {}, "sort ", order), compare,
      h("span.muted.hint", {}, "select two runs to put them side by side · / filters · ? keys")));

    const body = h("tbody");
    const head = h("tr", {}, h("th", { scope: "col" }, h("span.sr", {}, "select")),
      COLUMNS.map(([key, label]) => h("th", { scope: "col", "aria-sort": "none", dataset: { key } },
        h("button.sort", { type: "button", onclick: () => sortBy(key) }, label))));
    const table = h("table.runs.cards", {}, h("thead", {}, head), body);
    main.appendChild(h("div.scroll", {}, table));

    const rows = new Map();
    function row(run) {
      const box = h("input", { type: "checkbox", "aria-label": "select " + run.name, checked: state.selected.has(run.rid),
        onchange: () => { box.checked ? state.selected.add(run.rid) : state.selected.delete(run.rid); update(); } });
      return h("tr", { dataset: { rid: run.rid } }, MV.td("select", box),
        cells(run).map((cell, k) => MV.td(COLUMNS[k][1], cell, { class: "c-" + COLUMNS[k][0] })));
    }
    function draw() {
      const text = state.q.toLowerCase();
      let runs = listing.runs.filter((run) => (!state.kind || run.kind === state.kind) &&
        (!text || [run.name, run.kind, run.settings.model, run.settings.prompt, value(run, "settings"), run.folder]
          .join(" ").toLowerCase().includes(text)));
      if (state.sort) {
        const key = state.sort.replace("-", ""), down = state.sort.startsWith("-");
        runs = runs.slice().sort((a, b) => {
          const x = value(a, key), y = value(b, key);
          if (x === null || x === undefined) return 1;
          if (y === null || y === undefined) return -1;
          const order = typeof x === "string" ? x.localeCompare(y) : x - y;
          return down ? -order : order;
        });
      }
      for (const th of head.querySelectorAll("th[data-key]")) {
        const key = th.dataset.key;
        th.setAttribute("aria-sort", state.sort === key ? "ascending" : state.sort === "-" + key ? "descending" : "none");
      }
      rows.clear();
      body.replaceChildren(...runs.map((run) => { const tr = row(run); rows.set(run.rid, tr); return tr; }));
      update();
    }
    function sortBy(key) {
      state.sort = state.sort === key ? "-" + key : state.sort === "-" + key ? "" : key;
      order.value = state.sort;
      remember();
      draw();
    }
    function update() {
      const picked = [...state.selected];
      compare.disabled = picked.length !== 2;
      compare.textContent = picked.length === 2 ? "Compare the two selected" : `Compare selected (${picked.length}/2)`;
      remember();
    }
    function remember() {
      const p = new URLSearchParams();
      if (state.q) p.set("q", state.q);
      if (state.kind) p.set("kind", state.kind);
      if (state.sort) p.set("sort", state.sort);
      if (state.selected.size) p.set("sel", [...state.selected].join(","));
      MV.go("runs", [], p, true);
    }
    compare.addEventListener("click", () => { const [a, b] = state.selected; MV.go("compare", [a, b]); });
    filter.addEventListener("input", () => { state.q = filter.value; draw(); });
    kinds.addEventListener("change", () => { state.kind = kinds.value; draw(); });
    MV.keys = { "/": () => filter.focus(), j: () => MV.moveFocus("a.runlink", 1), k: () => MV.moveFocus("a.runlink", -1) };
    draw();

    // summaries: two at a time, each row redrawn as its summary arrives
    const todo = listing.runs.filter((run) => !run.summary);
    async function worker() {
      while (todo.length) {
        const run = todo.shift();
        try { run.summary = await MV.load("summary/" + run.rid); } catch (error) { run.error = String(error.message || error); }
        const old = rows.get(run.rid);
        if (old && old.isConnected) { const fresh = row(run); old.replaceWith(fresh); rows.set(run.rid, fresh); }
      }
      if (state.sort && !todo.length) draw();
    }
    await Promise.all([worker(), worker()]);
    main.dataset.ready = "1";
  };
})();
