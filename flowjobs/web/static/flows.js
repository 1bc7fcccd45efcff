// flowjobs UI: live updates and small conveniences. Pages are server-rendered; this only
// refreshes the elements marked `data-live` (re-fetching the page and swapping them with htmx)
// when the server-sent event stream says a run changed, and polls every 5 s instead when the
// stream is down. Everything else works without JavaScript.
//
// Each `run` event's data is one line of JSON, {"runId", "seq", "type", "stepKey", "message"}
// (flowjobs/web/ui.py, sse_run_event); the page of a run (body data-run) reacts to that run's
// events only, compared exactly, and ignores data that is not such an object.
(function () {
  "use strict";
  const POLL_MS = 5000;
  const DEBOUNCE_MS = 250;
  const status = () => document.getElementById("live-status");
  let pollTimer = null;
  let pending = null;

  function setState(state, text) {
    const el = status();
    if (el) { el.dataset.state = state; el.textContent = text; }
  }

  // Remember which <details> are open (by data-key) so a refresh does not fold what was read.
  function openKeys(root) {
    return new Set(Array.from(root.querySelectorAll("details[data-key]"))
      .filter((d) => d.open).map((d) => d.dataset.key));
  }

  function refresh() {
    if (pending) { return; }
    pending = setTimeout(() => {
      pending = null;
      document.querySelectorAll("[data-live][id]").forEach((el) => {
        // Keep the reader's place: no swap while they type or have focus inside a form.
        if (el.contains(document.activeElement) && document.activeElement.matches("input, textarea, select")) { return; }
        const keep = openKeys(el);
        const hadFocus = el.contains(document.activeElement) ? document.activeElement.getAttribute("href") : null;
        htmx.ajax("GET", window.location.href, { target: "#" + el.id, select: "#" + el.id, swap: "outerHTML" })
          .then(() => {
            const fresh = document.getElementById(el.id);
            if (!fresh) { return; }
            fresh.querySelectorAll("details[data-key]").forEach((d) => {
              if (keep.has(d.dataset.key)) { d.open = true; }
            });
            if (hadFocus) {
              const again = fresh.querySelector('[href="' + CSS.escape(hadFocus) + '"]');
              if (again) { again.focus(); }
            }
          });
      });
    }, DEBOUNCE_MS);
  }

  function startPolling() {
    if (pollTimer) { return; }
    setState("polling", "Polling");
    pollTimer = setInterval(refresh, POLL_MS);
  }

  function stopPolling() {
    if (pollTimer) { clearInterval(pollTimer); pollTimer = null; }
  }

  // True for an event of the run this page follows (any run on pages that follow none).
  function concernsThisPage(raw) {
    let data;
    try { data = JSON.parse(raw); } catch (error) { return false; }
    if (data === null || typeof data !== "object" || typeof data.runId !== "string") { return false; }
    const pageRun = document.body.dataset.run;
    return !pageRun || data.runId === pageRun;
  }

  function connect() {
    // A page answering a form's POST (a refused action) shows its own address, so a reload or a
    // refresh fetches the page, never the action again.
    const own = document.body.dataset.url;
    if (own) { window.history.replaceState(null, "", own); }
    const url = document.body.dataset.events;
    if (!url || !window.EventSource || !document.querySelector("[data-live]")) {
      setState("off", document.querySelector("[data-live]") ? "Polling" : "");
      if (document.querySelector("[data-live]")) { startPolling(); }
      return;
    }
    const source = new EventSource(url);
    let failures = 0;
    source.addEventListener("ready", () => { failures = 0; stopPolling(); setState("live", "Live"); refresh(); });
    source.addEventListener("run", (event) => {
      failures = 0;
      if (concernsThisPage(event.data)) { refresh(); }
    });
    source.onerror = () => {
      failures += 1;
      // EventSource reconnects by itself; meanwhile (and for good after 3 failures) poll.
      startPolling();
      if (failures >= 3) { source.close(); }
    };
  }

  document.addEventListener("submit", (event) => {
    const form = event.target;
    const question = form.dataset.confirm;
    if (question && !window.confirm(question)) { event.preventDefault(); return; }
    // A second click must not send the action twice.
    form.querySelectorAll("button[type=submit]").forEach((b) => { b.disabled = true; b.setAttribute("aria-busy", "true"); });
  });

  // Back from rq-dashboard (bfcache): buttons disabled on submit must work again.
  window.addEventListener("pageshow", () => {
    document.querySelectorAll("button[aria-busy]").forEach((b) => { b.disabled = false; b.removeAttribute("aria-busy"); });
  });

  document.addEventListener("DOMContentLoaded", connect);
})();
