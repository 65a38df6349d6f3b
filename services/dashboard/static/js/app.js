/* The live page: polls /api/snapshot every 2 s and renders panels, history, the DAG and the internals.
   All dynamic text is inserted with textContent (Fmt.el); no inline script or style (see the CSP). */
"use strict";
(function () {
  const POLL_MS = 2000;
  const { el, clear, value: fmt } = Fmt;
  const PALETTE = ["#38bdf8", "#a78bfa", "#f472b6", "#34d399", "#fbbf24", "#fb7185", "#60a5fa", "#c084fc",
    "#2dd4bf", "#f97316", "#a3e635", "#e879f9"];
  const RISK = { HIGH: "#ef4444", BREACH: "#ef4444", ELEVATED: "#f59e0b", MEDIUM: "#f59e0b", WARNING: "#f59e0b",
    LOW: "#22c55e", STANDARD: "#22c55e", OK: "#22c55e" };
  const NUMERIC = new Set(["int", "money", "number", "pct", "share", "price"]);

  const state = { panels: new Map(), history: new Map(), samples: new HistoryMerge(), dag: null, cascade: null,
    lastOk: null, shown: null, olderStreak: 0, tiles: new Map() };

  function setupCharts() {
    if (!window.Chart) return;
    Chart.defaults.color = "#8ea0bd";
    Chart.defaults.borderColor = "rgba(35, 49, 80, 0.7)";
    Chart.defaults.font.family = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif";
    Chart.defaults.font.size = 11;
    Chart.defaults.plugins.legend.labels.boxWidth = 10;
    Chart.defaults.animation.duration = 400;
  }

  function colours(dataset, labels, index, single) {
    const p = dataset.palette;
    if (p === "risk") return labels.map((l) => RISK[String(l).toUpperCase()] || PALETTE[0]);
    if (p === "high") return RISK.HIGH;
    if (p === "medium") return RISK.MEDIUM;
    if (p === "sign") return dataset.values.map((v) => (v !== null && v < 0 ? "#f87171" : "#4ade80"));
    if (single) return labels.map((_, i) => PALETTE[i % PALETTE.length]);
    return PALETTE[(index + 1) % PALETTE.length];
  }

  /* ---- scenario panels ---- */
  class PanelView {
    constructor(spec) {
      this.id = spec.id;
      this.seen = null;
      this.root = el("article", { class: "card panel" + (spec.wide ? " wide" : ""), "data-panel-id": spec.id });
      const sources = el("span", { class: "sources" }, spec.sources.join(" · "));
      this.root.appendChild(el("div", { class: "panel-head" }, [el("h2", null, spec.title), sources]));
      if (spec.note) this.root.appendChild(el("p", { class: "note" }, spec.note));
      const body = el("div", { class: "panel-body" + (spec.chart && spec.table ? " both" : "") });
      if (spec.chart) {
        this.canvas = el("canvas", { "aria-label": spec.title + " chart", role: "img" });
        body.appendChild(el("div", { class: "chart-box" + (spec.chart.type === "doughnut" ? " doughnut" : "") }, this.canvas));
      }
      if (spec.table) {
        this.table = el("table", { class: "grid" });
        body.appendChild(el("div", { class: "scroll" }, this.table));
      }
      this.root.appendChild(body);
    }

    update(spec) {
      if (spec.chart) this.updateChart(spec.chart);
      if (spec.table) this.updateTable(spec.table);
      this.root.setAttribute("data-rows", String(spec.table ? spec.table.rows.length : 0));
      this.root.setAttribute("data-points", String(spec.chart ? spec.chart.labels.length : 0));
    }

    updateChart(c) {
      if (!window.Chart) return;
      const single = c.datasets.length === 1;
      const datasets = c.datasets.map((d, i) => ({
        label: d.label, data: d.values, backgroundColor: colours(d, c.labels, i, single && c.type !== "doughnut" ? true : c.type === "doughnut"),
        borderWidth: c.type === "doughnut" ? 2 : 0, borderColor: c.type === "doughnut" ? "#111a2e" : undefined,
        borderRadius: c.type === "doughnut" ? 0 : 5, maxBarThickness: 34,
      }));
      if (this.chart) {
        this.chart.data.labels = c.labels;
        this.chart.data.datasets.forEach((ds, i) => Object.assign(ds, datasets[i] || {}));
        if (this.chart.data.datasets.length !== datasets.length) this.chart.data.datasets = datasets;
        this.chart.update();
        return;
      }
      const horizontal = c.type === "hbar";
      const valueAxis = { stacked: c.stacked, ticks: { callback: (v) => Fmt.axis(v, c.format) }, grid: { color: "rgba(35,49,80,0.6)" } };
      const labelAxis = { stacked: c.stacked, grid: { display: false }, ticks: { autoSkip: false,
        callback(v) { const l = String(this.getLabelForValue(v)); return l.length > 18 ? l.slice(0, 17) + "…" : l; } } };
      this.chart = new Chart(this.canvas, {
        type: c.type === "doughnut" ? "doughnut" : "bar",
        data: { labels: c.labels, datasets },
        options: {
          responsive: true, maintainAspectRatio: false, indexAxis: horizontal ? "y" : "x",
          cutout: c.type === "doughnut" ? "62%" : undefined,
          plugins: {
            legend: { display: c.type === "doughnut" || c.datasets.length > 1, position: c.type === "doughnut" ? "right" : "top" },
            tooltip: { callbacks: { label: (ctx) => `${ctx.dataset.label}: ${fmt(ctx.raw, c.format)}` } },
          },
          scales: c.type === "doughnut" ? {} : horizontal ? { x: valueAxis, y: labelAxis } : { x: labelAxis, y: valueAxis },
        },
      });
    }

    updateTable(t) {
      clear(this.table);
      const head = el("tr", null, t.columns.map((c) => el("th", { class: NUMERIC.has(c.format) ? "num" : null }, c.label)));
      this.table.appendChild(el("thead", null, head));
      const body = el("tbody");
      const seen = new Set();
      if (!t.rows.length) body.appendChild(el("tr", null, el("td", { class: "empty", colspan: String(t.columns.length) }, t.empty)));
      for (const row of t.rows) {
        const key = JSON.stringify(row[t.key]);
        seen.add(key);
        const fresh = this.seen !== null && !this.seen.has(key);
        body.appendChild(el("tr", { class: fresh ? "fresh" : null }, t.columns.map((c) => cell(row[c.key], c.format))));
      }
      this.seen = seen;
      this.table.appendChild(body);
    }
  }

  function cell(v, format) {
    if (format === "badge") return el("td", null, v === null ? "—" : el("span", { class: Fmt.badgeClass(v) }, String(v)));
    if (format === "direction") return el("td", null, el("span", { class: "dir dir-" + (v === "up" || v === "down" ? v : "flat") }, fmt(v, format)));
    if (format === "utilisation") {
      const ratio = Fmt.isNum(v) ? v : 0;
      const fill = el("span", { class: "fill " + (ratio > 1 ? "bad" : ratio > 0.8 ? "warn" : "ok") });
      fill.style.width = Math.min(100, ratio * 100).toFixed(1) + "%"; // CSSOM: allowed by the CSP
      return el("td", null, el("div", { class: "util" }, [el("span", { class: "track" }, fill),
        el("span", { class: "pct" }, Fmt.isNum(v) ? (v * 100).toFixed(1) + "%" : "—")]));
    }
    const cls = [NUMERIC.has(format) ? "num" : "text"];
    if ((format === "money" || format === "pct") && Fmt.isNum(v) && v < 0) cls.push("neg");
    if (format === "pct" && Fmt.isNum(v) && v > 0) cls.push("pos");
    return el("td", { class: cls.join(" "), title: format === "text" && v !== null ? String(v) : null }, fmt(v, format));
  }

  function renderPanels(panels) {
    const container = document.getElementById("panels");
    const ids = panels.map((p) => p.id).join("|");
    if (container.getAttribute("data-ids") !== ids) {
      clear(container);
      state.panels.clear();
      for (const spec of panels) {
        const view = new PanelView(spec);
        state.panels.set(spec.id, view);
        container.appendChild(view.root);
      }
      container.setAttribute("data-ids", ids);
    }
    for (const spec of panels) state.panels.get(spec.id).update(spec);
  }

  function renderTiles(tiles) {
    const container = document.getElementById("tiles");
    if (container.childElementCount !== tiles.length) { clear(container); state.tiles.clear(); }
    tiles.forEach((t, i) => {
      let ref = state.tiles.get(i);
      if (!ref) {
        ref = { root: el("div", { class: "tile" }), label: el("div", { class: "label" }), value: el("div", { class: "value" }),
          hint: el("div", { class: "hint" }) };
        ref.root.append(ref.label, ref.value, ref.hint);
        container.appendChild(ref.root);
        state.tiles.set(i, ref);
      }
      const text = fmt(t.value, t.format);
      ref.label.textContent = t.label;
      if (ref.value.textContent !== text && ref.value.textContent !== "") {
        ref.root.classList.remove("bump"); void ref.root.offsetWidth; ref.root.classList.add("bump");
      }
      ref.value.textContent = text;
      ref.hint.textContent = t.hint || "\u00a0";
      ref.root.setAttribute("data-label", t.label);
    });
  }

  /* ---- history ---- */
  function renderHistory(history) {
    const container = document.getElementById("history");
    const kept = state.samples.merge(history);
    for (const spec of history.charts) {
      const h = Object.assign({}, spec, HistoryMerge.chart(spec, kept));
      let ref = state.history.get(h.id);
      if (!ref) {
        const canvas = el("canvas", { role: "img", "aria-label": h.title });
        const figure = el("figure", { "data-history-id": h.id }, [el("figcaption", null, h.title), el("div", { class: "chart-box" }, canvas)]);
        container.appendChild(figure);
        ref = { canvas, figure, chart: null };
        state.history.set(h.id, ref);
      }
      ref.figure.setAttribute("data-points", String(h.times.length));
      if (!window.Chart) continue;
      // A time axis (seconds): a 30 s gap takes ten times the width of a 3 s one; a gap longer than three
      // steps (the dashboard was down) breaks the line instead of bridging it. Monotone interpolation never
      // overshoots the samples (no sine waves out of steps).
      const newest = h.times.length ? h.times[h.times.length - 1] : Date.now() / 1000;
      const colour = (s, i) => RISK[String(s.label).toUpperCase()] || PALETTE[i % PALETTE.length];
      const points = (values) => {
        const out = [];
        h.times.forEach((t, i) => {
          if (i > 0 && t - h.times[i - 1] > 3 * history.step_s) out.push({ x: (t + h.times[i - 1]) / 2, y: null });
          out.push({ x: t, y: values[i] });
        });
        return out;
      };
      const datasets = h.series.map((s, i) => ({ label: s.label, data: points(s.values), borderColor: colour(s, i),
        backgroundColor: colour(s, i) + "33", fill: h.series.length === 1, cubicInterpolationMode: "monotone",
        tension: 0.2, pointRadius: 0, borderWidth: 2, spanGaps: false }));
      // The axis spans the window, or less while the samples do not cover it yet (a dashboard just started).
      const oldest = h.times.length ? h.times[0] : newest - history.window_s;
      const x = { type: "linear", min: Math.max(newest - history.window_s, oldest), max: newest, grid: { display: false },
        ticks: { maxTicksLimit: 6, maxRotation: 0, callback: (v) => Fmt.time(v) } };
      if (ref.chart) {
        ref.chart.data.datasets = datasets;
        ref.chart.options.scales.x.min = x.min;
        ref.chart.options.scales.x.max = x.max;
        ref.chart.update("none");
      } else {
        ref.chart = new Chart(ref.canvas, {
          type: "line", data: { datasets },
          options: { responsive: true, maintainAspectRatio: false, animation: false, parsing: true,
            interaction: { mode: "nearest", axis: "x", intersect: false },
            plugins: { legend: { display: h.series.length > 1, position: "bottom" },
              tooltip: { callbacks: { title: (items) => (items.length ? Fmt.time(items[0].parsed.x) : ""),
                label: (ctx) => `${ctx.dataset.label}: ${fmt(ctx.parsed.y, h.format)}` } } },
            scales: { x, y: { beginAtZero: true, ticks: { callback: (v) => Fmt.axis(v, h.format) } } } },
        });
      }
    }
  }

  /* ---- internals ---- */
  function table(id, columns, rows) {
    const t = clear(document.getElementById(id));
    t.appendChild(el("thead", null, el("tr", null, columns.map(([, label, f]) => el("th", { class: NUMERIC.has(f) ? "num" : null }, label)))));
    const body = el("tbody");
    for (const row of rows) body.appendChild(el("tr", null, columns.map(([key, , f]) => cell(typeof key === "function" ? key(row) : row[key], f))));
    t.appendChild(body);
  }

  function renderInternals(internals) {
    const advisor = clear(document.getElementById("advisor"));
    for (const a of internals.advisor) {
      const confidence = ["high", "medium", "low"].includes(a.confidence) ? a.confidence : "low";
      advisor.appendChild(el("div", { class: "verdict " + (a.keep ? "keep" : "switch"), "data-name": a.name }, [
        el("div", { class: "vname" }, a.name), el("div", { class: "vtext" }, a.verdict),
        el("div", { class: "vmodes" }, "configured " + (a.current_mode || "—") + " · effective " + (a.effective_mode || "—")),
        el("div", { class: "vconf conf-" + confidence }, "confidence: " + a.confidence), el("div", { class: "vreason" }, a.reason || ""),
      ]));
    }
    table("refreshes", [["start_time", "Time", "time"], ["name", "Stream table", "text"], ["action", "Action", "badge"],
      ["status", "Status", "badge"], ["duration_ms", "ms", "number"], ["rows_inserted", "+rows", "int"],
      ["rows_deleted", "−rows", "int"], ["initiated_by", "By", "text"]], internals.refreshes);
    table("efficiency", [["name", "Stream table", "text"], ["mode", "Mode", "badge"], ["total_refreshes", "Refreshes", "int"],
      ["avg_diff_ms", "Diff ms", "number"], ["avg_full_ms", "Full ms", "number"],
      [(r) => (Fmt.isNum(r.avg_change_ratio) ? r.avg_change_ratio * 100 : null), "Change %", "number"],
      [(r) => r.diff_speedup || "n/a", "Speed-up", "text"]], internals.efficiency);
    table("status", [["name", "Name", "text"], ["status", "Status", "badge"], ["mode", "Mode", "badge"],
      ["schedule", "Schedule", "text"], [(r) => Fmt.seconds(r.staleness_s), "Staleness", "text"],
      ["consecutive_errors", "Errors", "int"]], internals.status);
    const health = clear(document.getElementById("health"));
    for (const h of internals.health) {
      health.appendChild(el("li", { title: h.detail || "" }, el("span", { class: Fmt.badgeClass(h.severity) }, h.check + ": " + h.severity)));
    }
    // A panel whose read failed (permission, timeout) says so in words; the rest of the page stays live.
    const unavailable = internals.unavailable || {};
    for (const [panel, id] of [["advisor", "advisor"], ["efficiency", "efficiency"], ["health", "health"]]) {
      const target = document.getElementById(id);
      const holder = target.tagName === "TABLE" ? target.parentNode : target;
      let note = holder.parentNode.querySelector(".unavailable[data-panel='" + panel + "']");
      if (!unavailable[panel]) { if (note) note.remove(); continue; }
      if (!note) { note = el("p", { class: "unavailable", "data-panel": panel }); holder.parentNode.insertBefore(note, holder); }
      note.textContent = unavailable[panel];
    }
  }

  function renderTree(tree) {
    const box = document.getElementById("tree");
    if (!box) return;
    box.textContent = tree === null || tree === undefined ? "dependency_tree() is not available from this engine."
      : tree.map((t) => t.line).join("\n");
  }

  /* ---- tabs: the story (Overview) and the engine's internals, one click apart ---- */
  function tabs() {
    const show = (name) => {
      for (const b of document.querySelectorAll("[data-tab-button]")) {
        const on = b.getAttribute("data-tab-button") === name;
        b.setAttribute("aria-selected", on ? "true" : "false");
        b.classList.toggle("active", on);
      }
      for (const s of document.querySelectorAll("[data-tab]")) s.hidden = s.getAttribute("data-tab") !== name;
      document.body.setAttribute("data-tab", name);
      if (name === "overview" && state.dag && state.dag.last) state.dag.update(state.dag.last); // sizes known now
    };
    for (const b of document.querySelectorAll("[data-tab-button]")) {
      b.addEventListener("click", () => {
        const name = b.getAttribute("data-tab-button");
        window.history.replaceState(null, "", name === "overview" ? location.pathname : "#" + name);
        show(name);
      });
    }
    show(location.hash === "#internals" ? "internals" : "overview");
  }

  /* ---- header, banner ---- */
  function setOnline(snapshot) {
    state.lastOk = snapshot.generated_at;
    document.getElementById("banner").hidden = true;
    document.getElementById("main").classList.remove("stale");
    document.getElementById("fact-engine").textContent = snapshot.engine.label;
    document.getElementById("fact-engine").setAttribute("title", snapshot.engine.version);
    document.getElementById("fact-database").textContent = "connected";
    document.getElementById("db-dot").className = "dot dot-ok";
    document.getElementById("fact-updated").textContent = Fmt.time(snapshot.generated_at);
    document.body.setAttribute("data-state", "ok");
  }

  function setOffline(title, detail) {
    document.getElementById("banner-title").textContent = title;
    document.getElementById("banner-detail").textContent = detail +
      (state.lastOk ? ` Showing data from ${Fmt.time(state.lastOk)}.` : "") + " Retrying every 2 s.";
    document.getElementById("banner").hidden = false;
    document.getElementById("main").classList.add("stale");
    document.getElementById("fact-database").textContent = title.toLowerCase();
    document.getElementById("db-dot").className = "dot dot-bad";
    document.body.setAttribute("data-state", "down");
  }

  function render(s) {
    renderTiles(s.tiles);
    renderPanels(s.panels);
    renderHistory(s.history);
    if (!state.dag) state.dag = new DagView(document.getElementById("dag"));
    state.dag.update(s.dag);
    if (!state.cascade) state.cascade = new CascadeView(document.getElementById("cascade"));
    state.cascade.update(s.cascade);
    renderInternals(s.internals);
    renderTree(s.tree);
  }

  async function poll() {
    try {
      const response = await fetch("/api/snapshot", { cache: "no-store", signal: AbortSignal.timeout(6000) });
      const body = await response.json().catch(() => null);
      if (response.ok && body) {
        // Several workers each cache their own snapshot: an answer older than the one on screen would make
        // figures step back and DAG nodes pulse for nothing. Keep its history samples, skip the rest.
        // (Five older answers in a row are not another worker's cache but a server clock set back: accept.)
        const older = state.shown && Date.parse(body.generated_at) < Date.parse(state.shown.generated_at);
        state.olderStreak = older ? state.olderStreak + 1 : 0;
        if (older && state.olderStreak < 5) {
          renderHistory(body.history);
        } else {
          state.olderStreak = 0;
          state.shown = body;
          render(body);
        }
        setOnline(state.shown);
      } else if (body && body.database && body.database.state === "unreachable") {
        setOffline("Database unreachable", `The database has not answered since ${Fmt.time(body.database.since)}.`);
      } else if (body && body.database) {
        setOffline("Database not ready", body.detail ? String(body.detail) + "." : "");
      } else {
        setOffline("Dashboard error", `The dashboard answered HTTP ${response.status}.`);
      }
    } catch (err) {
      setOffline("Dashboard unreachable", "The dashboard's API does not answer.");
    }
    window.setTimeout(poll, POLL_MS);
  }

  /* ---- generator controls ---- */
  function controls() {
    if (document.body.getAttribute("data-controls") !== "on") return;
    const status = document.getElementById("generator-state");
    const show = (text, error) => { status.textContent = text; status.className = "gen-state" + (error ? " error" : ""); };
    async function call(method, path, body) {
      try {
        const response = await fetch(path, { method, cache: "no-store", headers: body === undefined && method === "GET" ? {} :
          { "Content-Type": "application/json" }, body: method === "GET" ? undefined : JSON.stringify(body || {}) });
        const answer = await response.json().catch(() => ({}));
        if (!response.ok) { show(`generator: ${answer.detail || "HTTP " + response.status}`, true); return null; }
        return answer;
      } catch (err) { show("generator: unreachable", true); return null; }
    }
    async function refresh() {
      const s = await call("GET", "/api/control");
      if (!s) return;
      const events = Object.values(s.events_committed || {}).reduce((a, b) => a + b, 0);
      show(`${s.paused ? "paused" : "running"} · ${Fmt.value(s.rate, "number")} events/s · ${Fmt.value(events, "int")} events written`);
      const input = document.getElementById("rate-input");
      if (document.activeElement !== input) input.value = String(s.rate);
      document.getElementById("btn-pause").disabled = !!s.paused;
      document.getElementById("btn-resume").disabled = !s.paused;
    }
    const action = (name, body) => async () => { if (await call("POST", "/api/control/" + name, body)) refresh(); };
    document.getElementById("btn-burst").addEventListener("click", action("burst"));
    document.getElementById("btn-pause").addEventListener("click", action("pause"));
    document.getElementById("btn-resume").addEventListener("click", action("resume"));
    document.getElementById("rate-form").addEventListener("submit", (event) => {
      event.preventDefault();
      action("rate", { rate: Number(document.getElementById("rate-input").value) })();
    });
    refresh();
    window.setInterval(refresh, 4000);
  }

  document.addEventListener("DOMContentLoaded", () => { setupCharts(); tabs(); controls(); poll(); });
})();
