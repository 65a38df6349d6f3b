/* The refresh cascade: a row per stream table in DAG order (level by level), a mark per refresh over the
   last minute, so a burst or a price tick is seen travelling down the DAG. A refresh that changed rows is a
   coloured bar (width = its duration, at least a few pixels) labelled with the rows it changed; a refresh
   that found nothing to do (NO_DATA) a faint tick; a failed one red. Times are the database's (the refresh
   history's clock), positioned against the snapshot's database time. SVG built with createElementNS only. */
"use strict";
(function (global) {
  const NS = "http://www.w3.org/2000/svg";
  const ROW = 22, AXIS = 20, PAD = 8;

  function svg(tag, attrs, text) {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function kind(mark) {
    if (mark.status === "FAILED") return "failed";
    if (mark.action === "NO_DATA" || mark.action === "SKIP") return "idle";
    return (mark.inserted || 0) + (mark.deleted || 0) > 0 ? "changed" : "unchanged";
  }

  class CascadeView {
    constructor(container) { this.container = container; }

    update(cascade) {
      if (!cascade) return;
      const width = Math.max(320, this.container.clientWidth || 800);
      const labelWidth = width < 560 ? 118 : 210;
      const plot = width - labelWidth - PAD * 2;
      const height = AXIS + cascade.rows.length * ROW + PAD;
      const t0 = cascade.now - cascade.window_s;
      const x = (t) => labelWidth + PAD + ((t - t0) / cascade.window_s) * plot;
      const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img",
        "aria-label": `refreshes of the last ${cascade.window_s} seconds, one row per stream table in DAG order`,
        "data-now": cascade.now });
      for (let s = 0; s <= cascade.window_s; s += 15) {
        const at = x(t0 + s);
        root.appendChild(svg("line", { x1: at, x2: at, y1: AXIS - 4, y2: height - PAD, class: "tick" }));
        const label = s === cascade.window_s ? "now" : `−${cascade.window_s - s} s`;
        root.appendChild(svg("text", { x: at, y: 12, class: "axis", "text-anchor": s === cascade.window_s ? "end" : "middle" }, label));
      }
      const rowOf = new Map();
      cascade.rows.forEach((row, i) => {
        const y = AXIS + i * ROW;
        rowOf.set(row.id, y);
        const g = svg("g", { class: "row", "data-table": row.id, "data-layer": row.layer, "data-index": i });
        g.appendChild(svg("rect", { x: 0, y, width, height: ROW, class: i % 2 ? "band odd" : "band" }));
        const name = row.name.length > (labelWidth < 150 ? 15 : 26) ? row.name.slice(0, labelWidth < 150 ? 14 : 25) + "…" : row.name;
        g.appendChild(svg("text", { x: 4, y: y + 15, class: "label" }, name));
        if (row.level) g.appendChild(svg("text", { x: labelWidth - 4, y: y + 15, class: "lvl", "text-anchor": "end" }, row.level));
        root.appendChild(g);
      });
      const marks = svg("g", { class: "marks" });
      const placed = [];
      for (const m of cascade.marks) {
        const y = rowOf.get(m.table);
        if (y === undefined || m.t < t0) continue;
        const k = kind(m);
        const at = x(m.t);
        const seconds = Fmt.isNum(m.duration_ms) ? m.duration_ms / 1000 : 0;
        const w = k === "idle" ? 2 : Math.max(4, (seconds / cascade.window_s) * plot);
        const rows = (m.inserted || 0) + (m.deleted || 0);
        const g = svg("g", { class: "mark mark-" + k + (m.action === "FULL" ? " full" : ""), "data-table": m.table,
          "data-t": m.t, "data-action": m.action, "data-rows": rows });
        g.appendChild(svg("title", {}, `${m.table.replace(/^public\./, "")} · ${m.action} ${m.status} · +${m.inserted || 0} −${m.deleted || 0} rows` +
          (Fmt.isNum(m.duration_ms) ? ` · ${Fmt.value(m.duration_ms, "number")} ms` : "") + ` · ${Fmt.time(m.t)}`));
        g.appendChild(svg("rect", { x: at, y: y + (k === "idle" ? 8 : 4), width: w, height: k === "idle" ? 6 : ROW - 8, rx: 2 }));
        marks.appendChild(g);
        placed.push({ g, y, at, w, rows, k });
      }
      // The rows a refresh changed, written after its mark where the row has room before the next mark.
      const byRow = new Map();
      for (const p of placed) { if (!byRow.has(p.y)) byRow.set(p.y, []); byRow.get(p.y).push(p); }
      for (const row of byRow.values()) {
        row.sort((a, b) => a.at - b.at);
        row.forEach((p, i) => {
          if (p.k !== "changed") return;
          const text = Fmt.value(p.rows, "int");
          const room = (i + 1 < row.length ? row[i + 1].at : labelWidth + PAD + plot) - (p.at + p.w + 2);
          if (room >= text.length * 6 + 3) p.g.appendChild(svg("text", { x: p.at + p.w + 2, y: p.y + 15, class: "rows" }, text));
        });
      }
      root.appendChild(marks);
      Fmt.clear(this.container).appendChild(root);
    }
  }

  global.CascadeView = CascadeView;
})(window);
