// Live progress on the scan page: Server-Sent Events first, polling as the fallback.
(function () {
  "use strict";
  var root = document.getElementById("scan");
  if (!root) return;
  var status = root.dataset.status;
  if (status === "completed" || status === "failed") return;

  var STAGES = ["vision", "rule", "answer"];
  var LABELS = JSON.parse(document.getElementById("scan-labels").textContent);
  function show(state) {
    var bar = root.querySelector("[data-field=progress]");
    bar.style.width = state.progress + "%";
    bar.parentNode.setAttribute("aria-valuenow", state.progress);
    var statusEl = root.querySelector("[data-field=status]");
    statusEl.textContent = LABELS.status[state.status] || state.status;
    statusEl.className = "status status-" + state.status;
    root.querySelector("[data-field=step]").textContent = LABELS.step[state.step] || state.step;
    var current = STAGES.indexOf(state.step);
    root.querySelectorAll("[data-stage]").forEach(function (li) {
      var i = STAGES.indexOf(li.dataset.stage);
      li.classList.toggle("done", i < current || state.step === "done");
      li.classList.toggle("active", i === current);
    });
  }
  function finish() { window.location.reload(); }

  function poll() {
    fetch(root.dataset.statusUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.json(); })
      .then(function (state) {
        show(state);
        if (state.status === "completed" || state.status === "failed") finish();
        else setTimeout(poll, 2000);
      })
      .catch(function () { setTimeout(poll, 4000); });
  }

  if (!window.EventSource) { poll(); return; }
  var source = new EventSource(root.dataset.eventsUrl, { withCredentials: true });
  source.addEventListener("progress", function (e) { show(JSON.parse(e.data)); });
  ["completed", "failed"].forEach(function (name) {
    source.addEventListener(name, function () { source.close(); finish(); });
  });
  source.addEventListener("timeout", function () { source.close(); poll(); });
  source.onerror = function () {
    // the stream ends after the final event; anything else falls back to polling
    if (source.readyState === EventSource.CLOSED) poll();
  };
})();
