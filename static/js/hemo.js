/* HemoPlatform pages: progressive enhancement only. Every feature works without this file:
   uploads post the form, status pages refresh with <noscript> meta refresh, the slice viewer uses ?slice= links. */
(function () {
  "use strict";

  /* --- status polling: [data-poll-url] with [data-poll-state]; reload when the state changes ------------------ */
  function startPolling(el) {
    var url = el.getAttribute("data-poll-url");
    var state = el.getAttribute("data-poll-state");
    var delay = 1500;
    function tick() {
      fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin", cache: "no-store" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (data) {
          if (data && data.state !== state) { window.location.reload(); return; }
          if (data && !data.pending) { return; }
          delay = Math.min(delay * 1.25, 8000);
          window.setTimeout(tick, delay);
        })
        .catch(function () { window.setTimeout(tick, 5000); });
    }
    window.setTimeout(tick, delay);
  }

  /* --- upload: drag and drop, several files, XHR with a progress bar ----------------------------------------- */
  function formatSize(bytes) {
    if (bytes < 1024 * 1024) { return Math.max(1, Math.round(bytes / 1024)) + " KB"; }
    return (bytes / 1024 / 1024).toFixed(1) + " MB";
  }

  function setupUpload(form) {
    var input = form.querySelector("input[type=file]");
    var zone = form.querySelector("[data-dropzone]");
    var list = form.querySelector("[data-file-list]");
    var errorBox = form.querySelector("[data-upload-error]");
    var progress = form.querySelector("[data-progress]");
    var bar = progress && progress.querySelector("progress");
    var text = progress && progress.querySelector("[data-progress-text]");
    var submit = form.querySelector("[data-upload-submit]");
    if (!input) { return; }

    function showFiles() {
      var files = Array.prototype.slice.call(input.files || []);
      var total = files.reduce(function (sum, f) { return sum + f.size; }, 0);
      list.textContent = files.length === 0 ? "" : files.length === 1
        ? files[0].name + " (" + formatSize(total) + ")"
        : files.length + " files (" + formatSize(total) + ")";
    }
    function showError(message) {
      errorBox.innerHTML = "";
      if (!message) { return; }
      var p = document.createElement("p");
      p.className = "alert alert--error";
      p.textContent = message;
      errorBox.appendChild(p);
    }

    input.addEventListener("change", function () { showError(""); showFiles(); });
    ["dragenter", "dragover"].forEach(function (type) {
      zone.addEventListener(type, function (e) { e.preventDefault(); zone.classList.add("is-dragover"); });
    });
    ["dragleave", "drop"].forEach(function (type) {
      zone.addEventListener(type, function (e) { e.preventDefault(); zone.classList.remove("is-dragover"); });
    });
    zone.addEventListener("drop", function (e) {
      if (e.dataTransfer && e.dataTransfer.files && e.dataTransfer.files.length) {
        input.files = e.dataTransfer.files;
        showError("");
        showFiles();
      }
    });

    form.addEventListener("submit", function (e) {
      if (!window.FormData || !window.XMLHttpRequest) { return; } /* plain form post */
      e.preventDefault();
      if (!input.files || input.files.length === 0) { showError("Choose a file to upload first."); return; }
      /* Over the limit: say so now, with the server's wording, instead of sending it all to be refused. */
      var maxBytes = parseInt(form.getAttribute("data-max-bytes") || "0", 10), total = 0;
      for (var i = 0; i < input.files.length; i++) { total += input.files[i].size; }
      if (maxBytes && total > maxBytes) {
        showError("The upload is " + (total / 1048576).toFixed(1) + " MB; the limit is " +
                  Math.round(maxBytes / 1048576) + " MB. A ZIP of the series is often much smaller.");
        return;
      }
      var xhr = new XMLHttpRequest();
      xhr.open("POST", form.action);
      xhr.setRequestHeader("X-Requested-With", "XMLHttpRequest");
      xhr.setRequestHeader("Accept", "application/json");
      xhr.responseType = "json";
      progress.hidden = false;
      bar.value = 0;
      text.textContent = "0 %";
      submit.disabled = true;
      showError("");
      xhr.upload.addEventListener("progress", function (ev) {
        if (ev.lengthComputable) {
          var pct = Math.round((ev.loaded / ev.total) * 100);
          bar.value = pct;
          text.textContent = pct < 100 ? pct + " %" : "Checking the files…";
        }
      });
      xhr.addEventListener("load", function () {
        var data = xhr.response || {};
        if (xhr.status >= 200 && xhr.status < 300 && data.redirect) {
          text.textContent = "Uploaded. Opening the result…";
          window.location.assign(data.redirect);
          return;
        }
        submit.disabled = false;
        progress.hidden = true;
        showError(data.error || ("The upload failed (HTTP " + xhr.status + ")."));
      });
      xhr.addEventListener("error", function () {
        submit.disabled = false;
        progress.hidden = true;
        showError("The upload was interrupted. Check your connection and try again.");
      });
      xhr.send(new FormData(form));
    });
  }

  /* --- slice viewer: slider, buttons, keyboard, heat-map toggle ---------------------------------------------- */
  function pct(p) { return p === null || p === undefined ? "" : " · " + (p * 100).toFixed(1) + " %"; }

  function setupViewer(root) {
    var dataEl = document.getElementById("viewer-slices");
    if (!dataEl) { return; }
    var slices = JSON.parse(dataEl.textContent);
    var img = root.querySelector("[data-viewer-image]");
    var slider = root.querySelector("[data-viewer-slider]");
    var prev = root.querySelector("[data-viewer-prev]");
    var next = root.querySelector("[data-viewer-next]");
    var readout = root.querySelector("[data-viewer-readout]");
    var toggle = root.querySelector("[data-overlay-toggle]");
    var bars = document.querySelectorAll(".chart__bar[data-slice]");
    var current = parseInt(img.getAttribute("data-index"), 10) || 0;

    function show(index) {
      current = Math.max(0, Math.min(slices.length - 1, index));
      var s = slices[current];
      var overlay = toggle && toggle.checked && s.heatmap;
      img.src = overlay ? s.heatmap : s.preview;
      img.setAttribute("data-index", String(current));
      img.setAttribute("data-overlay", overlay ? "on" : "off");
      img.alt = "Slice " + s.number + " of " + slices.length + (overlay ? ", with heat-map overlay" : ", brain window");
      slider.value = String(current + 1);
      readout.textContent = "Slice " + s.number + " / " + slices.length + pct(s.probability) + (overlay ? " · heat map" : "");
      prev.setAttribute("aria-disabled", current === 0 ? "true" : "false");
      next.setAttribute("aria-disabled", current === slices.length - 1 ? "true" : "false");
      for (var i = 0; i < bars.length; i++) {
        bars[i].classList.toggle("is-current", parseInt(bars[i].getAttribute("data-slice"), 10) === current);
      }
    }

    slider.addEventListener("input", function () { show(parseInt(slider.value, 10) - 1); });
    prev.addEventListener("click", function (e) { e.preventDefault(); show(current - 1); });
    next.addEventListener("click", function (e) { e.preventDefault(); show(current + 1); });
    if (toggle) { toggle.addEventListener("change", function () { show(current); }); }
    for (var i = 0; i < bars.length; i++) {
      bars[i].addEventListener("click", function (e) {
        e.preventDefault();
        show(parseInt(this.getAttribute("data-slice"), 10));
        root.scrollIntoView({ behavior: "smooth", block: "nearest" });
      });
    }
    root.addEventListener("keydown", function (e) {
      if (e.target && e.target.tagName === "INPUT" && e.target.type === "range") { return; }
      if (e.key === "ArrowLeft") { show(current - 1); e.preventDefault(); }
      if (e.key === "ArrowRight") { show(current + 1); e.preventDefault(); }
    });
    show(current);
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-poll-url]").forEach(startPolling);
    document.querySelectorAll("form[data-upload]").forEach(setupUpload);
    document.querySelectorAll("[data-viewer]").forEach(setupViewer);
  });
})();
