/* An item: the images as they were sent (prepared: resized, corrupted, contour drawn), the full
   prompt, the raw answer, the parsed score and reason, every record (attempt) with its error, the
   cache key and whether the rebuilt request has it; QA's question and options, classify's classes. */
"use strict";

(function () {
  const { h } = MV;

  function neighbours(rid, row) {
    const list = MV.lastList && MV.lastList.rid === rid ? MV.lastList.rows : null;
    if (!list) return { prev: row - 1, next: row + 1, back: MV.href("run", [rid]) };
    const at = list.indexOf(row);
    return { prev: at > 0 ? list[at - 1] : null, next: at >= 0 && at + 1 < list.length ? list[at + 1] : null,
      back: MV.href("run", [rid], MV.lastList.params), at, of: list.length };
  }

  function fact(label, value) { return h("div", {}, h("dt", {}, label), h("dd", {}, value)); }

  function keyCheck(request, item) {
    if (request.unavailable) return h("p.warn", { role: "note" }, "The request cannot be rebuilt: " + request.unavailable);
    if (!request.sent) return h("p.note", {}, request.note);
    if (request.matches === true) {
      return h("p.good", {}, "✓ The rebuilt request has the record's cache key: the images and text below are, byte for byte, what was sent.");
    }
    if (request.matches === false) {
      return h("p.warn", {}, "✗ The request rebuilt from today's files has another cache key than the record " +
        "(rebuilt " + request.key.slice(0, 12) + "…): the data, a prompt file or the settings changed since. " +
        "Shown is what would be sent now.");
    }
    return h("p.note", {}, "No cache key in the record to check the rebuilt request against.");
  }

  function images(request) {
    if (!request.images || !request.images.length) return null;
    return h("div.gallery", {}, request.images.map((image) => h("figure", {},
      image.url ? h("img", { src: image.url, alt: image.label + " as sent",
        width: image.width || null, height: image.height || null }) : h("div.noimage", {}, "image not in this export"),
      h("figcaption", {}, h("strong", {}, image.label), " · ", image.width ? `${image.width}×${image.height} px` : "",
        " · ", h("code", {}, image.spec), h("br"), h("span.muted.path", {}, image.source)))));
  }

  function specifics(item) {
    const f = item.final || {};
    const blocks = [];
    if (item.kind === "qa" && item.request && item.request.question) {
      const r = item.request;
      blocks.push(h("section.qa", {}, h("h2", {}, "Question"), h("p", {}, r.question),
        h("ol.options", {}, r.options.map(([letter, text]) => h("li", {
          class: [letter === r.correct ? "right" : "", letter === item.answer ? "picked" : ""].join(" ").trim() || null },
        h("strong", {}, letter + ". "), text, letter === r.correct ? h("span.tag", {}, "correct") : "",
        letter === item.answer ? h("span.tag.model", {}, "model's letter") : ""))),
        h("p", {}, "subtask: " + r.subtask + " · model's letter: " + (item.answer || "none") + (f.match ? " (read as " + f.match + ")" : ""))));
    }
    if (item.kind === "classify") {
      blocks.push(h("section.cls", {}, h("h2", {}, "Classification"),
        h("dl.facts", {}, fact("classes", (item.classes || []).join(", ") || "—"), fact("truth", item.truth || "—"),
          fact("mapped answer", item.answer || "—"), fact("how", f.match || "—"))));
    }
    if (f.gate) {
      blocks.push(h("section", {}, h("h2", {}, "Detector gate"), h("dl.facts", {},
        fact("detector run", f.detector_run), fact("detector score", MV.score(f.detector_score)),
        fact("threshold", MV.score(f.gate_threshold)), fact("gate", f.gate))));
    }
    return blocks;
  }

  function records(item) {
    if (!item.records.length) return h("p.muted", {}, "No record: this item has not been answered (to-do) or the run has no JSONL.");
    const head = ["#", "time", "status", "source", "tries", "error / cause", "latency", "tokens in / out", "cache key"];
    return h("div.scroll", {}, h("table.records.cards", {}, h("thead", {}, h("tr", {}, head.map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, item.records.map((r, k) => {
        const u = r.usage || {};
        const cells = [k + 1, r.time || "—", r.status, r.source || "—", r.attempts ?? "—",
          [r.error, r.cause].filter(Boolean).join(" — ") || "—", r.latency_s === null || r.latency_s === undefined ? "—" : r.latency_s + " s",
          u.input_tokens !== undefined ? `${MV.int(u.input_tokens)} / ${MV.int(u.output_tokens)}` : "—",
          h("code", {}, (r.key || "—").slice(0, 16))];
        return h("tr", { class: r === item.final ? "final" : null }, cells.map((c, i) => MV.td(head[i], c)));
      }))));
  }

  MV.pages.item = async function (main, route) {
    const [rid, rowText] = route.args;
    const row = Number(rowText);
    const item = await MV.load(`item/${rid}/${row}`);
    const near = neighbours(rid, row);
    const request = item.request || {};
    const f = item.final || {};
    main.replaceChildren();
    const go = (target) => target !== null && target >= 0 ? MV.href("item", [rid, target]) : null;
    main.appendChild(h("nav.crumbs", { "aria-label": "item navigation" },
      h("a", { href: near.back }, "← " + item.run), " ",
      go(near.prev) ? h("a.prev", { href: go(near.prev), rel: "prev" }, "‹ previous") : h("span.muted", {}, "‹ previous"), " ",
      go(near.next) ? h("a.next", { href: go(near.next), rel: "next" }, "next ›") : h("span.muted", {}, "next ›"),
      near.of ? h("span.muted", {}, ` ${near.at + 1} of ${MV.int(near.of)} in the list`) : ""));
    MV.title(main, item.key);
    main.appendChild(h("p.meta", {}, item.subset, " · ", h("span.kind.kind-" + item.kind, {}, item.kind)));
    const scored = item.kind !== "qa" && item.kind !== "classify";
    main.appendChild(h("dl.facts", {},
      item.severity !== null ? fact("severity (level)", `${item.severity} (${item.level})`) : null,
      scored ? fact("score", MV.score(item.score)) : fact("answer", item.answer || "—"),
      item.misrank !== null ? fact(scored ? "mis-ranked" : "wrong", scored ? MV.num(item.misrank, 3) : item.misrank ? "yes" : "no") : null,
      fact("status", h("span.status.st-" + item.status.replace(/[^a-z]/g, ""), {}, item.status)),
      fact("source", f.source || "—"), fact("tries", f.attempts ?? "—"),
      fact("latency", f.latency_s ? f.latency_s + " s" : "—"),
      fact("tokens in / out", f.usage && f.usage.input_tokens !== undefined ? `${MV.int(f.usage.input_tokens)} / ${MV.int(f.usage.output_tokens)}` : "—"),
      fact("cache key", h("code.key", {}, item.cache_key || "—"))));
    main.appendChild(keyCheck(request, item));
    MV.append(main, specifics(item));
    const gallery = images(request);
    if (gallery) MV.append(main, [h("h2", {}, request.sent === false ? "Images" : "Images as sent"), gallery]);
    main.appendChild(h("section.answer", {}, h("h2", {}, "Answer"),
      h("h3", {}, "Raw answer"), f.raw ? h("pre.raw", {}, f.raw) : h("p.muted", {}, "no answer text"),
      scored ? h("p", {}, h("strong", {}, "parsed score: "), MV.score(f.score ?? null), "  ",
        h("strong", {}, "reason: "), f.reason || "—") : null,
      f.error ? h("p.bad", {}, "error: " + f.error) : null));
    if (request.text) {
      main.appendChild(h("details.prompt", { open: true }, h("summary", {}, "Prompt as sent (images as [image n])"),
        h("pre", {}, request.text)));
    }
    MV.append(main, [h("h2", {}, `Records (${item.records.length})`), records(item)]);
    MV.keys = {
      ArrowLeft: () => go(near.prev) && (location.hash = go(near.prev)), "[": () => go(near.prev) && (location.hash = go(near.prev)),
      ArrowRight: () => go(near.next) && (location.hash = go(near.next)), "]": () => go(near.next) && (location.hash = go(near.next)),
      u: () => (location.hash = near.back), Backspace: () => (location.hash = near.back),
    };
    main.dataset.ready = "1";
  };
})();
