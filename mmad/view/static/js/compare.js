/* Two runs side by side (the ablation drill-down): compare's verdict on top, then the items paired
   as `mmad compare` pairs them, with the score difference and how far each item's rank (its
   percentile within its subset) moved; both answers next to each other. */
"use strict";

(function () {
  const { h } = MV;
  const PAGE = 100;
  const ORDERS = { move: "biggest rank moves", delta: "biggest score changes", file: "file order", disagree: "disagreements first" };

  function verdictBox(holder, a, b) {
    holder.replaceChildren(h("p.loading", { role: "status" }, "computing compare's verdict (paired bootstrap)…"));
    MV.load(`verdict/${a}/${b}`).then((v) => {
      holder.replaceChildren(h("h2", {}, "compare's verdict"),
        v.procedure ? h("p.muted", {}, "Procedure: " + v.procedure) : null,
        v.verdicts.length ? h("ul.verdicts", {}, v.verdicts.map((line) => h("li", {}, line))) : null,
        (v.notes || []).map((line) => h("p.note", {}, line)), v.note ? h("p.note", {}, v.note) : null);
      holder.dataset.ready = "1";
    }).catch((error) => {
      holder.replaceChildren(h("p.note", {}, "verdict: " + error.message + " (run `mmad compare` on the two folders)"));
      holder.dataset.ready = "1";
    });
  }

  function answered(kind) {
    return kind === "qa" || kind === "classify"
      ? (cols, i) => cols.statuses[cols.status[i]] === "ok" && cols.answer[i] !== null
      : (cols, i) => cols.score[i] !== null;
  }

  function side(cols, i, label) {
    const text = (cols.raw && cols.raw[i]) || cols.reason[i] || "(no answer text)";
    return h("div.side", {}, h("h4", {}, label), h("pre.raw", {}, text));
  }

  MV.pages.compare = async function (main, route) {
    const [a, b] = route.args;
    const [A, B] = await Promise.all([MV.load("run/" + a), MV.load("run/" + b)]);
    await Promise.all([MV.withText(a, A.columns), MV.withText(b, B.columns)]); // both answers, side by side
    const scored = !["qa", "classify"].includes(A.kind);
    const CA = A.columns, CB = B.columns;
    const paired = MV.pair(CA, CB, answered(A.kind));
    const rankA = MV.ranks(CA, paired.pairs.map((p) => p.a)), rankB = MV.ranks(CB, paired.pairs.map((p) => p.b));
    for (const p of paired.pairs) {
      p.delta = scored ? CB.score[p.b] - CA.score[p.a] : 0;
      p.move = scored ? rankB.get(p.b) - rankA.get(p.a) : 0;
      p.differs = CA.answer[p.a] !== CB.answer[p.b];
    }
    main.replaceChildren();
    MV.title(main, `${B.name} vs ${A.name}`);
    main.appendChild(h("p.crumbs", {}, h("a", { href: "#/runs" }, "← all runs"), " · base ",
      h("a", { href: MV.href("run", [a]) }, A.name), " · other ", h("a", { href: MV.href("run", [b]) }, B.name), " · ",
      h("a", { href: MV.href("compare", [b, a]) }, "swap")));
    const verdict = h("section.verdict", { "aria-live": "polite" });
    main.appendChild(verdict);
    verdictBox(verdict, a, b);
    main.appendChild(h("p", {}, `${MV.int(paired.pairs.length)} items paired (same subset and item, answered in both); ` +
      `left out: ${MV.int(paired.failed)} failed in either, ${MV.int(paired.onlyA)} only in ${A.name}, ` +
      `${MV.int(paired.onlyB)} only in ${B.name}.`));

    const params = route.params;
    const order = h("select", { name: "order" }, Object.entries(ORDERS).filter(([k]) => scored ? k !== "disagree" : !["move", "delta"].includes(k))
      .map(([v, t]) => h("option", { value: v, selected: (params.get("order") || (scored ? "move" : "disagree")) === v }, t)));
    const subset = h("select", { name: "sub" }, h("option", { value: "" }, "any"),
      CA.subsets.map((s, k) => h("option", { value: k, selected: params.get("sub") === String(k) }, s)));
    const text = h("input", { type: "search", name: "q", placeholder: "text in either answer", value: params.get("q") || "",
      "aria-label": "text in either answer" });
    const form = h("form.toolbar", { onsubmit: (e) => e.preventDefault() }, h("label", {}, "order ", order),
      h("label", {}, "subset ", subset), text);
    const count = h("p.count", { role: "status" }), pager = h("nav.pager", { "aria-label": "pages" }), body = h("tbody");
    const heads = ["item", "subset", "level"].concat(scored ? [A.name, B.name, "Δ score", "rank move"] : ["right", A.name, B.name],
      ["answers"]);
    MV.append(main, [h("h2", {}, "Paired items"), form, count,
      h("div.scroll", {}, h("table.pairs.cards", {}, h("thead", {}, h("tr", {}, heads.map((t) => h("th", { scope: "col" }, t)))), body)), pager]);

    function row(p) {
      const open = h("button.small", { type: "button", "aria-expanded": "false" }, "show");
      const cells = [h("a.itemlink", { href: MV.href("item", [a, p.a]) }, CA.key[p.a]), CA.subsets[CA.sub[p.a]], MV.level(CA.sev[p.a]) ?? "—"];
      if (scored) {
        cells.push(MV.score(CA.score[p.a]), MV.score(CB.score[p.b]),
          h("span", { class: p.delta > 0 ? "up" : p.delta < 0 ? "down" : null }, (p.delta > 0 ? "+" : "") + MV.score(p.delta)),
          h("span", { class: p.move > 0 ? "up" : p.move < 0 ? "down" : null }, (p.move > 0 ? "+" : "") + p.move.toFixed(1)));
      } else {
        cells.push(CA.truth[p.a] || "—", CA.answer[p.a] || "—", CB.answer[p.b] || "—");
      }
      cells.push(open);
      const tr = h("tr", {}, cells.map((c, k) => MV.td(heads[k], c)));
      const detail = h("tr.answers", { hidden: true }, h("td", { colspan: heads.length },
        h("div.sides", {}, side(CA, p.a, A.name), side(CB, p.b, B.name)),
        h("p", {}, h("a", { href: MV.href("item", [a, p.a]) }, "item in " + A.name), " · ",
          h("a", { href: MV.href("item", [b, p.b]) }, "item in " + B.name))));
      open.addEventListener("click", () => {
        const shown = detail.hidden;
        detail.hidden = !shown;
        open.textContent = shown ? "hide" : "show";
        open.setAttribute("aria-expanded", String(shown));
      });
      return [tr, detail];
    }
    function draw(at) {
      const sub = subset.value, q = text.value.toLowerCase();
      let rows = paired.pairs.filter((p) => (sub === "" || String(CA.sub[p.a]) === sub) &&
        (!q || MV.haystack(CA, p.a).includes(q) || MV.haystack(CB, p.b).includes(q)));
      const by = order.value;
      if (by === "move") rows = rows.slice().sort((x, y) => Math.abs(y.move) - Math.abs(x.move) || x.a - y.a);
      if (by === "delta") rows = rows.slice().sort((x, y) => Math.abs(y.delta) - Math.abs(x.delta) || x.a - y.a);
      if (by === "disagree") rows = rows.slice().sort((x, y) => y.differs - x.differs || x.a - y.a);
      const pages = Math.max(1, Math.ceil(rows.length / PAGE));
      at = Math.min(Math.max(at, 1), pages);
      const p = new URLSearchParams();
      if (by !== (scored ? "move" : "disagree")) p.set("order", by);
      if (sub) p.set("sub", sub);
      if (q) p.set("q", text.value);
      MV.go("compare", [a, b], p, true);
      body.replaceChildren(...rows.slice((at - 1) * PAGE, at * PAGE).flatMap(row));
      count.textContent = `${MV.int(rows.length)} pairs` + (pages > 1 ? `, page ${at} of ${pages}` : "");
      pager.replaceChildren(h("button", { type: "button", disabled: at <= 1, onclick: () => draw(at - 1) }, "← previous"),
        h("button", { type: "button", disabled: at >= pages, onclick: () => draw(at + 1) }, "next →"));
      current = at;
    }
    let current = 1;
    // the text field redraws as it is typed in; its `change` on leaving it (a click on a result link)
    // must not redraw the table under that click
    form.addEventListener("change", (event) => { if (event.target !== text) draw(1); });
    text.addEventListener("input", () => draw(1));
    MV.keys = { "/": () => text.focus(), j: () => MV.moveFocus("a.itemlink", 1), k: () => MV.moveFocus("a.itemlink", -1),
      n: () => draw(current + 1), p: () => draw(current - 1) };
    draw(1);
    main.dataset.ready = "1";
  };
})();
