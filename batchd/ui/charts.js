// batchd dashboard: the charts, plain SVG and HTML (no third-party code). Loaded before
// app.js, which draws with them; they read nothing from the daemon themselves.
"use strict";

window.batchdCharts = (() => {
  const SVG_NS = "http://www.w3.org/2000/svg";
  const W = 600;
  const H = 120;
  const TOP = 4;
  const BOTTOM = H - 1;

  function svg(tag, attrs) {
    const el = document.createElementNS(SVG_NS, tag);
    for (const [key, value] of Object.entries(attrs)) el.setAttribute(key, String(value));
    return el;
  }

  // An empty chart, drawSeries' canvas: W x H units stretched to the card's width.
  function chart(id) {
    return svg("svg", { class: "chart", id, viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "none", role: "img" });
  }

  // Series of counts per bucket of `step` seconds, drawn as rates per second on one scale:
  // each { values, cls } a line ("line": the accent, with an area; "line bad": red).
  // Returns the peak rate. The chart's data-* attributes say what it shows.
  function drawSeries(chart, step, series) {
    const count = Math.max(0, ...series.map((line) => line.values.length));
    let peak = 0;
    for (const line of series) for (const value of line.values) peak = Math.max(peak, value / step);
    const scale = peak || 1;
    // Steps: bucket i spans x(i) to x(i + 1), so a job of one bucket still shows.
    const x = (i) => (i / Math.max(1, count)) * W;
    const y = (rate) => BOTTOM - (rate / scale) * (BOTTOM - TOP);
    const children = [svg("line", { class: "axis", x1: 0, y1: BOTTOM, x2: W, y2: BOTTOM, "vector-effect": "non-scaling-stroke" })];
    for (const line of series) {
      // A line of zeros only is left out, but for the main one (with its area).
      if (!line.values.length || (!line.area && !line.values.some(Boolean))) continue;
      const coords = line.values.flatMap((value, i) => {
        const level = y(value / step).toFixed(1);
        return [`${x(i).toFixed(1)},${level}`, `${x(i + 1).toFixed(1)},${level}`];
      });
      if (line.area) {
        const first = x(0).toFixed(1);
        const last = x(line.values.length).toFixed(1);
        children.push(svg("polygon", { class: "area", points: `${first},${BOTTOM} ${coords.join(" ")} ${last},${BOTTOM}` }));
      }
      children.push(svg("polyline", { class: line.cls, points: coords.join(" "), "vector-effect": "non-scaling-stroke" }));
    }
    chart.replaceChildren(...children);
    chart.dataset.points = String(count);
    for (const line of series) chart.dataset[line.name] = String(line.values.reduce((a, b) => a + b, 0));
    return peak;
  }

  // A job's sparse buckets ([start, succeeded, failed], oldest first) as dense series from
  // the bucket holding `from` to the one holding `to` (Unix seconds).
  function denseBuckets(buckets, step, from, to) {
    const first = Math.floor(from / step) * step;
    const count = Math.max(1, Math.floor(to / step) - Math.floor(from / step) + 1);
    const succeeded = new Array(count).fill(0);
    const failed = new Array(count).fill(0);
    for (const [start, ok, bad] of buckets) {
      const index = Math.min(count - 1, Math.max(0, Math.round((start - first) / step)));
      succeeded[index] += ok;
      failed[index] += bad;
    }
    return { first, succeeded, failed };
  }

  function fmtBound(seconds) {
    if (seconds < 0.001) return `${Math.round(seconds * 1e6)}µs`;
    if (seconds < 1) return `${Math.round(seconds * 1000)}ms`;
    if (seconds < 60) return `${seconds}s`;
    if (seconds < 3600) return `${seconds / 60}m`;
    return `${seconds / 3600}h`;
  }

  // The batch-duration histogram as bars, one per bucket (`counts` has one more than
  // `bounds`: the batches slower than the last bound).
  function histogram(holder, bounds, counts) {
    const peak = Math.max(1, ...counts);
    const bars = counts.map((count, i) => {
      const label = i < bounds.length ? `≤${fmtBound(bounds[i])}` : `>${fmtBound(bounds[bounds.length - 1])}`;
      const fill = document.createElement("div");
      fill.className = "hist-fill";
      fill.style.height = `${(count / peak) * 100}%`;
      const well = document.createElement("div");
      well.className = "hist-well";
      well.append(fill);
      const name = document.createElement("div");
      name.className = "hist-label";
      name.textContent = label;
      const bar = document.createElement("div");
      bar.className = "hist-bar";
      bar.dataset.count = String(count);
      bar.title = `${count} batch${count === 1 ? "" : "es"} ${label}`;
      bar.append(well, name);
      return bar;
    });
    holder.replaceChildren(...bars);
    holder.dataset.total = String(counts.reduce((a, b) => a + b, 0));
  }

  return { chart, drawSeries, denseBuckets, histogram };
})();
