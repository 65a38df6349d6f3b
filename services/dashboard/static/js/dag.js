/* The stream-table DAG as SVG, from the server's layered layout (node.layer, node.order).
   Built with createElementNS/textContent only. A node whose last refresh time moved pulses.
   Layers run left to right (top to bottom for deep DAGs and narrow screens). Edges are routed around boxes:
   between two layers an edge is a curve in the empty gap; across a layer it skips (an edge from level 0 to
   level 2, say) it runs straight through a free lane between that layer's boxes, never through a box. */
"use strict";
(function (global) {
  const NS = "http://www.w3.org/2000/svg";
  const W = 196, H = 74, GAP_H = 96, GAP_V = 64, GAP_CROSS = 40, PAD = 24, LABEL = 22, MARGIN = 10, LANE = 6;
  const MODE = { DIFFERENTIAL: "DIFF", FULL: "FULL", IMMEDIATE: "IMMEDIATE" };
  const NARROW = 760; // container width below which the DAG is drawn top to bottom

  function svg(tag, attrs, text) {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function short(name, max) { return name.length > max ? name.slice(0, max - 1) + "…" : name; }

  /* Positions in (main, cross) coordinates: main runs along the layers, cross across them. */
  function layout(dag, vertical) {
    const layers = dag.layers || 1;
    const counts = new Array(layers).fill(0);
    for (const n of dag.nodes) counts[n.layer] = Math.max(counts[n.layer], n.order + 1);
    const widest = Math.max(1, ...counts);
    const sizeMain = vertical ? H : W, sizeCross = vertical ? W : H;
    const stepMain = sizeMain + (vertical ? GAP_V : GAP_H), stepCross = sizeCross + GAP_CROSS;
    const crossSize = widest * stepCross - GAP_CROSS;
    const pos = new Map();
    for (const n of dag.nodes) {
      const offset = ((widest - counts[n.layer]) * stepCross) / 2;
      pos.set(n.id, { main: PAD + (vertical ? LABEL : 0) + n.layer * stepMain,
        cross: PAD + (vertical ? 0 : LABEL) + offset + n.order * stepCross, layer: n.layer });
    }
    const mainSize = 2 * PAD + LABEL + (layers - 1) * stepMain + sizeMain;
    const crossTotal = 2 * PAD + (vertical ? 0 : LABEL) + crossSize;
    return { pos, layers, sizeMain, sizeCross, stepMain, vertical,
      width: vertical ? crossTotal : mainSize - LABEL, height: vertical ? mainSize : crossTotal };
  }

  /* Free lanes (cross intervals) of every layer: outside and between its boxes, MARGIN away from them. */
  function lanes(geo) {
    const byLayer = new Map();
    for (const p of geo.pos.values()) {
      if (!byLayer.has(p.layer)) byLayer.set(p.layer, []);
      byLayer.get(p.layer).push(p.cross);
    }
    const out = new Map();
    for (const [layer, crosses] of byLayer) {
      crosses.sort((a, b) => a - b);
      const free = [[-Infinity, crosses[0] - MARGIN]];
      for (let i = 0; i + 1 < crosses.length; i++) free.push([crosses[i] + geo.sizeCross + MARGIN, crosses[i + 1] - MARGIN]);
      free.push([crosses[crosses.length - 1] + geo.sizeCross + MARGIN, Infinity]);
      out.set(layer, free.map(([lo, hi]) => ({ lo, hi, used: 0 })));
    }
    return out;
  }

  function route(geo, free, a, b) {
    const start = { m: a.main + geo.sizeMain, c: a.cross + geo.sizeCross / 2 };
    const end = { m: b.main - 3, c: b.cross + geo.sizeCross / 2 };
    const points = [];
    for (let layer = a.layer + 1; layer < b.layer; layer++) {
      const target = start.c + ((end.c - start.c) * (layer - a.layer)) / (b.layer - a.layer);
      let best = null, bestDistance = Infinity;
      for (const lane of free.get(layer) || []) {
        const distance = target < lane.lo ? lane.lo - target : target > lane.hi ? target - lane.hi : 0;
        if (distance < bestDistance) { best = lane; bestDistance = distance; }
      }
      let c = target;
      if (best) {
        const inner = Number.isFinite(best.lo) && Number.isFinite(best.hi);
        c = inner ? (best.lo + best.hi) / 2 : Math.min(best.hi, Math.max(best.lo, target));
        const shift = ((best.used % 3) - (best.used % 3 === 2 ? 3 : 0)) * LANE; // 0, +6, -6, 0 ...
        c = Math.min(best.hi, Math.max(best.lo, c + shift));
        best.used += 1;
      }
      const m = PAD + (geo.vertical ? LABEL : 0) + layer * geo.stepMain;
      points.push({ from: m, to: m + geo.sizeMain, c });
    }
    const xy = (m, c) => (geo.vertical ? `${c.toFixed(1)} ${m.toFixed(1)}` : `${m.toFixed(1)} ${c.toFixed(1)}`);
    const curve = (from, to) => {
      const mid = (from.m + to.m) / 2;
      return ` C ${xy(mid, from.c)}, ${xy(mid, to.c)}, ${xy(to.m, to.c)}`;
    };
    let d = "M " + xy(start.m, start.c), cur = start;
    for (const p of points) {
      d += curve(cur, { m: p.from, c: p.c }) + " L " + xy(p.to, p.c);
      cur = { m: p.to, c: p.c };
    }
    return d + curve(cur, end);
  }

  class DagView {
    constructor(container) {
      this.container = container;
      this.shape = null;       // node ids + edges + orientation: rebuild only when the drawing changes
      this.refs = new Map();   // id -> {g, stale, meta}
      this.lastRefresh = new Map();
      this.edgeRefs = [];
      this.last = null;
      global.addEventListener("resize", () => { if (this.last) this.update(this.last); });
    }

    vertical(dag) { return (dag.layers || 1) > 5 || this.container.clientWidth < NARROW; }

    update(dag) {
      this.last = dag;
      const vertical = this.vertical(dag);
      const shape = JSON.stringify([vertical, dag.nodes.map((n) => [n.id, n.layer, n.order, n.level, n.caption]), dag.edges]);
      if (shape !== this.shape) { this.build(dag, vertical); this.shape = shape; }
      const pulsed = new Set();
      for (const node of dag.nodes) {
        const ref = this.refs.get(node.id);
        if (!ref || node.kind === "source") continue;
        ref.g.setAttribute("class", "node st st-" + String(node.status || "UNKNOWN").replace(/[^A-Z_]/g, ""));
        ref.meta.textContent = (MODE[node.mode] || node.mode) + " · " + node.schedule;
        const late = Fmt.isNum(node.staleness_s) && node.staleness_s > 10;
        ref.stale.textContent = node.is_populated === false ? "not populated" : "stale " + Fmt.seconds(node.staleness_s);
        ref.stale.setAttribute("class", "meta stale" + (late ? " late" : ""));
        const stamp = node.last_refresh_at || node.data_timestamp;
        const before = this.lastRefresh.get(node.id);
        this.lastRefresh.set(node.id, stamp);
        if (before !== undefined && stamp !== before) { this.pulse(ref.g); pulsed.add(node.id); }
        ref.title.textContent = node.name + (node.caption ? "\n" + node.caption : "") + "\n" + node.status + " · " +
          node.mode + " · schedule " + node.schedule + "\nlast refresh " + (node.last_refresh_at || "never");
      }
      for (const edge of this.edgeRefs) edge.path.setAttribute("class", pulsed.has(edge.to) ? "edge hot" : "edge");
    }

    pulse(g) {
      g.classList.remove("pulse");
      void g.getBoundingClientRect(); // restart the CSS animation
      g.classList.add("pulse");
      g.setAttribute("data-pulses", String(Number(g.getAttribute("data-pulses") || 0) + 1));
    }

    build(dag, vertical) {
      Fmt.clear(this.container);
      this.refs.clear();
      this.edgeRefs = [];
      const geo = layout(dag, vertical);
      const xy = (p) => (vertical ? { x: p.cross, y: p.main } : { x: p.main, y: p.cross });
      // On a narrow screen the drawing keeps 80 % of its size (readable) and the container scrolls sideways.
      const scale = vertical && this.container.clientWidth < NARROW && geo.width > this.container.clientWidth ? 0.8 : 1;
      const root = svg("svg", { viewBox: `0 0 ${geo.width} ${geo.height}`, width: Math.round(geo.width * scale),
        height: Math.round(geo.height * scale), role: "img",
        "aria-label": `stream-table DAG, ${dag.nodes.length} nodes`, "data-orientation": vertical ? "vertical" : "horizontal" });
      const defs = svg("defs");
      const marker = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7,
        orient: "auto-start-reverse" });
      marker.appendChild(svg("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#5b6b8c" }));
      defs.appendChild(marker);
      root.appendChild(defs);
      for (let layer = 0; layer < geo.layers; layer++) {
        const label = layer === 0 ? "sources" : "level " + layer;
        const main = PAD + (vertical ? LABEL : 0) + layer * geo.stepMain;
        const at = vertical ? { x: 4, y: main - 8 } : { x: main, y: PAD + 4 };
        root.appendChild(svg("text", { x: at.x, y: at.y, class: "layer" }, label));
      }
      const edges = svg("g", { class: "edges" });
      const free = lanes(geo);
      // Long edges first: they take the middle of the lanes, short ones fit around them.
      const ordered = [...dag.edges].sort((e, f) => {
        const span = (x) => { const a = geo.pos.get(x.from), b = geo.pos.get(x.to); return a && b ? b.layer - a.layer : 0; };
        return span(f) - span(e);
      });
      for (const e of ordered) {
        const a = geo.pos.get(e.from), b = geo.pos.get(e.to);
        if (!a || !b) continue;
        const path = svg("path", { d: route(geo, free, a, b), class: "edge", "marker-end": "url(#arrow)",
          "data-from": e.from, "data-to": e.to });
        edges.appendChild(path);
        this.edgeRefs.push({ path, to: e.to });
      }
      root.appendChild(edges);
      for (const n of dag.nodes) {
        const p = xy(geo.pos.get(n.id));
        const source = n.kind === "source";
        const g = svg("g", { class: source ? "node source" : "node st", transform: `translate(${p.x} ${p.y})`,
          "data-node": n.id, "data-kind": n.kind, "data-box": [p.x, p.y, W, H].join(" ") });
        const title = svg("title", {}, n.name);
        g.appendChild(title);
        g.appendChild(svg("rect", { class: "halo", x: -3, y: -3, width: W + 6, height: H + 6, rx: 12 }));
        g.appendChild(svg("rect", { class: "box", width: W, height: H, rx: 10 }));
        g.appendChild(svg("text", { class: "name", x: 12, y: 20 }, short(n.name, 25)));
        const meta = svg("text", { class: "meta", x: 12, y: 37 }, source ? "source table" : "");
        const stale = svg("text", { class: "meta stale", x: 12, y: 52 }, "");
        g.appendChild(meta);
        g.appendChild(stale);
        if (!source && n.level) {
          const label = String(n.level);
          const width = 10 + label.length * 6.6;
          const badge = svg("g", { class: "level " + (/^L\d+$/.test(label) ? "level-n" : "level-x"),
            transform: `translate(${W - 8 - width} 27)` });
          badge.appendChild(svg("rect", { width, height: 14, rx: 7 }));
          badge.appendChild(svg("text", { x: width / 2, y: 10.5, "text-anchor": "middle" }, label));
          g.appendChild(badge);
        }
        if (!source && n.caption) g.appendChild(svg("text", { class: "caption", x: 12, y: 66 }, short(n.caption, 34)));
        root.appendChild(g);
        this.refs.set(n.id, { g, meta, stale, title });
      }
      this.container.appendChild(root);
    }
  }

  global.DagView = DagView;
})(window);
