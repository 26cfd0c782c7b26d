// Live progress on the scan page.
//
// First choice: Server-Sent Events from data-events-url (an async view under ASGI): a
// "progress" event on every change (status, step, progress, and the current step's retries),
// then "completed" or "failed" with the whole scan. The browser reconnects by itself after a
// dropped connection and sends Last-Event-ID, so nothing is shown twice.
//
// Fallback: polling data-status-url (the REST status endpoint) every 2 s, used when the
// browser has no EventSource, when the stream cannot be opened or is closed by the server
// without a final event (after 5 minutes it sends "timeout"). Polling shows status, step and
// progress; retries are only shown by the stream.
//
// Either way, once the scan has ended the page's #scan section is replaced by the server's
// rendering of it (result card or failure with its reason), or the page is reloaded.
(function () {
  "use strict";
  var root = document.getElementById("scan");
  if (!root) return;
  if (root.dataset.status === "completed" || root.dataset.status === "failed") return;

  var STAGES = ["vision", "rule", "answer"];
  var LABELS = JSON.parse(document.getElementById("scan-labels").textContent);
  var finished = false;

  function field(name) { return root.querySelector("[data-field=" + name + "]"); }

  function showRetries(retries) {
    var el = field("retries");
    if (!el) return;
    if (!retries || !retries.count) { el.hidden = true; el.textContent = ""; return; }
    var text = (retries.count === 1 ? LABELS.retrying.one : LABELS.retrying.other)
      .replace("%(counter)s", retries.count);
    el.textContent = text;
    if (retries.last_error) {
      var detail = document.createElement("span");
      detail.className = "muted small";
      detail.textContent = " " + LABELS.last_error + ": " + retries.last_error;
      el.appendChild(detail);
    }
    el.hidden = false;
  }

  function show(state) {
    var bar = field("progress");
    bar.style.width = state.progress + "%";
    bar.classList.toggle("failed", state.status === "failed");
    bar.parentNode.setAttribute("aria-valuenow", state.progress);
    var statusEl = field("status");
    statusEl.textContent = LABELS.status[state.status] || state.status;
    statusEl.className = "status status-" + state.status;
    field("step").textContent = state.step === "done" ? "" : LABELS.step[state.step] || state.step;
    var current = state.step === "done" ? STAGES.length : STAGES.indexOf(state.step);
    root.querySelectorAll("[data-stage]").forEach(function (li) {
      var i = STAGES.indexOf(li.dataset.stage);
      li.classList.toggle("done", i < current);
      li.classList.toggle("active", i === current && state.status !== "failed");
      li.classList.toggle("failed", i === current && state.status === "failed");
    });
    if ("retries" in state) showRetries(state.retries);
    root.dataset.status = state.status;
  }

  // Swap in the server's rendering of the finished scan; reload if that does not work.
  function finish() {
    if (finished) return;
    finished = true;
    var waiting = document.getElementById("waiting");
    if (waiting) waiting.textContent = LABELS.loading;
    fetch(window.location.href, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.text(); })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("scan");
        if (!fresh || (fresh.dataset.status !== "completed" && fresh.dataset.status !== "failed")) {
          throw new Error("not finished yet");
        }
        root.replaceWith(fresh);
        fresh.dataset.transport = root.dataset.transport || "";
      })
      .catch(function () { window.location.reload(); });
  }

  function poll() {
    if (finished) return;
    root.dataset.transport = "polling";
    fetch(root.dataset.statusUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
      .then(function (state) {
        show(state);
        if (state.status === "completed" || state.status === "failed") finish();
        else setTimeout(poll, 2000);
      })
      .catch(function () { setTimeout(poll, 4000); });
  }

  if (!window.EventSource) { poll(); return; }
  var source = new EventSource(root.dataset.eventsUrl, { withCredentials: true });
  root.dataset.transport = "sse";
  source.addEventListener("progress", function (e) { show(JSON.parse(e.data)); });
  ["completed", "failed"].forEach(function (name) {
    source.addEventListener(name, function (e) {
      source.close();
      var scan = JSON.parse(e.data);
      show({ status: scan.status, step: scan.step, progress: scan.progress });
      finish();
    });
  });
  source.addEventListener("timeout", function () { source.close(); poll(); });
  source.onerror = function () {
    // a dropped connection is retried by the browser (readyState CONNECTING); a stream that
    // cannot be opened at all (readyState CLOSED) falls back to polling
    if (source.readyState === EventSource.CLOSED) poll();
  };
})();
