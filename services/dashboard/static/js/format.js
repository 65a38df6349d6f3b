/* Formatting and safe DOM helpers. Every dynamic text goes through textContent (no HTML parsing of data). */
"use strict";
(function (global) {
  const intFmt = new Intl.NumberFormat("en-US", { maximumFractionDigits: 0 });
  const numFmt = new Intl.NumberFormat("en-US", { maximumFractionDigits: 2 });
  const compact = new Intl.NumberFormat("en-US", { notation: "compact", maximumFractionDigits: 1 });
  const money0 = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD", maximumFractionDigits: 0 });
  const money2 = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD", minimumFractionDigits: 2 });
  const price = new Intl.NumberFormat("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 4 });
  const pct = new Intl.NumberFormat("en-US", { minimumFractionDigits: 2, maximumFractionDigits: 2 });

  function isNum(v) { return typeof v === "number" && Number.isFinite(v); }

  function value(v, format) {
    if (v === null || v === undefined) return "—";
    switch (format) {
      case "int": return isNum(v) ? intFmt.format(v) : String(v);
      case "money": return isNum(v) ? (Math.abs(v) >= 1000 ? money0.format(v) : money2.format(v)) : String(v);
      case "price": return isNum(v) ? price.format(v) : String(v);
      case "pct": return isNum(v) ? (v > 0 ? "+" : "") + pct.format(v) + "%" : String(v); // a change: signed
      case "share": return isNum(v) ? pct.format(v) + "%" : String(v); // a part of a whole: never signed
      case "number": return isNum(v) ? numFmt.format(v) : String(v);
      case "time": return time(v);
      case "direction": return v === "up" ? "▲" : v === "down" ? "▼" : "•";
      default: return String(v);
    }
  }

  function axis(v, format) {
    if (!isNum(v)) return String(v);
    if (format === "money") return "$" + compact.format(v);
    if (format === "share" || format === "pct") return compact.format(v) + "%";
    return compact.format(v);
  }

  function time(iso) {
    if (iso === null || iso === undefined) return "—";
    const d = typeof iso === "number" ? new Date(iso * 1000) : new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso);
    return d.toLocaleTimeString("en-GB", { hour12: false });
  }

  function seconds(s) {
    if (!isNum(s)) return "—";
    if (s < 1) return Math.round(s * 1000) + " ms";
    if (s < 120) return numFmt.format(Math.round(s * 10) / 10) + " s";
    if (s < 7200) return Math.round(s / 60) + " min";
    return Math.round(s / 3600) + " h";
  }

  function badgeClass(v) {
    const s = String(v).toUpperCase();
    if (["HIGH", "BREACH", "ERROR", "FAILED", "SUSPENDED"].includes(s)) return "badge badge-bad";
    if (["MEDIUM", "WARNING", "WARN", "ELEVATED", "FULL"].includes(s)) return "badge badge-warn";
    if (["LOW", "OK", "ACTIVE", "COMPLETED", "STANDARD", "DIFFERENTIAL"].includes(s)) return "badge badge-ok";
    return "badge badge-info";
  }

  /* el("td", {class: "num"}, "text" | Node | [..]) : attributes are set with setAttribute, text with textContent. */
  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    if (attrs) for (const [k, v] of Object.entries(attrs)) if (v !== null && v !== undefined) node.setAttribute(k, v);
    append(node, children);
    return node;
  }
  function append(node, children) {
    if (children === null || children === undefined) return node;
    for (const child of Array.isArray(children) ? children : [children]) {
      if (child === null || child === undefined) continue;
      node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }
  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }

  global.Fmt = { value, axis, time, seconds, badgeClass, isNum, el, append, clear };
})(window);
