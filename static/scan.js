// Live progress on the scan page, and the answer to "which one is it?".
//
// First choice: Server-Sent Events from data-events-url (an async view under ASGI): a
// "progress" event on every change (status, step, progress, and the current step's retries),
// then "completed", "failed" or "needs_input" with the whole scan. The browser reconnects by
// itself after a dropped connection and sends Last-Event-ID, so nothing is shown twice.
//
// Fallback: polling data-status-url (the REST status endpoint) every 2 s, used when the
// browser has no EventSource, when the stream cannot be opened or is closed by the server
// without a final event (after 5 minutes it sends "timeout"). Polling shows status, step and
// progress; retries are only shown by the stream.
//
// Either way, once the scan has ended the page's #scan section is replaced by the server's
// rendering of it (result card, failure with its reason, or the question with its choices),
// or the page is reloaded.
//
// A scan that asks (needs_input) shows its choices as forms that work without JavaScript
// (POST, then the page again). Here they post to the API instead (data-choose-url,
// data-hint-url), and on 202 the page follows the resumed scan live, without a reload.
(function () {
  "use strict";
  var ENDED = ["completed", "failed", "needs_input"];
  var labelsElement = document.getElementById("scan-labels");
  if (!labelsElement) return;
  var LABELS = JSON.parse(labelsElement.textContent);
  var STAGES = LABELS.stages;  // the pipeline stages, as the page was rendered (scans/stages.py)
  var root = null;
  var finished = false;

  function ended(status) { return ENDED.indexOf(status) !== -1; }
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
    // a scan that asks waits at the rule stage
    var step = state.step === "input" ? "rule" : state.step;
    var current = step === "done" ? STAGES.length : STAGES.indexOf(step);
    root.querySelectorAll("[data-stage]").forEach(function (li) {
      var i = STAGES.indexOf(li.dataset.stage);
      var here = i === current;
      li.classList.toggle("done", i < current);
      li.classList.toggle("active", here && state.status !== "failed" && state.status !== "needs_input");
      li.classList.toggle("failed", here && state.status === "failed");
      li.classList.toggle("asking", here && state.status === "needs_input");
    });
    if ("retries" in state) showRetries(state.retries);
    root.dataset.status = state.status;
  }

  // Swap in the server's rendering of the ended scan; reload if that does not work.
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
        if (!fresh || !ended(fresh.dataset.status)) throw new Error("not ended yet");
        fresh.dataset.transport = root.dataset.transport || "";
        root.replaceWith(fresh);
        start(fresh);
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
        if (ended(state.status)) finish();
        else setTimeout(poll, 2000);
      })
      .catch(function () { setTimeout(poll, 4000); });
  }

  function follow() {
    finished = false;
    if (!window.EventSource) { poll(); return; }
    var source = new EventSource(root.dataset.eventsUrl, { withCredentials: true });
    root.dataset.transport = "sse";
    source.addEventListener("progress", function (e) { show(JSON.parse(e.data)); });
    ENDED.forEach(function (name) {
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
  }

  // --- the answer to "which one is it?" --------------------------------------------------
  function answerError(body) {
    if (body && body.detail) return body.detail;
    if (body && typeof body === "object") {
      for (var key in body) {
        if (Array.isArray(body[key]) && body[key].length) return body[key][0];
      }
    }
    return LABELS.answer_failed;
  }

  function resumed(kind) {
    var question = document.getElementById("question");
    var waiting = document.createElement("p");
    waiting.className = "muted";
    waiting.id = "waiting";
    waiting.textContent = LABELS.resuming;
    if (question) question.replaceWith(waiting);
    // where the resumed run starts: a choice at the rule step, a hint at recognition
    show(kind === "hint"
      ? { status: "queued", step: "vision", progress: 5 }
      : { status: "queued", step: "rule", progress: 33 });
    follow();
  }

  function bindAnswers() {
    var question = document.getElementById("question");
    if (!question) return;
    var errorEl = document.getElementById("question-error");
    question.querySelectorAll("form[data-api]").forEach(function (form) {
      form.addEventListener("submit", function (event) {
        event.preventDefault();
        if (question.classList.contains("sending")) return;
        var kind = form.dataset.api;
        var url = kind === "hint" ? root.dataset.hintUrl : root.dataset.chooseUrl;
        var data = {};
        new FormData(form).forEach(function (value, name) {
          if (name !== "csrfmiddlewaretoken") data[name] = value;
        });
        var token = form.querySelector("[name=csrfmiddlewaretoken]");
        question.classList.add("sending");
        errorEl.hidden = true;
        fetch(url, {
          method: "POST",
          credentials: "same-origin",
          headers: {
            "Content-Type": "application/json",
            Accept: "application/json",
            "X-CSRFToken": token ? token.value : "",
          },
          body: JSON.stringify(data),
        })
          .then(function (r) {
            return r.json().catch(function () { return null; }).then(function (body) {
              if (r.status === 202) { resumed(kind); return; }
              question.classList.remove("sending");
              errorEl.textContent = answerError(body);
              errorEl.hidden = false;
            });
          })
          .catch(function () {
            question.classList.remove("sending");
            errorEl.textContent = LABELS.answer_failed;
            errorEl.hidden = false;
          });
      });
    });
  }

  function start(section) {
    root = section;
    if (root.dataset.status === "needs_input") { bindAnswers(); return; }
    if (ended(root.dataset.status)) return;
    follow();
  }

  var section = document.getElementById("scan");
  if (section) start(section);
})();
