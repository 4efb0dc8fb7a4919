// The agent page: ask (a few words, or a whole new ticket), answer (hits with badges, highlights and feedback
// buttons), one ticket's view, deep links (/?q=, /?like=ID, /?collection=NAME). Data from the JSON API only;
// every ticket text goes into the page as text (textContent), never as HTML.
"use strict";
(() => {
  const body = document.body;
  const KEYS_ON = body.dataset.keys === "on";
  const RETRY_DEFAULT = Number(body.dataset.retryAfter || 1);
  const KEY_STORE = "ticketsearch.key";
  const K = 10;
  const MAX_RETRIES = 120; // a 503 is retried this often (after its Retry-After each time) before it is an error
  const $ = (id) => document.getElementById(id);
  const state = { collection: null, collections: [], schema: null, queryTicket: null, decisions: new Map(), seq: 0 };
  window.tsTimings = []; // per answer: api_ms (the API's own time, seen from here) and shown_ms (until painted)

  class ApiError extends Error {
    constructor(status, message, retryAfter, field) {
      super(message);
      this.status = status;
      this.retryAfter = retryAfter;
      this.field = field;
    }
  }

  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const nextPaint = () => new Promise((r) => requestAnimationFrame(() => setTimeout(r, 0)));
  const key = () => sessionStorage.getItem(KEY_STORE);

  async function api(method, path, payload) {
    const headers = { Accept: "application/json" };
    const k = key();
    if (k) headers.Authorization = "Bearer " + k;
    if (payload !== undefined) headers["Content-Type"] = "application/json";
    const r = await fetch(path, { method, headers, body: payload === undefined ? undefined : JSON.stringify(payload),
                                  cache: "no-store" });
    const text = await r.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = null; }
    if (!r.ok) {
      const d = data && Array.isArray(data.detail) ? data.detail[0] : null;
      throw new ApiError(r.status, d ? d.reason : `${r.status} ${r.statusText}`,
                         Number(r.headers.get("Retry-After") || 0), d ? d.field : null);
    }
    return data;
  }

  // A 503 (loading, or shedding load) is retried after its Retry-After, and the page says so meanwhile.
  async function call(method, path, payload) {
    for (let attempt = 0; ; attempt++) {
      try {
        return await api(method, path, payload);
      } catch (e) {
        if (e instanceof ApiError && e.status === 503 && attempt < MAX_RETRIES) {
          const s = e.retryAfter || RETRY_DEFAULT;
          setStatus(`The service is busy (${e.message}); retrying in ${s} s…`, "busy");
          await sleep(s * 1000);
          continue;
        }
        if (e instanceof ApiError && e.status === 401) {
          sessionStorage.removeItem(KEY_STORE);
          await askKey("That key was not accepted: " + e.message);
          continue;
        }
        throw e;
      }
    }
  }

  function setStatus(text, kind) {
    const s = $("status");
    s.textContent = text;
    s.className = "status" + (kind ? " " + kind : "");
    s.dataset.kind = kind || "";
  }

  function errorLine(e) {
    if (e instanceof ApiError) return `Error ${e.status}: ${e.field ? e.field + ": " : ""}${e.message}`;
    return "Error: " + (e && e.message ? e.message : String(e));
  }

  // ---- keys --------------------------------------------------------------------------------------------
  function askKey(message) {
    const box = $("keybox");
    const err = $("key-error");
    err.hidden = !message;
    err.textContent = message || "";
    $("key").value = "";
    return new Promise((resolve) => {
      $("keyform").onsubmit = async (ev) => {
        ev.preventDefault();
        const k = $("key").value.trim();
        if (!k) return;
        sessionStorage.setItem(KEY_STORE, k);
        try {
          await api("GET", "/v1/collections");
        } catch (e) {
          // only a 401 says the key is wrong (it is checked first); a busy service is met later, with retries
          if (e instanceof ApiError && e.status === 401) {
            sessionStorage.removeItem(KEY_STORE);
            err.hidden = false;
            err.textContent = "That key was not accepted: " + e.message;
            return;
          }
        }
        box.close();
        $("change-key").hidden = false;
        resolve();
      };
      if (!box.open) box.showModal();
    });
  }

  // ---- collections and schema --------------------------------------------------------------------------
  const col = (path) => `/v1/collections/${encodeURIComponent(state.collection)}${path}`;
  // one path segment: dots encoded too, so that no id ('..') can change the route the browser asks for
  const enc = (s) => encodeURIComponent(s).replace(/\./g, "%2E");

  async function loadCollections(wanted) {
    state.collections = (await call("GET", "/v1/collections")).map((c) => c.name);
    if (!state.collections.length) throw new Error("this key sees no collection");
    state.collection = state.collections.includes(wanted) ? wanted
      : state.collections.includes("default") ? "default" : state.collections[0];
    const select = $("collection");
    select.replaceChildren(...state.collections.map((n) => {
      const o = document.createElement("option");
      o.value = n;
      o.textContent = n;
      return o;
    }));
    select.value = state.collection;
    $("picker").hidden = state.collections.length < 2;
    if (wanted && wanted !== state.collection) setStatus(`No collection ${wanted} here: showing ${state.collection}.`);
  }

  async function loadSchema() {
    state.schema = await call("GET", col("/schema"));
    const box = $("t-fields");
    box.replaceChildren();
    for (const f of state.schema.fields) {
      const label = document.createElement("label");
      label.append(document.createTextNode(f.name + (f.kind === "multi" ? " (comma-separated)" : "")));
      const input = document.createElement("input");
      input.name = f.name;
      input.dataset.kind = f.kind;
      input.type = f.kind === "numeric" ? "number" : f.kind === "date" ? "date" : "text";
      if (f.values.length) {
        const list = document.createElement("datalist");
        list.id = "values-" + f.name;
        for (const v of f.values) {
          const o = document.createElement("option");
          o.value = v;
          list.append(o);
        }
        input.setAttribute("list", list.id);
        label.append(list);
      }
      label.append(input);
      box.append(label);
    }
  }

  function formFields() {
    const out = {};
    for (const input of $("t-fields").querySelectorAll("input")) {
      const v = input.value.trim();
      if (!v) continue;
      const kind = input.dataset.kind;
      out[input.name] = kind === "multi" ? v.split(",").map((s) => s.trim()).filter(Boolean)
        : kind === "numeric" ? Number(v) : v;
    }
    return out;
  }

  // ---- rendering ---------------------------------------------------------------------------------------
  function escapeRe(s) { return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"); }

  // `text` into `el` as text nodes, the `words` (whole words, any case) wrapped in <mark>.
  function highlightInto(el, text, words) {
    el.replaceChildren();
    if (!words || !words.length) { el.textContent = text; return; }
    const re = new RegExp(`(?<![\\p{L}\\p{N}_])(${words.map(escapeRe).join("|")})(?![\\p{L}\\p{N}_])`, "giu");
    let last = 0;
    for (const m of text.matchAll(re)) {
      if (m.index > last) el.append(document.createTextNode(text.slice(last, m.index)));
      const mark = document.createElement("mark");
      mark.textContent = m[0];
      el.append(mark);
      last = m.index + m[0].length;
    }
    if (last < text.length) el.append(document.createTextNode(text.slice(last)));
  }

  const ticketHref = (id) => `/tickets/${enc(id)}?collection=${enc(state.collection)}`;
  const likeHref = (id) => `/?collection=${enc(state.collection)}&like=${enc(id)}`;
  const pct = (p) => `${Math.round(p * 100)}%`;

  function fieldText(v) { return Array.isArray(v) ? v.join(", ") : String(v); }

  function keyFields(fields) {
    return Object.entries(fields || {}).filter(([, v]) => v !== null && v !== "" && !(Array.isArray(v) && !v.length))
      .slice(0, 3).map(([k, v]) => `${k}: ${fieldText(v)}`);
  }

  function badge(el, p, threshold, nearCopy) {
    if (nearCopy) {
      el.textContent = "near copy";
      el.classList.add("dup");
      el.title = "its words are nearly this query's own: a duplicate whatever the model and the dates say" +
        (p === null || p === undefined ? "" : ` (duplicate probability ${p.toFixed(3)})`);
    } else if (p === null || p === undefined) {
      el.textContent = "similar";
      el.title = "first-stage order: no model gives a probability yet";
    } else if (threshold !== null && threshold !== undefined && p >= threshold) {
      el.textContent = `likely duplicate · ${pct(p)}`;
      el.classList.add("dup");
      el.title = `duplicate probability ${p.toFixed(3)}, at or above this collection's threshold ${threshold.toFixed(3)}`;
    } else {
      el.textContent = "similar";  // a percentage here would read as similarity: it is the duplicate probability
      el.title = `duplicate probability ${p.toFixed(3)}` + (threshold != null ? `, below the threshold ${threshold.toFixed(3)}` : "");
    }
    el.dataset.probability = p === null || p === undefined ? "" : String(p);
  }

  function showDecision(li, d) {
    const line = li.querySelector(".decision");
    line.classList.remove("error");
    for (const b of li.querySelectorAll(".fb")) b.setAttribute("aria-pressed", String(!!d && b.dataset.label === d.label));
    line.textContent = d ? `Recorded: ${d.label === "duplicate" ? "duplicate" : "not a duplicate"}` +
      `${d.by ? " by " + d.by : ""} (${d.at.slice(0, 16).replace("T", " ")})` : "";
  }

  function renderHits(hits, threshold) {
    const list = $("hits");
    const tpl = $("hit-template");
    list.replaceChildren();
    for (const h of hits) {
      const li = tpl.content.firstElementChild.cloneNode(true);
      li.dataset.id = h.id;
      const link = li.querySelector(".hit-link");
      link.href = ticketHref(h.id);
      highlightInto(link, h.title, h.highlight);
      badge(li.querySelector(".badge"), h.probability, threshold, h.near_copy);
      li.querySelector(".hit-id").textContent = h.id;
      const time = li.querySelector(".hit-created");
      time.dateTime = h.created;
      time.textContent = h.created.slice(0, 10);
      const kf = keyFields(h.fields);
      li.querySelector(".hit-fields").textContent = kf.length ? " · " + kf.join(" · ") : "";
      highlightInto(li.querySelector(".snippet"), h.snippet || "", h.highlight);
      li.querySelector(".more").href = likeHref(h.id);
      if (state.queryTicket) {
        for (const b of li.querySelectorAll(".fb")) b.addEventListener("click", () => sendFeedback(li, h.id, b.dataset.label));
        showDecision(li, state.decisions.get(h.id));
      } else {
        for (const b of li.querySelectorAll(".fb")) b.remove();
      }
      list.append(li);
    }
  }

  async function sendFeedback(li, candidate, label) {
    const line = li.querySelector(".decision");
    for (const b of li.querySelectorAll(".fb")) b.disabled = true;
    line.textContent = "Recording…";
    try {
      const d = await call("POST", col("/feedback"), { ticket_id: state.queryTicket, candidate_id: candidate, label });
      state.decisions.set(candidate, d);
      showDecision(li, d);
    } catch (e) {
      line.classList.add("error");
      line.textContent = e instanceof ApiError && e.status === 403
        ? "Recording a decision needs a key with write scope (this key can only read)." : errorLine(e);
    } finally {
      for (const b of li.querySelectorAll(".fb")) b.disabled = false;
    }
  }

  async function loadDecisions(ticketId) {
    state.decisions = new Map();
    for (const d of await call("GET", col(`/tickets/${enc(ticketId)}/feedback`))) {
      const other = d.ticket_id === ticketId ? d.candidate_id : d.ticket_id;
      if (!state.decisions.has(other)) state.decisions.set(other, d); // newest first: the latest decision wins
    }
  }

  // ---- answers -----------------------------------------------------------------------------------------
  // Runs one answer: `fetch` gets the API's answer, `show` renders it; stale answers are dropped.
  async function answer(title, fetcher, show) {
    const seq = ++state.seq;
    const section = $("answer");
    section.hidden = false;
    section.setAttribute("aria-busy", "true");
    section.dataset.state = "loading";
    $("answer-title").textContent = title;
    setStatus("Searching…", "loading");
    const t0 = performance.now();
    let data;
    try {
      data = await fetcher();
    } catch (e) {
      if (seq !== state.seq) return;
      $("hits").replaceChildren();
      $("verdict").hidden = true;
      setStatus(errorLine(e), "error");
      section.dataset.state = "error";
      section.removeAttribute("aria-busy");
      return;
    }
    if (seq !== state.seq) return;
    const t1 = performance.now();
    const n = show(data);
    setStatus(n ? `${n} ticket${n === 1 ? "" : "s"}.` : "No tickets match.", n ? "done" : "empty");
    section.removeAttribute("aria-busy");
    section.dataset.state = "done";
    await nextPaint();
    window.tsTimings.push({ title, api_ms: t1 - t0, shown_ms: performance.now() - t0 });
  }

  function note(text) {
    const el = $("answer-note");
    el.hidden = !text;
    el.textContent = text || "";
  }

  function searchText(q) {
    state.queryTicket = null;
    $("verdict").hidden = true;
    note("Decisions are recorded between two tickets: open a hit's \"Similar to this\" to mark its duplicates.");
    return answer(`Tickets like “${q}”`, () => call("POST", col("/search"), { text: q, k: K, snippets: true }),
                  (res) => { renderHits(res.hits, res.threshold); return res.hits.length; });
  }

  function similarTo(id, title) {
    state.queryTicket = id;
    $("verdict").hidden = true;
    note("");
    return answer(title || `Tickets like ${id}`, async () => {
      const [res] = await Promise.all([call("GET", col(`/tickets/${enc(id)}/similar?k=${K}&snippets=true`)),
                                       loadDecisions(id)]);
      return res;
    }, (res) => { renderHits(res.hits, res.threshold); return res.hits.length; });
  }

  function checkTicket() {
    const title = $("t-title").value.trim();
    if (!title) { setStatus("A new ticket needs a title.", "error"); $("t-title").focus(); return; }
    state.queryTicket = null;
    note("");
    const payload = { title, body: $("t-body").value, fields: formFields(), k: K, snippets: true };
    return answer(`Duplicates of “${title}”`, () => call("POST", col("/duplicates"), payload), (res) => {
      const v = $("verdict");
      v.hidden = false;
      v.classList.toggle("dup", res.is_duplicate === true);
      if (res.is_duplicate === null) v.textContent = `No verdict: ${res.reason}`;
      else if (res.near_copy) v.textContent = `A near copy of ${res.candidates[0].id}: a duplicate.`;
      else if (res.is_duplicate) v.textContent = `Likely a duplicate of ${res.candidates[0].id} (${pct(res.probability)}).`;
      else v.textContent = res.probability === null ? "Not a duplicate: no candidate."
        : `Not a duplicate: the best candidate is at ${pct(res.probability)}, below ${pct(res.threshold)}.`;
      if (res.threshold !== null && !res.near_copy) {  // the collection's own target (PATCH /v1/collections/NAME)
        v.textContent += ` The threshold is this collection's for ${pct(res.target_precision)} precision.`;
      }
      renderHits(res.candidates, res.threshold);
      return res.candidates.length;
    });
  }

  async function showTicket(id) {
    const t = await call("GET", col(`/tickets/${enc(id)}`));
    $("ticket").hidden = false;
    $("ticket-title").textContent = t.title;
    $("ticket-meta").textContent = `${t.id} · created ${t.created.slice(0, 16).replace("T", " ")}` +
      (t.duplicate_of ? ` · duplicate of ${t.duplicate_of}` : "");
    const dl = $("ticket-fields");
    dl.replaceChildren();
    for (const [k, v] of Object.entries(t.fields || {})) {
      if (v === null || (Array.isArray(v) && !v.length)) continue;
      const dt = document.createElement("dt");
      dt.textContent = k;
      const dd = document.createElement("dd");
      dd.textContent = fieldText(v);
      dl.append(dt, dd);
    }
    $("ticket-body").textContent = t.body || "(no body)";
    $("ticket-like").href = likeHref(t.id);
    document.title = `${t.id}: ${t.title} · ticketsearch`;
    return t;
  }

  // ---- routing -----------------------------------------------------------------------------------------
  function pageUrl(params) {
    const u = new URLSearchParams();
    if (state.collections.length > 1 || state.collection !== "default") u.set("collection", state.collection);
    for (const [k, v] of Object.entries(params)) u.set(k, v);
    return "/?" + u.toString();
  }

  async function route() {
    const params = new URLSearchParams(location.search);
    if (body.dataset.view === "ticket") {
      const id = body.dataset.ticketId;
      try {
        const t = await showTicket(id);
        await similarTo(id, "Similar tickets");
        $("ticket-title").dataset.loaded = t.id;
      } catch (e) {
        setStatus(errorLine(e), "error");
      }
      return;
    }
    const q = params.get("q");
    const like = params.get("like");
    if (like) {
      $("q").value = "";
      let title = `Tickets like ${like}`;
      try {
        const t = await call("GET", col(`/tickets/${enc(like)}`));
        title = `Tickets like ${t.id}: ${t.title}`;
      } catch (e) {
        setStatus(errorLine(e), "error");
        $("answer").dataset.state = "error";
        return;
      }
      await similarTo(like, title);
    } else if (q) {
      $("q").value = q;
      await searchText(q);
    } else {
      $("answer").hidden = true;
      setStatus("");
    }
  }

  async function start() {
    if (KEYS_ON && !key()) await askKey("");
    else if (KEYS_ON) $("change-key").hidden = false;
    const params = new URLSearchParams(location.search);
    try {
      await loadCollections(params.get("collection"));
      await loadSchema();
    } catch (e) {
      setStatus(errorLine(e), "error");
      return;
    }
    $("ask").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const q = $("q").value.trim();
      if (!q) { setStatus("Type a few words to search.", "error"); return; }
      if (body.dataset.view === "ticket") { location.href = pageUrl({ q }); return; }
      history.pushState(null, "", pageUrl({ q }));
      searchText(q);
    });
    $("check").addEventListener("click", () => checkTicket());
    $("collection").addEventListener("change", async () => {
      state.collection = $("collection").value;
      try { await loadSchema(); } catch (e) { setStatus(errorLine(e), "error"); return; }
      const q = $("q").value.trim();
      history.pushState(null, "", q ? pageUrl({ q }) : pageUrl({}));
      if (q) searchText(q); else { $("answer").hidden = true; setStatus(""); }
    });
    $("change-key").addEventListener("click", async () => {
      sessionStorage.removeItem(KEY_STORE);
      await askKey("");
      await loadCollections(state.collection);
      await route();
    });
    window.addEventListener("popstate", () => route());
    body.dataset.ready = "true";
    await route();
  }

  start();
})();
