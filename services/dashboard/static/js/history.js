/* The history charts drawn from raw samples merged across answers.
   Each gunicorn worker keeps its own short history; every sample is (time, figures read from the database),
   so samples of different workers are points of the same curves. The page keeps the union of the samples of
   every answer it got (whichever worker served it), one per step, and computes values and rates itself:
   the charts do not jump between workers' histories. */
"use strict";
(function (global) {
  function rate(a, b, key) {
    const [ta, fa] = a, [tb, fb] = b;
    if (!(key in fa) || !(key in fb) || tb <= ta || !Fmt.isNum(fa[key]) || !Fmt.isNum(fb[key])) return null;
    return Math.max(0, (fb[key] - fa[key]) / (tb - ta)); // cumulative figures: a reset is not a dip
  }

  class HistoryMerge {
    constructor() { this.samples = new Map(); } // time (s) -> figures

    /* Merges history.samples into the store; returns the kept samples, oldest first. */
    merge(history) {
      for (const [t, figures] of history.samples || []) if (!this.samples.has(t)) this.samples.set(t, figures);
      const times = [...this.samples.keys()].sort((a, b) => a - b);
      const newest = times.length ? times[times.length - 1] : 0;
      const kept = [];
      // Newest first, so that the latest sample is always drawn; the union of several workers' samples is
      // denser than one worker's: one sample per step.
      for (const t of times.reverse()) {
        if (newest - t > history.window_s) { this.samples.delete(t); continue; }
        if (kept.length && kept[kept.length - 1][0] - t < history.step_s * 0.75) continue;
        kept.push([t, this.samples.get(t)]);
      }
      return kept.reverse();
    }

    /* One chart ({mode, series: [{key, label}]}) from the kept samples: {times, series: [{label, values}]}. */
    static chart(chart, kept) {
      if (chart.mode === "rate") {
        const pairs = kept.slice(1).map((b, i) => [kept[i], b]);
        return { times: pairs.map(([, b]) => b[0]),
          series: chart.series.map((s) => ({ label: s.label, values: pairs.map(([a, b]) => rate(a, b, s.key)) })) };
      }
      return { times: kept.map(([t]) => t),
        series: chart.series.map((s) => ({ label: s.label, values: kept.map(([, f]) => (s.key in f ? f[s.key] : null)) })) };
    }
  }

  global.HistoryMerge = HistoryMerge;
})(window);
