/* The stream-table DAG as SVG, from the server's layered layout (node.layer, node.order).
   Built with createElementNS/textContent only. A node whose last refresh time moved pulses. */
"use strict";
(function (global) {
  const NS = "http://www.w3.org/2000/svg";
  const W = 184, H = 60, GAP_MAIN = 86, GAP_CROSS = 20, PAD = 24, LABEL = 22;
  const MODE = { DIFFERENTIAL: "DIFF", FULL: "FULL", IMMEDIATE: "IMMEDIATE" };

  function svg(tag, attrs, text) {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function short(name, max) { return name.length > max ? name.slice(0, max - 1) + "…" : name; }

  class DagView {
    constructor(container) {
      this.container = container;
      this.shape = null;       // node ids + edges: rebuild only when the graph itself changes
      this.refs = new Map();   // id -> {g, stale, meta}
      this.lastRefresh = new Map();
      this.edgeRefs = [];
    }

    update(dag) {
      const shape = JSON.stringify([dag.nodes.map((n) => [n.id, n.layer, n.order]), dag.edges]);
      if (shape !== this.shape) { this.build(dag); this.shape = shape; }
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
        ref.title.textContent = node.name + "\n" + node.status + " · " + node.mode + " · schedule " + node.schedule +
          "\nlast refresh " + (node.last_refresh_at || "never");
      }
      for (const edge of this.edgeRefs) edge.path.setAttribute("class", pulsed.has(edge.to) ? "edge hot" : "edge");
    }

    pulse(g) {
      g.classList.remove("pulse");
      void g.getBoundingClientRect(); // restart the CSS animation
      g.classList.add("pulse");
      g.setAttribute("data-pulses", String(Number(g.getAttribute("data-pulses") || 0) + 1));
    }

    build(dag) {
      Fmt.clear(this.container);
      this.refs.clear();
      this.edgeRefs = [];
      const layers = dag.layers || 1;
      const counts = new Array(layers).fill(0);
      for (const n of dag.nodes) counts[n.layer] = Math.max(counts[n.layer], n.order + 1);
      const widest = Math.max(1, ...counts);
      const horizontal = layers <= 5; // deep DAGs (finance: 10 levels) read top to bottom
      const stepMain = horizontal ? W + GAP_MAIN : H + GAP_MAIN / 2;
      const stepCross = (horizontal ? H : W) + GAP_CROSS;
      const crossSize = widest * stepCross - GAP_CROSS;
      const pos = new Map();
      for (const n of dag.nodes) {
        const offset = ((widest - counts[n.layer]) * stepCross) / 2;
        const main = PAD + (horizontal ? 0 : LABEL) + n.layer * stepMain;
        const cross = PAD + (horizontal ? LABEL : 0) + offset + n.order * stepCross;
        pos.set(n.id, horizontal ? { x: main, y: cross } : { x: cross, y: main });
      }
      const width = horizontal ? 2 * PAD + (layers - 1) * stepMain + W : 2 * PAD + crossSize;
      const height = horizontal ? 2 * PAD + LABEL + crossSize : 2 * PAD + LABEL + layers * stepMain - stepMain + H;
      const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, width, height, role: "img",
        "aria-label": `stream-table DAG, ${dag.nodes.length} nodes` });
      const defs = svg("defs");
      const marker = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7,
        orient: "auto-start-reverse" });
      marker.appendChild(svg("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#5b6b8c" }));
      defs.appendChild(marker);
      root.appendChild(defs);
      for (let layer = 0; layer < layers; layer++) {
        const label = layer === 0 ? "sources" : "level " + layer;
        const at = horizontal ? { x: PAD + layer * stepMain, y: PAD + 4 } : { x: PAD, y: PAD + LABEL + layer * stepMain - 8 };
        root.appendChild(svg("text", { x: at.x, y: at.y, class: "layer" }, label));
      }
      const edges = svg("g", { class: "edges" });
      for (const e of dag.edges) {
        const a = pos.get(e.from), b = pos.get(e.to);
        if (!a || !b) continue;
        let d;
        if (horizontal) {
          const x1 = a.x + W, y1 = a.y + H / 2, x2 = b.x - 2, y2 = b.y + H / 2, mx = (x1 + x2) / 2;
          d = `M ${x1} ${y1} C ${mx} ${y1}, ${mx} ${y2}, ${x2} ${y2}`;
        } else {
          const x1 = a.x + W / 2, y1 = a.y + H, x2 = b.x + W / 2, y2 = b.y - 2, my = (y1 + y2) / 2;
          d = `M ${x1} ${y1} C ${x1} ${my}, ${x2} ${my}, ${x2} ${y2}`;
        }
        const path = svg("path", { d, class: "edge", "marker-end": "url(#arrow)" });
        edges.appendChild(path);
        this.edgeRefs.push({ path, to: e.to });
      }
      root.appendChild(edges);
      for (const n of dag.nodes) {
        const p = pos.get(n.id);
        const source = n.kind === "source";
        const g = svg("g", { class: source ? "node source" : "node st", transform: `translate(${p.x} ${p.y})`,
          "data-node": n.id, "data-kind": n.kind });
        const title = svg("title", {}, n.name);
        g.appendChild(title);
        g.appendChild(svg("rect", { class: "halo", x: -3, y: -3, width: W + 6, height: H + 6, rx: 12 }));
        g.appendChild(svg("rect", { class: "box", width: W, height: H, rx: 10 }));
        g.appendChild(svg("text", { class: "name", x: 12, y: 20 }, short(n.name, 24)));
        const meta = svg("text", { class: "meta", x: 12, y: 36 }, source ? "source table" : "");
        const stale = svg("text", { class: "meta stale", x: 12, y: 50 }, "");
        g.appendChild(meta);
        g.appendChild(stale);
        root.appendChild(g);
        this.refs.set(n.id, { g, meta, stale, title });
      }
      this.container.appendChild(root);
    }
  }

  global.DagView = DagView;
})(window);
