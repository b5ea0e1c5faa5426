// batchd dashboard: vanilla JS, no build step, no third-party code.
// Every piece of data comes from the daemon's JSON API, with the bearer token that the
// user typed in (kept in sessionStorage). Pages poll once a second.
"use strict";

(() => {
  const TOKEN_KEY = "batchd.token";
  const POLL_MS = 1000;
  const STATUS_POLL_MS = 5000; // GET /status walks the state dir: polled less often
  const PAGE_SIZE = 20;
  const ACTIVE_SHOWN = 100;
  const FAILED_SHOWN = 50;
  const LOG_TAIL = 500; // lines read when a log opens
  const LOG_KEEP = 2000; // lines kept on screen
  const RATE_WINDOW_S = 10;
  const FAILED_PAGE = 25;
  const ERROR_FILTER_MAX = 200; // as GET /failed takes it
  // What the job lists can be filtered by (GET /jobs?status=).
  const JOB_STATUSES = ["pending", "running", "paused", "succeeded", "completed_with_failures", "worker_error", "worker_oom", "timed_out", "stopped"];
  const charts = window.batchdCharts;
  // A job is active until it ends: its end_time is set with its terminal status, so the
  // page needs no list of statuses of its own.
  const isActive = (job) => job.end_time === null;

  const $ = (id) => document.getElementById(id);

  // ---------------------------------------------------------------- DOM helpers

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") el.className = value;
      else if (key === "text") el.textContent = value;
      else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
      else el.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      el.append(child instanceof Node ? child : String(child));
    }
    return el;
  }

  const jobHref = (api, id) => `#/job/${encodeURIComponent(api)}/${encodeURIComponent(id)}`;
  const apiHref = (api) => `#/api/${encodeURIComponent(api)}`;
  const badge = (status) => h("span", { class: `badge ${status}`, text: status.replaceAll("_", " ") });

  function table(headers, rows, empty) {
    const head = h("tr", null, headers.map(([text, cls]) => h("th", { class: cls, text })));
    const body = rows.length
      ? rows
      : [h("tr", null, h("td", { class: "empty", colspan: headers.length, text: empty }))];
    // A table wider than the page scrolls in its own box; the page itself keeps its width.
    return h("div", { class: "table-scroll" }, h("table", null, h("thead", null, head), h("tbody", null, body)));
  }

  // ------------------------------------------------------------------ formatting

  function fmtDuration(seconds) {
    if (seconds === null || seconds === undefined || !isFinite(seconds)) return "-";
    if (seconds < 1) return `${Math.round(seconds * 1000)}ms`;
    if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 2 : 1)}s`;
    const s = Math.round(seconds);
    const hh = Math.floor(s / 3600);
    const mm = Math.floor((s % 3600) / 60);
    const ss = s % 60;
    const two = (n) => String(n).padStart(2, "0");
    return hh ? `${hh}:${two(mm)}:${two(ss)}` : `${mm}:${two(ss)}`;
  }

  function fmtAgo(iso) {
    if (!iso) return "-";
    const seconds = (Date.now() - Date.parse(iso)) / 1000;
    if (seconds < 0) return "just now";
    if (seconds < 60) return `${Math.floor(seconds)}s ago`;
    if (seconds < 3600) return `${Math.floor(seconds / 60)}m ago`;
    if (seconds < 86400) return `${Math.floor(seconds / 3600)}h ago`;
    return `${Math.floor(seconds / 86400)}d ago`;
  }

  function fmtTime(iso) {
    if (!iso) return "-";
    return new Date(iso).toLocaleString();
  }

  function fmtBytes(n) {
    if (n === null || n === undefined) return "-";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) {
      n /= 1024;
      i += 1;
    }
    return `${i ? n.toFixed(1) : n} ${units[i]}`;
  }

  const fmtRate = (rate) => (rate === null || !isFinite(rate) ? "-" : `${rate < 10 ? rate.toFixed(2) : rate.toFixed(1)} batches/s`);
  const fmtJson = (value) => JSON.stringify(value, null, 2);

  // ------------------------------------------------------------------- the API

  class HttpError extends Error {
    constructor(status, message, field) {
      super(field ? `${message} (field: ${field})` : message);
      this.status = status;
      this.field = field;
    }
  }

  const token = () => sessionStorage.getItem(TOKEN_KEY) || "";

  async function call(method, path, { query, body, signal, raw } = {}) {
    const url = new URL(path, location.origin);
    for (const [key, value] of Object.entries(query || {})) {
      if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, String(value));
    }
    const headers = {};
    if (token()) headers.Authorization = `Bearer ${token()}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(url, { method, headers, body, signal, cache: "no-store" });
    if (!response.ok) {
      let message = `${response.status} ${response.statusText}`;
      let field = null;
      try {
        const error = (await response.json()).error;
        message = error.message;
        field = error.field || null;
      } catch (ignored) {
        // not a JSON error body
      }
      if (response.status === 401) auth.required(message);
      throw new HttpError(response.status, message, field);
    }
    return raw ? response : response.json();
  }

  // NDJSON, one parsed record at a time, as the bytes arrive.
  async function* ndjson(response) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let pending = "";
    for (;;) {
      const { value, done } = await reader.read();
      pending += decoder.decode(value || new Uint8Array(), { stream: !done });
      const lines = pending.split("\n");
      pending = lines.pop();
      for (const line of lines) {
        if (!line.trim()) continue;
        try {
          yield JSON.parse(line);
        } catch (ignored) {
          yield { message: line };
        }
      }
      if (done) break;
    }
    if (pending.trim()) {
      try {
        yield JSON.parse(pending);
      } catch (ignored) {
        yield { message: pending };
      }
    }
  }

  // ------------------------------------------------------------ rates and ETAs

  // Per job, the finished-batch count seen at each poll: rates come from the last
  // RATE_WINDOW_S seconds; before two samples, from the job's average since submission.
  const samples = new Map();

  const doneOf = (job) => job.batch_metrics.succeeded + job.batch_metrics.failed;

  function track(job) {
    const now = performance.now() / 1000;
    const list = samples.get(job.job_id) || [];
    const last = list[list.length - 1];
    if (!last || now - last.t >= 0.2) list.push({ t: now, done: doneOf(job) });
    while (list.length > 2 && now - list[0].t > RATE_WINDOW_S + 5) list.shift();
    samples.set(job.job_id, list);
    list.seen = now;
    if (samples.size > 500) {
      for (const [id, other] of samples) if (now - other.seen > 300) samples.delete(id);
    }
  }

  function rateOf(job) {
    const list = samples.get(job.job_id);
    if (isActive(job) && list && list.length >= 2) {
      const last = list[list.length - 1];
      let first = list[0];
      for (const sample of list) {
        if (last.t - sample.t <= RATE_WINDOW_S) {
          first = sample;
          break;
        }
      }
      if (last.t - first.t >= 0.5) return (last.done - first.done) / (last.t - first.t);
    }
    const start = Date.parse(job.start_time);
    const end = job.end_time ? Date.parse(job.end_time) : Date.now();
    const seconds = (end - start) / 1000;
    return seconds > 0 ? doneOf(job) / seconds : null;
  }

  function etaOf(job, rate) {
    if (!isActive(job)) return job.status === "succeeded" ? "done" : "-";
    const left = job.total_batch_count - doneOf(job);
    if (left <= 0) return "finishing";
    if (!rate || rate <= 0) return "-";
    return fmtDuration(left / rate);
  }

  function durationOf(job) {
    const end = job.end_time ? Date.parse(job.end_time) : Date.now();
    return (end - Date.parse(job.start_time)) / 1000;
  }

  // ------------------------------------------------------------- components

  function progressBar(big) {
    const ok = h("div", { class: "fill" });
    const bad = h("div", { class: "fill failed" });
    const label = h("span", { class: "label", text: "0%" });
    const el = h(
      "div",
      {
        class: big ? "progress big" : "progress",
        role: "progressbar",
        "aria-valuemin": 0,
        "aria-valuemax": 100,
        "aria-valuenow": 0,
      },
      ok,
      bad,
      label,
    );
    return {
      el,
      set(job) {
        const total = job.total_batch_count || 0;
        const m = job.batch_metrics;
        ok.style.width = `${total ? (m.succeeded / total) * 100 : 0}%`;
        bad.style.width = `${total ? (m.failed / total) * 100 : 0}%`;
        // Rounded down: 100% means every batch is finished.
        const percent = total ? Math.floor(((m.succeeded + m.failed) / total) * 100) : 0;
        el.setAttribute("aria-valuenow", percent);
        el.dataset.status = job.status;
        label.textContent = `${percent}%`;
      },
    };
  }

  function progressRow(job) {
    track(job);
    const bar = progressBar(false);
    bar.set(job);
    const rate = rateOf(job);
    const m = job.batch_metrics;
    return h(
      "tr",
      { "data-job-id": job.job_id },
      h("td", null, h("a", { class: "mono", href: jobHref(job.api_name, job.job_id), text: job.job_id })),
      h("td", null, h("a", { href: apiHref(job.api_name), text: job.api_name })),
      h("td", null, badge(job.status)),
      h("td", { class: "progress-cell" }, bar.el),
      h("td", { class: "num", text: `${doneOf(job)}/${job.total_batch_count}` }),
      h("td", { class: "num", text: String(m.failed) }),
      h("td", { class: "num", text: isActive(job) ? fmtRate(rate) : "-" }),
      h("td", { class: "num", text: etaOf(job, rate) }),
      h("td", { class: "nowrap", text: fmtAgo(job.start_time), title: fmtTime(job.start_time) }),
      h("td", { class: "num", text: fmtDuration(durationOf(job)) }),
    );
  }

  const JOB_HEADERS = [
    ["job"],
    ["API"],
    ["status"],
    ["progress"],
    ["batches", "num"],
    ["failed", "num"],
    ["rate", "num"],
    ["ETA", "num"],
    ["started"],
    ["duration", "num"],
  ];

  // Newer/Older buttons over a listing paged by cursor. `cursor()` is the one to ask with
  // (undefined: the first page); after each answer, `shown(next)` with the cursor of the
  // next older page (null: none); `restart()` goes back to the first page.
  function cursorPager(page, refresh) {
    const newer = h("button", { type: "button", class: "newer", text: "← Newer" });
    const older = h("button", { type: "button", class: "older", text: "Older →" });
    const where = h("span", { class: "muted pager-where" });
    const cursors = [];
    let next = null;
    newer.addEventListener("click", () => {
      cursors.pop();
      refresh().catch(page.report);
    });
    older.addEventListener("click", () => {
      cursors.push(next);
      refresh().catch(page.report);
    });
    return {
      el: h("div", { class: "pager" }, newer, older, where),
      cursor: () => cursors[cursors.length - 1],
      restart: () => {
        cursors.length = 0;
      },
      shown(nextCursor) {
        next = nextCursor;
        newer.disabled = cursors.length === 0;
        older.disabled = !next;
        where.textContent = `page ${cursors.length + 1}`;
      },
    };
  }

  // A page of jobs with Newer/Older buttons. The daemon pages by cursor: `before` is the
  // id of the last job shown, so paging stays cheap however long the history.
  function jobPager(page, path, query, emptyText, id) {
    const holder = h("div", { id });
    const pager = cursorPager(page, refresh);
    const el = h("div", null, holder, pager.el);
    const unfiltered = query;
    async function refresh() {
      const before = pager.cursor();
      const asked = query;
      const answer = await call("GET", path, {
        query: { ...query, limit: PAGE_SIZE + 1, before },
        signal: page.signal,
      });
      if (asked !== query) return; // the filter changed meanwhile: that answer is stale
      const jobs = answer.jobs;
      const shown = jobs.slice(0, PAGE_SIZE);
      const filtered = Object.entries(query).some(([key, value]) => value && value !== unfiltered[key]);
      holder.replaceChildren(table(JOB_HEADERS, shown.map(progressRow), filtered ? "no job matches the filter" : emptyText));
      pager.shown(jobs.length > PAGE_SIZE ? jobs[PAGE_SIZE - 1].job_id : null);
    }
    // A new filter starts again from the first page.
    function filter(changes) {
      query = { ...query, ...changes };
      pager.restart();
      return refresh();
    }
    return { el, refresh, filter };
  }

  // A <select> of "" (labelled `any`) and `values`; `onchange(value)` on a change.
  function picker(id, any, values, onchange) {
    const select = h("select", { id }, h("option", { value: "", text: any }), values.map((v) => h("option", { value: v, text: v.replaceAll("_", " ") })));
    select.addEventListener("change", () => onchange(select.value));
    return select;
  }

  // The filters above a job list: by status, and (`withApi`) by API.
  function jobFilters(page, pager, withApi) {
    const status = picker("status-filter", "any status", JOB_STATUSES, (value) => pager.filter({ status: value }).catch(page.report));
    const api = withApi ? picker("api-filter", "every API", [], (value) => pager.filter({ api: value }).catch(page.report)) : null;
    return {
      el: h("div", { class: "actions filters" }, h("label", { class: "muted" }, "Status ", status), api ? h("label", { class: "muted" }, "API ", api) : null),
      apis(names) {
        if (api) setChoices(api, "every API", names);
      },
    };
  }

  // Keep a picker's choices in step with what is deployed, the choice made kept.
  function setChoices(select, any, names) {
    const shown = [...select.options].slice(1).map((o) => o.value);
    if (JSON.stringify(shown) === JSON.stringify(names)) return;
    const chosen = select.value;
    select.replaceChildren(h("option", { value: "", text: any }), ...names.map((n) => h("option", { value: n, text: n })));
    select.value = names.includes(chosen) ? chosen : "";
  }

  // Throughput over the last hour or day (GET /history: this daemon's counts), for every
  // API together or one; with `histogram`, that API's batch-duration histogram too.
  function throughputCard(page, apiName, histogram) {
    const chart = charts.chart("history-chart");
    const peak = h("span", { class: "muted", id: "history-peak" });
    const from = h("span");
    const windows = h("div", { class: "segmented", role: "group" });
    let windowName = "1h";
    for (const [name, label] of [["1h", "last hour"], ["1d", "last day"]]) {
      const button = h("button", { type: "button", "data-window": name, text: label, "aria-pressed": String(name === windowName) });
      button.addEventListener("click", () => {
        windowName = name;
        for (const other of windows.children) other.setAttribute("aria-pressed", String(other === button));
        load().catch(page.report);
      });
      windows.append(button);
    }
    const bars = h("div", { class: "hist", id: "duration-histogram" });
    const histNote = h("p", { class: "muted note", id: "duration-note" });
    const el = h(
      "div",
      null,
      h("div", { class: "card" }, h("div", { class: "actions" }, windows, peak), chart, h("div", { class: "chart-axis muted" }, from, h("span", { text: "now" })), h("p", { class: "muted note", text: "Batches per second: succeeded (blue) and failed attempts (red), counted by this daemon since it started." })),
      histogram ? h("h2", { text: "Batch durations" }) : null,
      histogram ? h("div", { class: "card" }, bars, histNote) : null,
    );
    async function load() {
      const asked = windowName;
      const answer = await call("GET", "/history", { query: { window: asked, api: apiName }, signal: page.signal });
      if (asked !== windowName) return; // the other window was picked meanwhile
      const lines = Object.values(answer.apis);
      const sum = (key) => (lines.length ? lines[0][key].map((_, i) => lines.reduce((n, line) => n + line[key][i], 0)) : []);
      const top = charts.drawSeries(chart, answer.step_seconds, [
        { name: "succeeded", cls: "line", area: true, values: sum("succeeded") },
        { name: "failed", cls: "line bad", values: sum("failed") },
      ]);
      chart.dataset.window = answer.window;
      peak.textContent = `peak ${fmtRate(top)}`;
      from.textContent = windowName === "1h" ? "1 hour ago" : "1 day ago";
      if (histogram) {
        const mine = answer.batch_durations[apiName];
        const counts = mine ? mine.counts : new Array(answer.batch_duration_bounds.length + 1).fill(0);
        charts.histogram(bars, answer.batch_duration_bounds, counts);
        const total = counts.reduce((a, b) => a + b, 0);
        histNote.textContent = total ? `${total} succeeded batches since the daemon started, mean ${fmtDuration(mine.sum / total)} (batchd_batch_duration_seconds)` : "no batch has succeeded since the daemon started";
      }
    }
    return { el, load };
  }

  // ---------------------------------------------------------------- pages

  class Page {
    constructor() {
      this.controller = new AbortController();
      this.timers = [];
      this.alive = true;
      this.report = (error) => this.fail(error);
    }
    get signal() {
      return this.controller.signal;
    }
    // Run `fn` now and then every `ms` after each run ends (never two at once).
    poll(fn, ms = POLL_MS) {
      const tick = async () => {
        if (!this.alive) return;
        try {
          if (!document.hidden) await fn();
          setBanner(null);
          $("live").hidden = false;
        } catch (error) {
          if (!this.alive || error.name === "AbortError") return;
          if (error.status === 401) return; // the login form is showing; it re-renders
          this.fail(error);
        }
        if (this.alive) this.timers.push(setTimeout(tick, ms));
      };
      tick();
    }
    fail(error) {
      if (error && error.status === 401) return;
      setBanner(error instanceof HttpError ? error.message : `cannot reach the daemon: ${error.message || error}`);
    }
    destroy() {
      this.alive = false;
      this.timers.forEach(clearTimeout);
      this.controller.abort();
    }
  }

  function setBanner(text) {
    const banner = $("banner");
    banner.hidden = !text;
    banner.textContent = text || "";
    $("live").classList.toggle("stale", Boolean(text));
    $("live").textContent = text ? "offline" : "live";
  }

  // Overview: the daemon, its APIs, running and pending jobs, workers and GPUs.
  function overviewPage(page, main) {
    const cards = h("div", { class: "cards", id: "daemon-cards" });
    const active = h("div", { id: "active-jobs" });
    const activeNote = h("p", { class: "muted note" });
    const workers = h("div", { id: "workers" });
    const gpus = h("div", { id: "gpus" });
    const apis = h("div", { id: "apis" });
    const recent = jobPager(page, "/jobs", {}, "no jobs yet", "recent-jobs");
    const filters = jobFilters(page, recent, true);
    const throughput = throughputCard(page, undefined, false);
    main.append(
      h("h1", { text: "Overview" }),
      cards,
      h("h2", { text: "Throughput" }),
      throughput.el,
      h("h2", { text: "Running and pending jobs" }),
      active,
      activeNote,
      h("div", { class: "columns" }, h("div", null, h("h2", { text: "Worker pool" }), workers), h("div", null, h("h2", { text: "GPUs" }), gpus)),
      h("h2", { text: "APIs" }),
      apis,
      h("h2", { text: "Recent jobs" }),
      filters.el,
      recent.el,
    );
    let status = null;
    let activeJobs = [];

    function stat(name, value, id) {
      return h("div", { class: "card stat", id }, h("div", { class: "value", text: value }), h("div", { class: "name", text: name }));
    }

    function renderDaemon() {
      if (!status) return;
      $("daemon-version").textContent = `v${status.version}`;
      const busy = activeJobs.reduce((n, job) => n + job.worker_details.length, 0);
      cards.replaceChildren(
        stat("active jobs", String(activeJobs.length), "stat-active"),
        stat("workers busy / max", `${busy} / ${status.max_workers}`, "stat-workers"),
        stat("GPUs", status.gpus.length ? status.gpus.join(", ") : "none", "stat-gpus"),
        stat("disk use", fmtBytes(status.disk_usage.total), "stat-disk"),
        stat("state dir", status.state_dir, "stat-state"),
      );
      const holders = new Map();
      for (const job of activeJobs) {
        for (const worker of job.worker_details) {
          for (const gpu of worker.gpus || []) holders.set(gpu, { job, worker });
        }
      }
      gpus.replaceChildren(
        table(
          [["GPU"], ["held by"], ["slot", "num"]],
          status.gpus.map((gpu) => {
            const holder = holders.get(gpu);
            return h(
              "tr",
              null,
              h("td", { text: String(gpu) }),
              h("td", null, holder ? h("a", { class: "mono", href: jobHref(holder.job.api_name, holder.job.job_id), text: holder.job.job_id }) : h("span", { class: "muted", text: "free" })),
              h("td", { class: "num", text: holder ? String(holder.worker.slot) : "" }),
            );
          }),
          "no GPUs (gpus config, or nvidia-smi found none)",
        ),
      );
    }

    page.poll(async () => {
      const answer = await call("GET", "/jobs", { query: { active: "true", limit: ACTIVE_SHOWN + 1 }, signal: page.signal });
      activeJobs = answer.jobs.slice(0, ACTIVE_SHOWN);
      active.replaceChildren(table(JOB_HEADERS, activeJobs.map(progressRow), "no running or pending jobs"));
      activeNote.textContent = answer.jobs.length > ACTIVE_SHOWN ? `showing the newest ${ACTIVE_SHOWN} active jobs` : "";
      const rows = [];
      for (const job of activeJobs) {
        for (const worker of job.worker_details) {
          rows.push(
            h(
              "tr",
              null,
              h("td", { class: "num", text: String(worker.slot) }),
              h("td", null, h("a", { class: "mono", href: jobHref(job.api_name, job.job_id), text: job.job_id })),
              h("td", { class: "num", text: worker.pid === null ? "-" : String(worker.pid) }),
              h("td", { text: worker.state }),
              h("td", { text: (worker.gpus || []).join(", ") || "-" }),
            ),
          );
        }
      }
      rows.sort((a, b) => Number(a.firstChild.textContent) - Number(b.firstChild.textContent));
      workers.replaceChildren(table([["slot", "num"], ["job"], ["pid", "num"], ["state"], ["GPUs"]], rows, "no live workers"));
      renderDaemon();
    });
    page.poll(() => recent.refresh(), STATUS_POLL_MS);
    page.poll(() => throughput.load(), STATUS_POLL_MS);
    page.poll(async () => {
      status = await call("GET", "/status", { signal: page.signal });
      renderDaemon();
      const answer = await call("GET", "/apis", { signal: page.signal });
      filters.apis(answer.apis.map((api) => api.name));
      apis.replaceChildren(
        table(
          [["API"], ["version", "num"], ["deployed"], ["GPUs per worker", "num"], ["memory"], ["endpoint"]],
          answer.apis.map((api) =>
            h(
              "tr",
              { "data-api": api.name },
              h("td", null, h("a", { href: apiHref(api.name), text: api.name })),
              h("td", { class: "num", text: String(api.version) }),
              h("td", { text: fmtAgo(api.created_at), title: fmtTime(api.created_at) }),
              h("td", { class: "num", text: String(api.compute.gpu || 0) }),
              h("td", { text: api.compute.mem || "-" }),
              h("td", { class: "mono", text: api.endpoint }),
            ),
          ),
          "no APIs deployed (batchd deploy DIR)",
        ),
      );
    }, STATUS_POLL_MS);
  }

  // One API: its latest version's settings, every version, a job form and its jobs.
  function apiPage(page, main, name) {
    const summary = h("div", { class: "card", id: "api-summary" });
    const config = h("pre", { class: "json", id: "api-config" });
    const versions = h("div", { id: "versions" });
    const body = h("textarea", { class: "job-body", id: "job-body", spellcheck: "false" });
    body.value = JSON.stringify({ workers: 1, item_list: { items: [1, 2, 3, 4], batch_size: 1 } });
    const submitError = h("p", { class: "error", id: "submit-error", role: "alert" });
    const submit = h("button", { type: "submit", class: "primary", id: "submit-job", text: "Submit job" });
    const form = h("form", { id: "submit-form" }, body, h("div", { class: "actions" }, submit, submitError));
    const jobs = jobPager(page, "/jobs", { api: name }, "no jobs yet", "api-jobs");
    const filters = jobFilters(page, jobs, false);
    const throughput = throughputCard(page, name, true);
    const pauseNote = h("span", { class: "muted", id: "api-pause-note" });
    const pause = pauseToggle("api-pause-button", "API", `/apis/${encodeURIComponent(name)}`, undefined, pauseNote);
    main.append(
      h("h1", null, "API ", h("code", { text: name })),
      h("div", { class: "actions" }, pause.el, pauseNote),
      h("div", { class: "columns" }, summary, h("div", null, h("h2", { text: "Handler config" }), config)),
      h("h2", { text: "Versions" }),
      versions,
      h("h2", { text: "Submit a job" }),
      h("p", { class: "muted note", text: "The job body, as POST /batch/<api> takes it (JSON)." }),
      form,
      h("h2", null, "Jobs ", h("a", { class: "muted note", id: "api-failed-link", href: `#/failed/${encodeURIComponent(name)}`, text: "failed batches →" })),
      filters.el,
      jobs.el,
      h("h2", { text: "Throughput" }),
      throughput.el,
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      submit.disabled = true;
      submitError.textContent = "";
      try {
        const spec = await call("POST", `/batch/${encodeURIComponent(name)}`, { body: body.value });
        location.hash = jobHref(spec.api_name, spec.job_id);
      } catch (error) {
        submitError.textContent = error.message;
      } finally {
        submit.disabled = false;
      }
    });
    let shown = "";
    page.poll(async () => {
      await jobs.refresh();
    });
    page.poll(() => throughput.load(), STATUS_POLL_MS);
    page.poll(async () => {
      const api = await call("GET", `/apis/${encodeURIComponent(name)}`, { signal: page.signal });
      pause.set(api.paused === true);
      const key = JSON.stringify(api);
      if (key === shown) return;
      shown = key;
      const handler = api.handler;
      summary.replaceChildren(
        h(
          "dl",
          { class: "facts" },
          ...[
            ["latest version", String(api.version)],
            ["deployed", `${fmtTime(api.created_at)} (${fmtAgo(api.created_at)})`],
            ["endpoint", api.endpoint],
            ["handler", handler.path || `built-in ${handler.type} handler`],
            ["python", handler.python || "the daemon's"],
            ["environment", (handler.env || []).join(", ") || "-"],
            ["GPUs per worker", String(api.compute.gpu || 0)],
            ["memory per worker", api.compute.mem || "no bound"],
            ["batch timeout", handler.batch_timeout ? `${handler.batch_timeout}s` : "-"],
            ["retention", api.retention && api.retention.days ? `${api.retention.days} days` : "the daemon's"],
            ["files", api.files === null || api.files === undefined ? "-" : `${api.files} (${fmtBytes(api.size)})`],
          ].flatMap(([k, v]) => [h("dt", { text: k }), h("dd", { text: v })]),
        ),
      );
      config.textContent = fmtJson(handler.config || {});
      versions.replaceChildren(
        table(
          [["version", "num"], ["deployed"]],
          [...api.versions].reverse().map((v) => h("tr", null, h("td", { class: "num", text: String(v.version) }), h("td", { text: `${fmtTime(v.created_at)} (${fmtAgo(v.created_at)})` }))),
          "no versions",
        ),
      );
    }, STATUS_POLL_MS);
  }

  // POST /batch/<api>/retry from `button`: what it submitted (a link with id `linkId`), or
  // why not, goes into `result`. The job page and the failed view both retry through it.
  async function retryDeadLetters(apiName, jobId, button, result, linkId) {
    button.disabled = true;
    result.replaceChildren();
    try {
      const spec = await call("POST", `/batch/${encodeURIComponent(apiName)}/retry`, { query: { jobID: jobId } });
      const count = spec.total_batch_count;
      result.append(`Job ${jobId}'s dead-lettered batches were submitted as job `, h("a", { class: "mono", id: linkId, href: jobHref(spec.api_name, spec.job_id), text: spec.job_id }), ` (${count} batch${count === 1 ? "" : "es"}, version ${spec.api_version}).`);
    } catch (error) {
      result.append(h("span", { class: "error", text: error.message }));
    } finally {
      button.disabled = false;
    }
  }

  // Pause/Resume of a job's or an API's leasing: POST <path>/pause or <path>/resume.
  function pauseToggle(id, noun, path, query, note) {
    const button = h("button", { type: "button", id, hidden: true });
    let paused = false;
    const set = (value) => {
      paused = value;
      button.textContent = `${paused ? "Resume" : "Pause"} ${noun}`;
      button.hidden = false;
    };
    button.addEventListener("click", async () => {
      button.disabled = true;
      try {
        const answer = await call("POST", `${path}/${paused ? "resume" : "pause"}`, { query });
        // A job answers its status; an API {message, paused, jobs}.
        set(answer.status ? answer.status === "paused" : answer.paused);
        note.textContent = answer.message || `${noun} ${answer.status}`;
      } catch (error) {
        note.textContent = error.message;
      } finally {
        button.disabled = false;
      }
    });
    return { el: button, set, hide: () => { button.hidden = true; } };
  }

  // One job: status, metrics, live progress, throughput, failed batches, log.
  function jobPage(page, main, apiName, jobId) {
    const base = `/batch/${encodeURIComponent(apiName)}`;
    const title = h("h1", null, "Job ", h("code", { text: jobId }));
    const statusBadge = h("span", { id: "job-status" });
    title.append(statusBadge);
    const subtitle = h("p", { class: "muted note", id: "job-subtitle" });
    const bar = progressBar(true);
    bar.el.id = "job-progress";
    const line = h("div", { class: "progress-line", id: "job-progress-line" });
    const stop = h("button", { type: "button", class: "danger", id: "stop-button", text: "Stop job", hidden: true });
    const results = h("a", {
      class: "button",
      id: "results-link",
      href: `${base}/results?jobID=${encodeURIComponent(jobId)}`,
      download: `${jobId}-results.jsonl`,
      text: "Download results",
    });
    const actionNote = h("span", { class: "muted", id: "action-note" });
    const pause = pauseToggle("pause-button", "job", base, { jobID: jobId }, actionNote);
    const facts = h("div", { class: "card", id: "job-facts" });
    const workerBox = h("div", { class: "card", id: "job-workers" });
    const errorBox = h("pre", { class: "error-text", id: "job-error", hidden: true });
    const chart = charts.chart("throughput-chart");
    const chartNote = h("p", { class: "muted note", id: "throughput-note" });
    const chartPeak = h("span", { class: "muted" });
    const chartFrom = h("span");
    const chartTo = h("span");
    const chartAxis = h("div", { class: "chart-axis muted" }, chartFrom, chartTo);
    const failedSection = h("section", { id: "failed-section", hidden: true });
    const failedTitle = h("h2");
    const retry = h("button", { type: "button", class: "primary", id: "retry-button" });
    const retryResult = h("span", { id: "retry-result" });
    const failedTable = h("div", { id: "failed-batches" });
    failedSection.append(failedTitle, h("div", { class: "actions" }, retry, retryResult), failedTable);
    const follow = h("input", { type: "checkbox", id: "follow", checked: true });
    const logBox = h("pre", { class: "log", id: "job-log" });
    const logNote = h("span", { class: "muted", id: "log-note" });

    main.append(
      title,
      subtitle,
      h("div", { class: "actions" }, results, pause.el, stop, actionNote),
      h("div", { class: "card" }, bar.el, line),
      errorBox,
      h("div", { class: "columns" }, h("div", null, h("h2", { text: "Batches and settings" }), facts), h("div", null, h("h2", { text: "Workers" }), workerBox)),
      h("h2", { text: "Throughput" }),
      h("div", { class: "card" }, chartPeak, chart, chartAxis, chartNote),
      failedSection,
      h("h2", null, "Log ", h("label", { class: "muted note" }, follow, " follow"), " ", logNote),
      logBox,
    );

    let job = null;
    let failedSeen = -1;

    stop.addEventListener("click", () => {
      const dialog = $("confirm-dialog");
      $("confirm-text").textContent = `Stop job ${jobId}? Its workers are killed and its unrun batches never run: a stop is final.`;
      dialog.returnValue = "";
      dialog.onclose = async () => {
        dialog.onclose = null;
        if (dialog.returnValue !== "ok" || !page.alive) return;
        stop.disabled = true;
        try {
          const answer = await call("DELETE", base, { query: { jobID: jobId } });
          actionNote.textContent = answer.message;
        } catch (error) {
          actionNote.textContent = error.message;
        } finally {
          stop.disabled = false;
        }
      };
      dialog.showModal();
    });

    retry.addEventListener("click", () => retryDeadLetters(apiName, jobId, retry, retryResult, "retry-job-link"));

    // Results need the token too: with one, the link fetches and saves the file.
    results.addEventListener("click", async (event) => {
      if (!token()) return;
      event.preventDefault();
      try {
        const response = await call("GET", `${base}/results`, { query: { jobID: jobId }, raw: true });
        const url = URL.createObjectURL(await response.blob());
        const link = h("a", { href: url, download: `${jobId}-results.jsonl` });
        document.body.append(link);
        link.click();
        link.remove();
        setTimeout(() => URL.revokeObjectURL(url), 60000);
      } catch (error) {
        actionNote.textContent = error.message;
      }
    });

    function render(answer) {
      job = answer.job_status;
      track(job);
      statusBadge.replaceChildren(badge(job.status));
      const parts = [`API `, h("a", { href: apiHref(job.api_name), text: job.api_name }), ` version ${job.api_version} · submitted ${fmtTime(job.start_time)} (${fmtAgo(job.start_time)})`];
      if (job.retry_of) parts.push(" · retry of ", h("a", { class: "mono", href: jobHref(job.api_name, job.retry_of), text: job.retry_of }));
      subtitle.replaceChildren(...parts);
      bar.set(job);
      const m = job.batch_metrics;
      const rate = rateOf(job);
      line.replaceChildren(
        h("span", { id: "job-done", text: `${doneOf(job)} / ${job.total_batch_count} batches finished` }),
        h("span", { text: `${m.succeeded} succeeded` }),
        h("span", { class: m.failed ? "error" : "", text: `${m.failed} failed` }),
        h("span", { id: "job-rate", text: isActive(job) ? fmtRate(rate) : `average ${fmtRate(rate)}` }),
        h("span", { id: "job-eta", text: `ETA ${etaOf(job, rate)}` }),
      );
      stop.hidden = !isActive(job);
      if (isActive(job)) pause.set(job.status === "paused");
      else pause.hide();
      errorBox.hidden = !job.error;
      errorBox.textContent = job.error || "";
      const wc = job.worker_counts;
      facts.replaceChildren(
        h(
          "dl",
          { class: "facts" },
          ...[
            ["status", job.status],
            ["batches", String(job.total_batch_count)],
            ["succeeded", String(m.succeeded)],
            ["failed (dead-lettered)", String(m.failed)],
            ["in progress", String(m.in_progress)],
            ["queued", String(job.batches_in_queue)],
            ["failed attempts", String(m.failed_attempts)],
            ["time per batch", fmtDuration(m.average_time_per_batch)],
            ["started", fmtTime(job.start_time)],
            ["ended", fmtTime(job.end_time)],
            ["duration", fmtDuration(durationOf(job))],
            ["timeout", job.timeout ? `${job.timeout}s` : "-"],
            ["batch timeout", job.batch_timeout ? `${job.batch_timeout}s` : "-"],
            ["max receive count", String(job.max_receive_count)],
            ["priority", String(job.priority)],
            ["source", job.source],
            ["config", JSON.stringify(job.config)],
          ].flatMap(([k, v]) => [h("dt", { text: k }), h("dd", { text: v })]),
        ),
      );
      workerBox.replaceChildren(
        h("p", { class: "note", text: `${job.workers} requested · ${Object.entries(wc).filter(([, n]) => n).map(([k, n]) => `${n} ${k}`).join(", ") || "none"}` }),
        table(
          [["slot", "num"], ["pid", "num"], ["state"], ["GPUs"]],
          job.worker_details.map((w) => h("tr", null, h("td", { class: "num", text: String(w.slot) }), h("td", { class: "num", text: w.pid === null ? "-" : String(w.pid) }), h("td", { text: w.state }), h("td", { text: (w.gpus || []).join(", ") || "-" }))),
          "no live workers",
        ),
      );
      drawChart();
      if (m.failed !== failedSeen) {
        failedSeen = m.failed;
        loadFailed().catch((error) => {
          if (error.name !== "AbortError") failedTable.replaceChildren(h("p", { class: "error", text: error.message }));
        });
      }
    }

    // The whole job's history, from the store (GET /batch/<api>/history): polled while the
    // job runs, read once more when it has ended.
    // A million-batch job's history is a scan of a million rows: the longer it takes, the
    // less often it is asked for (at most 5% of the time).
    let historyAt = 0;
    let historyEvery = STATUS_POLL_MS;
    let historyOf = null;
    function drawChart() {
      const ended = !isActive(job);
      const due = ended ? historyOf !== job.status : performance.now() - historyAt >= historyEvery;
      if (!due) return;
      historyAt = performance.now();
      historyOf = ended ? job.status : null;
      loadHistory().catch((error) => {
        if (error.name !== "AbortError") chartNote.textContent = error.message;
      });
    }

    async function loadHistory() {
      const asked = performance.now();
      const answer = await call("GET", `${base}/history`, { query: { jobID: jobId }, signal: page.signal });
      historyEvery = Math.max(STATUS_POLL_MS, (performance.now() - asked) * 20);
      const from = Date.parse(answer.start_time) / 1000;
      const to = answer.end_time ? Date.parse(answer.end_time) / 1000 : Date.now() / 1000;
      const step = answer.step_seconds;
      const series = charts.denseBuckets(answer.buckets, step, from, to);
      const peak = charts.drawSeries(chart, step, [
        { name: "succeeded", cls: "line", area: true, values: series.succeeded },
        { name: "failed", cls: "line bad", values: series.failed },
      ]);
      chart.dataset.step = String(step);
      chartPeak.textContent = `peak ${fmtRate(peak)}`;
      chartFrom.textContent = fmtTime(answer.start_time);
      chartTo.textContent = answer.end_time ? fmtTime(answer.end_time) : "now";
      chartNote.textContent = `Batches per second over the whole job, a bucket per ${step < 60 ? `${step} s` : step < 3600 ? `${step / 60} min` : `${step / 3600} h`}: succeeded (blue) and failed attempts (red).`;
    }

    async function loadFailed() {
      const count = job.batch_metrics.failed;
      failedSection.hidden = count === 0;
      if (!count) return;
      failedTitle.textContent = `Failed batches (${count})`;
      retry.textContent = `Retry ${count} dead-lettered batch${count === 1 ? "" : "es"}`;
      const response = await call("GET", `${base}/failed`, { query: { jobID: jobId, limit: FAILED_SHOWN }, raw: true, signal: page.signal });
      const rows = [];
      for await (const dead of ndjson(response)) {
        const payload = JSON.stringify(dead.payload);
        rows.push(
          h(
            "tr",
            { "data-batch-id": dead.batch_id },
            h("td", { class: "mono nowrap", text: dead.batch_id }),
            h("td", { class: "num", text: String(dead.attempts) }),
            h(
              "td",
              null,
              h(
                "details",
                null,
                h("summary", { class: "error", text: dead.error || "(no error recorded)" }),
                h("pre", { text: dead.traceback || "" }),
                h("pre", { text: `payload: ${payload.length > 2000 ? `${payload.slice(0, 2000)}…` : payload}` }),
              ),
            ),
          ),
        );
      }
      failedTable.replaceChildren(
        table([["batch"], ["attempts", "num"], ["error"]], rows, "none"),
        count > rows.length ? h("p", { class: "muted note", text: `showing the first ${rows.length} of ${count}` }) : "",
      );
    }

    // The log: the last LOG_TAIL lines, then, with follow on, new lines as they come.
    let logController = null;
    let pendingLines = [];
    let flushQueued = false;

    function formatRecord(record) {
      const level = record.levelname || "INFO";
      const batch = record.labels && record.labels.batchID ? `[${record.labels.batchID}] ` : "";
      let text = `${record.asctime || ""} ${level.padEnd(8)} ${batch}${record.message ?? ""}`;
      if (record.exc_info) text += `\n${record.exc_info}`;
      return { level, text };
    }

    function flushLog() {
      flushQueued = false;
      if (!page.alive) return;
      const atBottom = logBox.scrollHeight - logBox.scrollTop - logBox.clientHeight < 30;
      const fragment = document.createDocumentFragment();
      for (const { level, text } of pendingLines) fragment.append(h("div", { class: level, text }));
      pendingLines = [];
      logBox.append(fragment);
      while (logBox.childElementCount > LOG_KEEP) logBox.firstElementChild.remove();
      if (follow.checked || atBottom) logBox.scrollTop = logBox.scrollHeight;
    }

    async function openLog() {
      if (logController) logController.abort();
      const controller = (logController = new AbortController());
      page.signal.addEventListener("abort", () => controller.abort());
      logBox.replaceChildren();
      pendingLines = [];
      const following = follow.checked && job && isActive(job);
      logNote.textContent = following ? "· following…" : "";
      try {
        const response = await call("GET", `${base}/logs`, {
          query: { jobID: jobId, tail: LOG_TAIL, follow: following ? "true" : undefined },
          raw: true,
          signal: controller.signal,
        });
        for await (const record of ndjson(response)) {
          pendingLines.push(formatRecord(record));
          if (!flushQueued) {
            flushQueued = true;
            requestAnimationFrame(flushLog);
          }
        }
        flushLog();
        if (!logBox.childElementCount) logBox.append(h("div", { class: "DEBUG", text: "(the log is empty)" }));
        if (logController === controller) logNote.textContent = following ? "· the job has ended" : "";
      } catch (error) {
        if (error.name === "AbortError") return;
        logNote.textContent = error.message;
      }
    }

    follow.addEventListener("change", () => {
      if (follow.checked) openLog();
      else if (logController) {
        logController.abort();
        logNote.textContent = "· paused";
      }
    });

    let first = true;
    page.poll(async () => {
      const answer = await call("GET", base, { query: { jobID: jobId }, signal: page.signal });
      render(answer);
      if (first) {
        first = false;
        openLog();
      }
    });
  }

  // Dead-lettered batches of every job (GET /failed), newest job first, filtered by API and
  // by error text, a page at a time; a job's dead letters can be retried from here.
  function failedPage(page, main, apiName) {
    const apiPick = picker("failed-api", "every API", apiName ? [apiName] : [], () => restart());
    apiPick.value = apiName || "";
    const text = h("input", { id: "failed-q", type: "search", maxlength: ERROR_FILTER_MAX, placeholder: "error contains… (case-sensitive)", size: 32 });
    const form = h("form", { class: "actions filters", id: "failed-filters" }, h("label", { class: "muted" }, "API ", apiPick), text, h("button", { type: "submit", text: "Filter" }));
    const list = h("div", { id: "failed-list" });
    const pager = cursorPager(page, refresh);
    const retryResult = h("p", { class: "note", id: "failed-retry-result" });
    main.append(
      h("h1", { text: "Failed batches" }),
      h("p", { class: "muted note", text: "Dead-lettered batches of every job (out of attempts), newest job first. Retry submits a new job of a job's dead-lettered batches, on its API's latest version." }),
      form,
      retryResult,
      list,
      pager.el,
    );
    let shown = "";
    let typing = null;
    const restart = () => {
      pager.restart();
      refresh().catch(page.report);
    };
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      restart();
    });
    text.addEventListener("input", () => {
      clearTimeout(typing);
      typing = setTimeout(restart, 300);
    });

    function row(entry) {
      const button = h("button", { type: "button", class: "retry-job", text: "Retry job", title: `retry every dead-lettered batch of job ${entry.job_id}` });
      button.addEventListener("click", () => retryDeadLetters(entry.api_name, entry.job_id, button, retryResult, "failed-retry-link"));
      return h(
        "tr",
        { "data-batch-id": entry.batch_id },
        h("td", { class: "mono nowrap", text: entry.batch_id }),
        h("td", null, h("a", { class: "mono", href: jobHref(entry.api_name, entry.job_id), text: entry.job_id })),
        h("td", null, h("a", { href: apiHref(entry.api_name), text: entry.api_name })),
        h("td", { class: "num", text: String(entry.attempts) }),
        h("td", null, h("details", null, h("summary", { class: "error", text: entry.error || "(no error recorded)" }), h("pre", { text: entry.traceback || "" }))),
        h("td", { class: "nowrap", text: fmtAgo(entry.failed_at), title: fmtTime(entry.failed_at) }),
        h("td", null, button),
      );
    }

    async function refresh() {
      const query = { api: apiPick.value, q: text.value, limit: FAILED_PAGE, cursor: pager.cursor() };
      const answer = await call("GET", "/failed", { query, signal: page.signal });
      if (query.api !== apiPick.value || query.q !== text.value) return; // a newer filter is on its way
      pager.shown(answer.next_cursor);
      // Redrawn only when it changed: an opened traceback stays open between polls.
      const key = JSON.stringify(answer.failed);
      if (key === shown) return;
      shown = key;
      const empty = query.api || query.q ? "no dead-lettered batch matches" : "no dead-lettered batches";
      list.replaceChildren(table([["batch"], ["job"], ["API"], ["attempts", "num"], ["error"], ["failed"], [""]], answer.failed.map(row), empty));
    }

    page.poll(() => refresh(), STATUS_POLL_MS);
    page.poll(async () => {
      const answer = await call("GET", "/apis", { signal: page.signal });
      setChoices(apiPick, "every API", answer.apis.map((api) => api.name));
    }, STATUS_POLL_MS);
  }

  // --------------------------------------------------------------- login

  const auth = {
    required(message) {
      const hadToken = Boolean(token());
      sessionStorage.removeItem(TOKEN_KEY);
      if (!$("login").hidden) {
        // Another request of the same page was refused too.
        if (hadToken) $("login-error").textContent = message;
        return;
      }
      if (router.page) router.page.destroy();
      $("main").replaceChildren();
      $("live").hidden = true; // nothing is live before a login
      $("login").hidden = false;
      $("logout").hidden = true;
      $("login-error").textContent = hadToken ? message : "";
      $("token").focus();
    },
  };

  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token").value.trim());
    $("token").value = "";
    $("login").hidden = true;
    router.render();
  });

  $("logout").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    router.render();
  });

  // -------------------------------------------------------------- routing

  const router = {
    page: null,
    routes: [
      [/^#?\/?$/, overviewPage],
      [/^#\/api\/([^/]+)$/, apiPage],
      [/^#\/job\/([^/]+)\/([^/]+)$/, jobPage],
      [/^#\/failed(?:\/([^/]+))?$/, failedPage],
    ],
    render() {
      if (this.page) this.page.destroy();
      setBanner(null);
      $("login").hidden = true;
      $("logout").hidden = !token();
      const main = $("main");
      main.replaceChildren();
      const hash = location.hash || "#/";
      for (const [pattern, view] of this.routes) {
        const match = hash.match(pattern);
        if (!match) continue;
        this.page = new Page();
        view(this.page, main, ...match.slice(1).map((part) => (part === undefined ? undefined : decodeURIComponent(part))));
        window.scrollTo(0, 0);
        return;
      }
      this.page = null;
      main.append(h("h1", { text: "Not found" }), h("p", null, "No such page: ", h("code", { text: hash }), ". ", h("a", { href: "#/", text: "Back to the overview" })));
    },
  };

  // ------------------------------------------------------- workers (#/workers)
  // Live workers with their memory and CPU (GET /workers reads /proc at most once a
  // second, nvidia-smi every 10 s), and the last worker exits with their cause.

  const EXIT_CAUSE_CLASS = { exited: "succeeded", stopped: "stopped", oom: "worker_oom" };

  function workersPage(page, main) {
    const live = h("div", { id: "live-workers" });
    const events = h("div", { id: "worker-events" });
    main.append(
      h("h1", { text: "Workers" }),
      h("h2", { text: "Live workers" }),
      live,
      h("h2", { text: "Recent exits" }),
      h("p", { class: "muted note", text: "The last 500 worker exits, newest first; kept in memory, so a restart of the daemon forgets them." }),
      events,
    );
    const jobLink = (row) => h("a", { class: "mono", href: jobHref(row.api_name, row.job_id), text: row.job_id });
    page.poll(async () => {
      const answer = await call("GET", "/workers", { signal: page.signal });
      live.replaceChildren(
        table(
          [["API"], ["job"], ["slot", "num"], ["pid", "num"], ["state"], ["GPUs"], ["batch"], ["started"], ["RSS", "num"], ["CPU", "num"], ["GPU memory", "num"]],
          answer.workers.map((w) =>
            h(
              "tr",
              { "data-pid": w.pid },
              h("td", null, h("a", { href: apiHref(w.api_name), text: w.api_name })),
              h("td", null, jobLink(w)),
              h("td", { class: "num", text: String(w.slot) }),
              h("td", { class: "num", text: String(w.pid) }),
              h("td", { text: w.state }),
              h("td", { text: w.gpus.join(", ") || "-" }),
              h("td", { class: "mono", text: w.batch_id || "-" }),
              h("td", { class: "nowrap", text: fmtAgo(w.started_at), title: fmtTime(w.started_at) }),
              h("td", { class: "num rss", text: fmtBytes(w.rss_bytes) }),
              h("td", { class: "num cpu", text: w.cpu_percent === null ? "-" : `${w.cpu_percent.toFixed(0)}%` }),
              h("td", { class: "num gpu-memory", text: fmtBytes(w.gpu_memory_bytes) }),
            ),
          ),
          "no live workers",
        ),
      );
      events.replaceChildren(
        table(
          [["when"], ["API"], ["job"], ["slot", "num"], ["pid", "num"], ["cause"], ["exit", "num"], ["restart in", "num"], ["reason"]],
          answer.events.map((e) =>
            h(
              "tr",
              { "data-cause": e.cause },
              h("td", { class: "nowrap", text: fmtAgo(e.time), title: fmtTime(e.time) }),
              h("td", null, h("a", { href: apiHref(e.api_name), text: e.api_name })),
              h("td", null, jobLink(e)),
              h("td", { class: "num", text: String(e.slot) }),
              h("td", { class: "num", text: String(e.pid) }),
              h("td", null, h("span", { class: `badge ${EXIT_CAUSE_CLASS[e.cause] || "worker_error"}`, text: e.cause.replaceAll("_", " ") })),
              h("td", { class: "num", text: e.signal || String(e.exit_code) }),
              h("td", { class: "num", text: e.restart_in === null ? "-" : fmtDuration(e.restart_in) }),
              h("td", { text: e.reason }),
            ),
          ),
          "no worker exits since the daemon started",
        ),
      );
    });
  }

  router.routes.push([/^#\/workers$/, workersPage]);

  window.addEventListener("hashchange", () => router.render());
  router.render();
})();
