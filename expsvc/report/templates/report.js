/* expsvc report: builds the page from the JSON in #report-data.  Every stored string reaches the DOM through
   textContent or attribute setters, never as HTML. */
(function () {
  "use strict";
  var D = JSON.parse(document.getElementById("report-data").textContent);
  var PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                 "#bcbd22", "#17becf"];
  var state = { hidden: {}, selected: {}, logY: false, smooth: 0, seeds: false, sortKey: null, sortDir: 1,
                stat: "last" };
  var charts = [];
  var NO_POINTS = { show: false };
  /* tick steps 1, 2, 5 × 10^k over every finite double's range (uPlot's own stop near 1e16, and a diverging
     group's mean can reach 1e300: its axis must still have ticks) */
  var WIDE_STEPS = [];
  for (var e = -300; e <= 300; e++) { [1, 2, 5].forEach(function (m) { WIDE_STEPS.push(Number(m + "e" + e)); }); }
  var INTEGER_STEPS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000, 1e6, 1e7];
  window.expsvcReport = { data: D, charts: charts, state: state };

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    if (attrs) { for (var k in attrs) { if (attrs[k] !== undefined && attrs[k] !== null) e.setAttribute(k, attrs[k]); } }
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function color(i, alpha) {
    var c = PALETTE[i % PALETTE.length];
    if (alpha === undefined) return c;
    var n = parseInt(c.slice(1), 16);
    return "rgba(" + (n >> 16) + "," + ((n >> 8) & 255) + "," + (n & 255) + "," + alpha + ")";
  }
  function dash(i) {
    /* more than 10 groups: the colours repeat, so each further ten gets its own dash pattern */
    return [undefined, [10, 5], [3, 3], [12, 4, 3, 4]][Math.floor(i / PALETTE.length) % 4];
  }
  function fmt(v, digits) {
    if (v === null || v === undefined) return "–";
    if (typeof v !== "number") return String(v);
    if (v === 0) return "0";
    var a = Math.abs(v);
    if (a >= 1e5 || a < 1e-3) return v.toExponential((digits || 4) - 1);
    return String(Number(v.toPrecision(digits || 4)));
  }
  function list(items, attrs, most) {
    /* the first ``most`` items, the rest behind a "show all" disclosure (a sweep has dozens of comparisons) */
    var ul = el("ul", attrs);
    items.slice(0, most).forEach(function (t) { ul.appendChild(el("li", null, t)); });
    if (items.length <= most) return ul;
    var det = el("details"), wrap = el("div");
    det.appendChild(el("summary", null, "… and " + (items.length - most) + " more"));
    var rest = el("ul");
    items.slice(most).forEach(function (t) { rest.appendChild(el("li", null, t)); });
    det.appendChild(rest); wrap.appendChild(ul); wrap.appendChild(det);
    return wrap;
  }
  function tickValues(u, vals) {
    /* uPlot hands log axes' unlabelled (minor) ticks as null: they stay blank, never "–" */
    return vals.map(function (v) { return v === null || v === undefined ? "" : fmt(v, 3); });
  }
  function groupName(i) { return D.groups[i] ? D.groups[i].name : "?"; }

  /* ------------------------------------------------------------------ header and answer */
  document.getElementById("subtitle").textContent = "experiment " + D.experiment + " · " +
    D.table.rows.length + " runs in " + D.groups.length + " groups" + (D.where ? " · where " + D.where : "") +
    (D.running ? " · " + D.running + " runs queued or running" : "") + " · generated " + D.generated;

  function answer() {
    var box = document.getElementById("answer-body");
    var C = D.compare;
    if (D.study) {  /* an expsvc tune study: how each optimizer's configuration was chosen */
      var st = el("div", { "class": "study", id: "study" });
      st.appendChild(el("strong", null, "Study " + D.study.name + ": tuned on validation data (" + D.study.tuning +
                                        "), answered on test data by fresh seeds (" + D.study.confirmation + ")"));
      st.appendChild(el("p", { "class": "small" }, "Selection rule: " + D.study.rule));
      st.appendChild(list(Object.keys(D.study.choices).map(function (k) {
        var c = D.study.choices[k];
        return k + ": " + Object.keys(c).map(function (p) { return p + " = " + fmt(c[p]); }).join(", ");
      }), { id: "study-choices" }, 20));
      if (D.study.warnings.length) {
        st.appendChild(el("strong", null, "Warnings from the selection"));
        st.appendChild(list(D.study.warnings, { id: "study-warnings" }, 6));
      }
      box.appendChild(st);
    }
    if (D.refusal) {
      var r = el("div", { "class": "refusal", id: "refusal" });
      r.appendChild(el("strong", null, "compare refused this grouping: "));
      r.appendChild(document.createTextNode(D.refusal));
      box.appendChild(r);
    }
    if (!C) return;
    if (D.caution.length || C.warnings.length) {
      var c = el("div", { "class": "caution", id: "caution" });
      if (D.caution.length) {
        c.appendChild(el("strong", null, "Caution: the intervals cannot separate these groups (" + D.caution.length +
                                         " comparison" + (D.caution.length === 1 ? "" : "s") + ")"));
        c.appendChild(list(D.caution, null, 6));
      }
      if (C.warnings.length) {
        c.appendChild(el("strong", null, "Warnings from compare"));
        c.appendChild(list(C.warnings, null, 6));
      }
      box.appendChild(c);
    }
    var t = el("table", { id: "compare-table" });
    box.appendChild(el("p", { "class": "small muted", id: "compare-caption" }, "Baseline: " + C.baseline +
      ". ↓ lower is better, ↑ higher is better. n = finished runs of all the group's runs; SE = std / √n; " +
      "Δ = group − baseline."));
    var head = ["group", "metric", "n", "mean", "± 95 % CI", "std", "SE", "IQM", "Δ", "95 % CI of Δ",
                "p", "P(better)", "test"];
    var tr = el("tr");
    head.forEach(function (h, i) { tr.appendChild(el("th", { "class": i > 1 ? "num" : null }, h)); });
    t.appendChild(el("thead")).appendChild(tr);
    var tb = el("tbody");
    C.groups.forEach(function (g, gi) {
      C.metrics.forEach(function (m) {
        var s = g.metrics[m.label], v = s.vs_baseline || {};
        var row = el("tr", { "data-group": g.label, "data-metric": m.label });
        var cells = [g.name + (g.baseline ? " (baseline)" : ""), m.label + (m.better === "lower" ? " ↓" : " ↑"),
                     s.n + " of " + g.n_expected, s.mean, s.ci, s.std,
                     s.std === null || !s.n ? null : s.std / Math.sqrt(s.n), s.iqm, v.diff, v.low === undefined ? null :
                     "[" + fmt(v.low) + ", " + fmt(v.high) + "]", v.p, v.prob_better, v.method || ""];
        var keys = ["group", "metric", "n", "mean", "ci", "std", "se", "iqm", "diff", "interval", "p", "prob_better",
                    "method"];
        cells.forEach(function (x, i) {
          var td = el("td", { "class": i > 1 ? "num" : null, "data-key": keys[i],
                              "data-value": typeof x === "number" ? String(x) : null }, fmt(x));
          if (i === 0) { td.insertBefore(el("span", { "class": "swatch", style: "background:" + color(gi) }), td.firstChild); }
          row.appendChild(td);
        });
        tb.appendChild(row);
      });
    });
    t.appendChild(tb);
    box.appendChild(el("div", { "class": "scroll" })).appendChild(t);
    var sentences = [];
    C.groups.forEach(function (g) {
      C.metrics.forEach(function (m) { var s = g.metrics[m.label].sentence; if (s) sentences.push(s); });
    });
    box.appendChild(list(sentences, { "class": "sentences", id: "sentences" }, 8));
    var det = el("details");
    det.appendChild(el("summary", null, "Method"));
    C.method.forEach(function (line) { if (line) det.appendChild(el("p", { "class": "small" }, line)); });
    box.appendChild(det);
  }

  /* ------------------------------------------------------------------ curves */
  function ema(ys, w) {
    if (!w) return ys;
    var out = [], last = 0, n = 0;
    for (var i = 0; i < ys.length; i++) {
      var v = ys[i];
      if (v === null || !isFinite(v)) { out.push(v); continue; }
      last = last * w + (1 - w) * v; n++;
      out.push(last / (1 - Math.pow(w, n)));
    }
    return out;
  }
  function align(xsList) {
    var set = {};
    xsList.forEach(function (xs) { xs.forEach(function (x) { set[x] = true; }); });
    return Object.keys(set).map(Number).sort(function (a, b) { return a - b; });
  }
  function onto(xAll, xs, ys) {
    var idx = {}, out = new Array(xAll.length).fill(null);
    xAll.forEach(function (x, i) { idx[x] = i; });
    xs.forEach(function (x, i) { out[idx[x]] = ys[i]; });
    return out;
  }
  function positive(ys) { return ys.map(function (v) { return v !== null && v > 0 ? v : null; }); }

  function legend() {
    var box = document.getElementById("legend");
    box.textContent = "";
    D.groups.forEach(function (g, gi) {
      var b = el("button", { type: "button", "data-group": String(gi), title: g.label,
                             "class": state.hidden[gi] ? "off" : null });
      b.appendChild(el("span", { "class": "swatch", style: "background:" + color(gi) +
                                 (dash(gi) ? ";outline:2px dashed #fff;outline-offset:-4px" : "") }));
      var st = Object.keys(g.statuses).map(function (k) { return g.statuses[k] + " " + k; }).join(", ");
      b.appendChild(document.createTextNode(g.name + " (n = " + g.n + ": " + st + ")"));
      b.addEventListener("click", function () { toggleGroup(gi); });
      box.appendChild(b);
    });
  }
  function toggleGroup(gi) {
    state.hidden[gi] = !state.hidden[gi];
    legend();
    charts.forEach(function (c) {
      c.u.series.forEach(function (s, i) {
        if (i > 0 && c.groupOf[i] === gi) c.u.setSeries(i, { show: !state.hidden[gi] });
      });
    });
  }

  function curveChart(curve, box, width) {
    var log = state.logY, w = state.smooth;
    var groups = curve.groups.filter(function (g) { return g.x.length; });
    var runIds = Object.keys(curve.runs).filter(function (id) { return state.seeds || state.selected[id]; });
    var xAll = align(groups.map(function (g) { return g.x; }).concat(runIds.map(function (id) { return curve.runs[id].x; })));
    var data = [xAll], series = [{ label: curve.x }], bands = [], groupOf = [null], counts = [null];
    groups.forEach(function (g) {
      var m = log ? g.gmean : g.mean, lo = log ? g.glow : g.low, hi = log ? g.ghigh : g.high;
      if (log) { m = positive(m); lo = positive(lo); hi = positive(hi); }
      var base = data.length, show = !state.hidden[g.group];
      data.push(onto(xAll, g.x, ema(m, w)), onto(xAll, g.x, ema(lo, w)), onto(xAll, g.x, ema(hi, w)));
      series.push({ label: groupName(g.group), stroke: color(g.group), width: 2, spanGaps: true, show: show,
                    dash: dash(g.group), points: NO_POINTS },
                  { label: groupName(g.group) + " low", stroke: color(g.group, 0.3), width: 0.5, spanGaps: true, show: show,
                    points: NO_POINTS },
                  { label: groupName(g.group) + " high", stroke: color(g.group, 0.3), width: 0.5, spanGaps: true, show: show,
                    points: NO_POINTS });
      groupOf.push(g.group, g.group, g.group);
      counts.push(onto(xAll, g.x, g.count), null, null);
      bands.push({ series: [base + 2, base + 1], fill: color(g.group, 0.18) });
    });
    runIds.forEach(function (id) {
      var r = curve.runs[id], ys = ema(log ? positive(r.y) : r.y, w), hl = !!state.selected[id];
      data.push(onto(xAll, r.x, ys));
      series.push({ label: "run " + id.slice(0, 8), stroke: color(r.group, hl ? 1 : 0.35), width: hl ? 2.5 : 0.8,
                    spanGaps: true, show: !state.hidden[r.group], points: NO_POINTS });
      groupOf.push(r.group); counts.push(null);
    });
    var title = el("div", { "class": "chart-title" }, curve.key + " per " + curve.x + ": mean of each group with its 95 % t band" +
      (log ? " (log scale: geometric mean, band of the mean log value)" : "") + (w ? ", smoothed (EMA " + w + ")" : ""));
    var hover = el("div", { "class": "hover" });
    var holder = el("div", { "class": "chart", "data-key": curve.key });
    box.appendChild(title); box.appendChild(holder); box.appendChild(hover);
    var u = new uPlot({
      width: width, height: 300, series: series, bands: bands, legend: { show: false },
      scales: { x: { time: false }, y: log ? { distr: 3 } : {} },
      axes: [{ label: curve.x, incrs: curve.x === "epoch" ? INTEGER_STEPS : undefined }, { label: curve.key, size: 70, values: tickValues, incrs: log ? undefined : WIDE_STEPS }],
      hooks: { setCursor: [function (u) {
        var i = u.cursor.idx;
        if (i === null || i === undefined) { hover.textContent = ""; return; }
        var parts = [curve.x + " " + fmt(xAll[i])];
        for (var s = 1; s < series.length; s++) {
          if (counts[s] !== null && counts[s] !== undefined && u.series[s].show && data[s][i] !== null) {
            parts.push(series[s].label + ": " + fmt(data[s][i]) + " [" + fmt(data[s + 1][i]) + ", " + fmt(data[s + 2][i]) +
                       "], averages " + counts[s][i] + " run" + (counts[s][i] === 1 ? "" : "s"));
          }
        }
        hover.textContent = parts.join("   ");
      }] }
    }, data, holder);
    charts.push({ key: curve.key, u: u, groupOf: groupOf, kind: "curve" });
  }

  function drawCurves() {
    charts.splice(0).forEach(function (c) { c.u.destroy(); });
    var box = document.getElementById("charts");
    box.textContent = "";
    var width = Math.min(1140, document.body.clientWidth - 40);
    D.curves.forEach(function (c) { curveChart(c, box, width); });
    if (!D.curves.length) box.appendChild(el("p", { "class": "muted" }, "No run of this selection has a history."));
    drawSensitivity(width);
    var notes = [];
    D.curves.forEach(function (c) {
      c.groups.forEach(function (g) {
        var fewer = g.count.some(function (n) { return n < g.runs; });
        if (g.stopped || fewer) {
          notes.push(groupName(g.group) + " (" + c.key + "): " + (g.stopped ? g.stopped + " of " + g.runs + " runs finished " +
                     "early and hold their final level; " : "") + (fewer ? "some points average fewer than its " + g.runs +
                     " runs (a diverged, failed or unfinished run's curve ends; the hover says how many)" :
                     "every point averages all " + g.runs + " runs"));
        }
      });
    });
    var ds = D.downsample, any = D.curves.some(function (c) { return c.downsampled; });
    notes.push("Downsampling: " + (any ? "applied" : "not needed") + " — min/max per bucket (each bucket of consecutive points keeps " +
               "its lowest and highest mean point, the band its widest edges; at most " + ds.group_points + " points per group mean and " +
               ds.run_points + " per run line), values to " + ds.digits + " significant digits.");
    var note = document.getElementById("curve-note");
    note.textContent = "";
    notes.forEach(function (n) { note.appendChild(el("span", null, n)); note.appendChild(el("br")); });
  }

  /* ------------------------------------------------------------------ sensitivity */
  function drawSensitivity(width) {
    var S = D.sensitivity, sec = document.getElementById("sensitivity");
    if (!S) return;
    sec.hidden = false;
    var box = document.getElementById("sensitivity-body");
    box.textContent = "";
    S.views.forEach(function (v) {
      var xAll = align(v.optimizers.map(function (o) { return o.x; }));
      var data = [xAll], series = [{ label: v.param }], bands = [], groupOf = [null];
      v.optimizers.forEach(function (o, oi) {
        var base = data.length;
        data.push(onto(xAll, o.x, o.mean), onto(xAll, o.x, o.low), onto(xAll, o.x, o.high));
        series.push({ label: o.optimizer, stroke: color(oi), width: 2, spanGaps: true, points: { show: true, size: 6 } },
                    { label: o.optimizer + " low", stroke: color(oi, 0.3), width: 0.5, spanGaps: true },
                    { label: o.optimizer + " high", stroke: color(oi, 0.3), width: 0.5, spanGaps: true });
        bands.push({ series: [base + 2, base + 1], fill: color(oi, 0.15) });
        groupOf.push(null, null, null);
        if (o.chosen !== null && o.chosen !== undefined) {
          var ys = xAll.map(function (x) { return x === o.chosen ? data[base][xAll.indexOf(x)] : null; });
          data.push(ys);
          series.push({ label: o.optimizer + " chosen", stroke: color(oi), width: 0, points: { show: true, size: 14, fill: "#fff" },
                        "class": "chosen" });
          groupOf.push(null);
        }
      });
      box.appendChild(el("div", { "class": "chart-title" }, S.metric + " (" + S.better + " is better; mean over seeds, 95 % t band) against " +
        v.param + ", per optimizer" + (v.pooled.length ? "; pooled over " + v.pooled.join(", ") : "")));
      var lg = el("div", { "class": "legend" });
      v.optimizers.forEach(function (o, oi) {
        var s = el("span"); s.appendChild(el("span", { "class": "swatch", style: "background:" + color(oi) }));
        s.appendChild(document.createTextNode(o.optimizer + " (n per value: " + o.n.join(", ") + ")" +
          (o.chosen !== null && o.chosen !== undefined ? "; chosen " + v.param + " = " + fmt(o.chosen) + " (open circle)" : "")));
        lg.appendChild(s);
      });
      box.appendChild(lg);
      var holder = el("div", { "class": "chart sensitivity", "data-param": v.param });
      box.appendChild(holder);
      var u = new uPlot({ width: width, height: 280, series: series, bands: bands, legend: { show: false },
        scales: { x: { time: false, distr: v.log_x ? 3 : 1 } }, axes: [{ label: v.param, values: tickValues }, { label: S.metric, size: 70, values: tickValues, incrs: WIDE_STEPS }] },
        data, holder);
      charts.push({ key: "sensitivity:" + v.param, u: u, groupOf: groupOf, kind: "sensitivity" });
    });
  }

  /* ------------------------------------------------------------------ parallel coordinates */
  var pcLines = {};
  function drawParallel() {
    var P = D.parallel;
    if (!P) return;
    document.getElementById("parallel").hidden = false;
    var svg = document.getElementById("parallel-svg");  /* parsed from the page: the SVG namespace, no URL in JS */
    var NS = svg.namespaceURI;
    var W = Math.min(1140, document.body.clientWidth - 40), H = 300, top = 30, bottom = 40;
    svg.setAttribute("width", W); svg.setAttribute("height", H);
    var n = P.dims.length, step = (W - 200) / (n - 1);
    var scales = P.dims.map(function (d) {
      var vs = d.values.filter(function (v) { return v !== null; });
      var lo = Math.min.apply(null, vs), hi = Math.max.apply(null, vs);
      var log = !d.categories && lo > 0 && hi / lo > 20;
      var f = function (v) { return log ? Math.log(v) : v; };
      return function (v) {
        if (v === null || !vs.length) return null;
        var a = f(lo), b = f(hi);
        return H - bottom - (b === a ? 0.5 : (f(v) - a) / (b - a)) * (H - top - bottom);
      };
    });
    P.runs.forEach(function (id, ri) {
      var pts = [];
      P.dims.forEach(function (d, di) { var y = scales[di](d.values[ri]); if (y !== null) pts.push((60 + di * step) + "," + y); });
      var line = document.createElementNS(NS, "polyline");
      line.setAttribute("points", pts.join(" "));
      line.setAttribute("class", "pc-line");
      line.setAttribute("stroke", color(P.groups[ri] || 0));
      line.setAttribute("data-run", id);
      var t = document.createElementNS(NS, "title"); t.textContent = "run " + id.slice(0, 8) + " · " + groupName(P.groups[ri]);
      line.appendChild(t);
      svg.appendChild(line);
      pcLines[id] = line;
    });
    P.dims.forEach(function (d, di) {
      var x = 60 + di * step;
      var ax = document.createElementNS(NS, "line");
      ax.setAttribute("x1", x); ax.setAttribute("x2", x); ax.setAttribute("y1", top); ax.setAttribute("y2", H - bottom);
      ax.setAttribute("stroke", "#555");
      svg.appendChild(ax);
      var label = document.createElementNS(NS, "text");
      label.setAttribute("x", x); label.setAttribute("y", 16); label.setAttribute("text-anchor", "middle");
      label.textContent = d.name + (d.kind === "metric" ? " (metric)" : "");
      svg.appendChild(label);
      var vs = d.values.filter(function (v) { return v !== null; });
      var ticks = d.categories ? d.categories.map(function (c, i) { return [i, c]; }) :
        (vs.length ? [[Math.min.apply(null, vs)], [Math.max.apply(null, vs)]] : []);
      ticks.forEach(function (tk) {
        var tx = document.createElementNS(NS, "text");
        tx.setAttribute("x", x + 4); tx.setAttribute("y", scales[di](tk[0]) + 4);
        tx.textContent = tk.length > 1 ? tk[1] : fmt(tk[0]);
        svg.appendChild(tx);
      });
    });
  }

  /* ------------------------------------------------------------------ runs table */
  var T = D.table;
  function columns() {
    var cols = [{ key: "sel", label: "" }, { key: "id", label: "run" }, { key: "group", label: "group" },
                { key: "seed", label: "seed", num: true }, { key: "status", label: "status" }];
    T.params.forEach(function (p) { cols.push({ key: "p:" + p, label: p, param: p }); });
    T.summaries.forEach(function (s) { cols.push({ key: "s:" + s, label: s, summary: s, num: true }); });
    cols.push({ key: "updates", label: "updates", num: true });
    return cols;
  }
  function cell(row, c) {
    if (c.key === "id") return row.id.slice(0, 8);
    if (c.key === "group") return row.group === null ? "" : groupName(row.group);
    if (c.param) return row.params[c.param];
    if (c.summary) { var s = row.summaries[c.summary]; return s ? s[state.stat] : null; }
    return row[c.key];
  }
  function matches(row, cols, terms) {
    if (!terms.length) return true;
    var text = cols.map(function (c) { var v = c.key === "id" ? row.id : cell(row, c); return v === null || v === undefined ? "" : String(v); })
      .join(" ").toLowerCase();
    return terms.every(function (t) { return text.indexOf(t) >= 0; });
  }
  function drawTable() {
    var cols = columns(), table = document.getElementById("runs-table");
    var thead = table.querySelector("thead"), tbody = table.querySelector("tbody");
    thead.textContent = ""; tbody.textContent = "";
    var tr = el("tr");
    cols.forEach(function (c) {
      var th = el("th", { "class": c.num ? "num" : null, "data-key": c.key },
                  c.label + (c.summary ? " (" + state.stat + ")" : "") + (state.sortKey === c.key ? (state.sortDir > 0 ? " ▲" : " ▼") : ""));
      if (c.key !== "sel") th.addEventListener("click", function () {
        state.sortDir = state.sortKey === c.key ? -state.sortDir : 1; state.sortKey = c.key; drawTable();
      });
      tr.appendChild(th);
    });
    thead.appendChild(tr);
    var terms = document.getElementById("filter").value.toLowerCase().split(/\s+/).filter(Boolean);
    var rows = T.rows.filter(function (r) { return matches(r, cols, terms); });
    if (state.sortKey) {
      var c = cols.filter(function (x) { return x.key === state.sortKey; })[0];
      rows.sort(function (a, b) {
        var x = cell(a, c), y = cell(b, c);
        if (x === y) return 0;
        if (x === null || x === undefined) return 1;
        if (y === null || y === undefined) return -1;
        return (x < y ? -1 : 1) * state.sortDir;
      });
    }
    rows.forEach(function (r) {
      var row = el("tr", { "data-run": r.id, "class": state.selected[r.id] ? "selected" : null });
      cols.forEach(function (c) {
        var td = el("td", { "class": c.num ? "num" : null });
        if (c.key === "sel") {
          var box = el("input", { type: "checkbox", "aria-label": "select run " + r.id.slice(0, 8) });
          box.checked = !!state.selected[r.id];
          box.addEventListener("change", function () { select(r.id, box.checked); });
          td.appendChild(box);
        } else {
          td.textContent = fmt(cell(r, c), 5);
          if (c.key === "group" && r.group !== null) td.insertBefore(el("span", { "class": "swatch", style: "background:" + color(r.group) }), td.firstChild);
          if (c.key === "id") td.title = r.id;
        }
        row.appendChild(td);
      });
      tbody.appendChild(row);
    });
    document.getElementById("row-count").textContent = rows.length + " of " + T.rows.length + " runs";
  }
  function select(id, on) {
    if (on) state.selected[id] = true; else delete state.selected[id];
    drawTable(); drawCurves(); highlight();
  }
  function highlight() {
    var any = Object.keys(state.selected).length > 0;
    Object.keys(pcLines).forEach(function (id) {
      pcLines[id].setAttribute("class", "pc-line" + (state.selected[id] ? " hl" : any ? " dim" : ""));
    });
  }
  function csv() {
    var cols = columns().slice(1);
    var q = function (v) { v = v === null || v === undefined ? "" : String(v); return /[",\n]/.test(v) ? '"' + v.replace(/"/g, '""') + '"' : v; };
    var lines = [cols.map(function (c) { return q(c.label + (c.summary ? " " + state.stat : "")); }).join(",")];
    T.rows.forEach(function (r) { lines.push(cols.map(function (c) { return q(c.key === "id" ? r.id : cell(r, c)); }).join(",")); });
    var a = el("a", { download: "runs.csv" });
    a.href = URL.createObjectURL(new Blob([lines.join("\n") + "\n"], { type: "text/csv" }));
    document.body.appendChild(a); a.click(); a.remove();
  }

  /* ------------------------------------------------------------------ provenance */
  function provenance() {
    var P = D.provenance, box = document.getElementById("provenance-body");
    var ul = el("ul");
    Object.keys(P.versions).forEach(function (k) { ul.appendChild(el("li", null, k + ": " + P.versions[k].join(", "))); });
    ul.appendChild(el("li", null, "this report: expsvc " + P.report.expsvc + ", Python " + P.report.python + ", numpy " + P.report.numpy));
    box.appendChild(el("h3", null, "Versions that produced the runs"));
    box.appendChild(ul);
    box.appendChild(el("h3", null, "Components (plugin, package, version)"));
    var t = el("table", { id: "components" }), tr = el("tr");
    ["kind", "name", "spec", "plugin", "package", "version"].forEach(function (h) { tr.appendChild(el("th", null, h)); });
    t.appendChild(tr);
    P.components.forEach(function (c) {
      var row = el("tr");
      ["kind", "name", "spec", "plugin", "package", "version"].forEach(function (k) { row.appendChild(el("td", null, c[k] === null ? "–" : c[k])); });
      t.appendChild(row);
    });
    box.appendChild(el("div", { "class": "scroll" })).appendChild(t);
    box.appendChild(el("h3", null, "Reproduce (a grid over every stored setting's values and the seeds run)"));
    box.appendChild(el("pre", { id: "command" }, P.command));
  }

  /* ------------------------------------------------------------------ wiring */
  document.getElementById("log-y").addEventListener("change", function (e) { state.logY = e.target.checked; drawCurves(); });
  document.getElementById("show-seeds").addEventListener("change", function (e) { state.seeds = e.target.checked; drawCurves(); });
  document.getElementById("smooth").addEventListener("input", function (e) {
    state.smooth = Number(e.target.value); document.getElementById("smooth-value").textContent = e.target.value; drawCurves();
  });
  document.getElementById("filter").addEventListener("input", drawTable);
  document.getElementById("summary-stat").addEventListener("change", function (e) { state.stat = e.target.value; drawTable(); });
  document.getElementById("clear-selection").addEventListener("click", function () { state.selected = {}; drawTable(); drawCurves(); highlight(); });
  document.getElementById("csv").addEventListener("click", csv);
  /* a live page (expsvc ui, runs still running) reloads itself; what the reader chose survives the reload */
  var KEEP = "expsvc-report:" + D.experiment + ":" + (D.where || "");
  function restore() {
    var saved = null;
    try { saved = JSON.parse(sessionStorage.getItem(KEEP) || "null"); } catch (err) { saved = null; }
    if (!saved) return;
    ["hidden", "selected", "logY", "smooth", "seeds", "sortKey", "sortDir", "stat"].forEach(function (k) {
      if (k in saved) state[k] = saved[k];
    });
    document.getElementById("log-y").checked = !!state.logY;
    document.getElementById("show-seeds").checked = !!state.seeds;
    document.getElementById("smooth").value = String(state.smooth);
    document.getElementById("smooth-value").textContent = String(state.smooth);
    document.getElementById("summary-stat").value = state.stat;
    document.getElementById("filter").value = saved.filter || "";
  }
  if (D.refresh) restore();
  answer(); legend(); drawCurves(); drawParallel(); drawTable(); highlight(); provenance();
  if (D.refresh) setTimeout(function () {
    try { sessionStorage.setItem(KEEP, JSON.stringify(Object.assign({ filter: document.getElementById("filter").value }, state))); }
    catch (err) { /* storage unavailable: reload without keeping the choices */ }
    location.reload();
  }, D.refresh * 1000);
})();
