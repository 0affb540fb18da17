/* The item table's query: filter and sort the run's item columns (all in the page: a 21,603-item run
   is sorted in milliseconds), and the pairing of two runs' items as `mmad compare` pairs them. */
"use strict";

MV.SORTS = {
  file: "file order",
  mis: "most mis-ranked first",
  "-mis": "least mis-ranked first",
  "-score": "score, high to low",
  score: "score, low to high",
  "-lat": "slowest first",
  "-tok": "most tokens first",
};

MV.levels = function (cols) {
  const out = new Array(cols.n);
  for (let i = 0; i < cols.n; i++) out[i] = MV.level(cols.sev[i]);
  return out;
};

/* Rows matching the filters (sub, lvl, st, src: values as strings, "" = any; q: text in the answer,
   reason, path or letters), in the asked order. */
MV.query = function (cols, p) {
  const levels = cols._levels || (cols._levels = MV.levels(cols));
  const sub = p.get("sub") ?? "", lvl = p.get("lvl") ?? "", st = p.get("st") ?? "", src = p.get("src") ?? "";
  const text = (p.get("q") || "").toLowerCase();
  const rows = [];
  for (let i = 0; i < cols.n; i++) {
    if (sub !== "" && String(cols.sub[i]) !== sub) continue;
    if (lvl !== "" && String(levels[i]) !== lvl) continue;
    if (st !== "" && cols.statuses[cols.status[i]] !== st) continue;
    if (src !== "" && (cols.source[i] < 0 ? "" : cols.sources[cols.source[i]]) !== src) continue;
    if (text && !MV.haystack(cols, i).includes(text)) continue;
    rows.push(i);
  }
  const sort = p.get("sort") || "file";
  const key = { mis: cols.mis, score: cols.score, lat: cols.lat, tok: cols.tok }[sort.replace("-", "")];
  if (key) {
    const down = sort.startsWith("-") !== (sort === "mis");
    rows.sort((a, b) => {
      const x = key[a], y = key[b];
      if (x === null || x === undefined) return y === null || y === undefined ? a - b : 1;
      if (y === null || y === undefined) return -1;
      return x === y ? a - b : (down ? y - x : x - y);
    });
  }
  return rows;
};

/* The run's answer texts come apart from its columns (they are most of the bytes): loaded once,
   when a text filter or the side-by-side answers need them. */
MV.withText = function (rid, cols) {
  if (cols.raw) return Promise.resolve(cols);
  cols._text = cols._text || MV.load("text/" + rid).then((text) => { cols.raw = text.raw; cols._hay = null; return cols; });
  return cols._text;
};

MV.haystack = function (cols, i) {
  cols._hay = cols._hay || new Array(cols.n);
  if (cols._hay[i] === undefined) {
    cols._hay[i] = [cols.raw ? cols.raw[i] : null, cols.reason[i], cols.key[i], cols.answer[i], cols.truth[i], cols.extra[i]]
      .filter(Boolean).join("\n").toLowerCase();
  }
  return cols._hay[i];
};

/* Percentile rank (0-100, ties averaged) of each scored row within its subset, over `rows` only. */
MV.ranks = function (cols, rows) {
  const bySub = new Map();
  for (const i of rows) {
    if (cols.score[i] === null) continue;
    if (!bySub.has(cols.sub[i])) bySub.set(cols.sub[i], []);
    bySub.get(cols.sub[i]).push(i);
  }
  const out = new Map();
  for (const group of bySub.values()) {
    group.sort((a, b) => cols.score[a] - cols.score[b]);
    let start = 0;
    while (start < group.length) {
      let end = start;
      while (end + 1 < group.length && cols.score[group[end + 1]] === cols.score[group[start]]) end++;
      const rank = group.length > 1 ? (100 * ((start + end) / 2)) / (group.length - 1) : 50;
      for (let k = start; k <= end; k++) out.set(group[k], rank);
      start = end + 1;
    }
  }
  return out;
};

/* Items of A and B paired as `mmad compare` pairs them: same subset, same item (path; QA: question),
   answered in both. Returns {pairs: [{a, b}], onlyA, onlyB, failed}. */
MV.pair = function (A, B, answered) {
  const where = new Map();
  for (let j = 0; j < B.n; j++) where.set(B.subsets[B.sub[j]] + "\u0000" + B.key[j], j);
  const pairs = [];
  let onlyA = 0, failed = 0;
  const seen = new Set();
  for (let i = 0; i < A.n; i++) {
    const j = where.get(A.subsets[A.sub[i]] + "\u0000" + A.key[i]);
    if (j === undefined) { onlyA++; continue; }
    seen.add(j);
    if (!answered(A, i) || !answered(B, j)) { failed++; continue; }
    pairs.push({ a: i, b: j });
  }
  return { pairs, onlyA, onlyB: B.n - seen.size, failed };
};
