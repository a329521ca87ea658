/* branchline web page: the little JavaScript it needs (no libraries, no CDN).
   - the dashboard's live part (/live, server-rendered HTML) refreshes on each core event
     of /events, and polls once a second only while that stream is down;
   - forms with data-confirm ask before they submit (reboot);
   - the firmware form uploads with XMLHttpRequest to show progress;
   - the first field with a validation error gets the focus.
   Assumes the page is served with CSP default-src 'self' (so nothing inline). */
"use strict";

function startLive(box) {
  var busy = false, again = false, poll = null;

  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch(box.getAttribute("data-live"), {credentials: "same-origin", cache: "no-store"})
      .then(function (r) {
        if (r.status === 401) { window.location = "/login"; return null; }
        return r.text();
      }).then(function (html) {
        if (html !== null) { box.innerHTML = html; box.classList.remove("stale"); }
      }).catch(function () {
        box.classList.add("stale");
      }).finally(function () {
        busy = false;
        if (again) { again = false; refresh(); }
      });
  }

  function polling(on) {  // only while the event stream is down
    if (on && !poll) { poll = setInterval(function () { if (!document.hidden) { refresh(); } }, 1000); }
    if (!on && poll) { clearInterval(poll); poll = null; }
  }

  function listen() {
    var source = new EventSource(box.getAttribute("data-events"));
    box.getAttribute("data-kinds").split(" ").forEach(function (kind) {
      source.addEventListener(kind, function () { polling(false); refresh(); });
    });
    source.onerror = function () {
      polling(true);
      if (source.readyState === EventSource.CLOSED) { setTimeout(listen, 10000); }
    };
  }

  if (window.EventSource) { listen(); } else { polling(true); }
}

function confirmForms() {
  document.querySelectorAll("form[data-confirm]").forEach(function (f) {
    f.addEventListener("submit", function (e) {
      if (!window.confirm(f.getAttribute("data-confirm"))) { e.preventDefault(); }
    });
  });
}

function firmwareUpload(form) {
  var bar = document.getElementById("fw-progress");
  var status = document.getElementById("fw-status");
  form.addEventListener("submit", function (e) {
    e.preventDefault();
    var file = document.getElementById("fw-file").files[0];
    var sha = document.getElementById("fw-sha").value.trim().toLowerCase();
    if (!file) { return; }
    var xhr = new XMLHttpRequest();
    xhr.open("POST", "/firmware/upload");
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.setRequestHeader("X-CSRF-Token", form.getAttribute("data-csrf"));
    xhr.setRequestHeader("X-Filename", file.name);
    xhr.setRequestHeader("X-SHA256", sha);
    bar.hidden = false;
    bar.value = 0;
    status.textContent = "Uploading " + file.name + "…";
    xhr.upload.addEventListener("progress", function (ev) {
      if (ev.lengthComputable) { bar.value = Math.round(100 * ev.loaded / ev.total); }
    });
    xhr.addEventListener("load", function () {
      var answer = {};
      try { answer = JSON.parse(xhr.responseText); } catch (err) { answer = {}; }
      if (xhr.status === 200 && answer.ok) {
        bar.value = 100;
        status.textContent = "Stored " + answer.file + " (" + answer.size +
          " bytes, SHA-256 verified). Not installed: the update agent installs it.";
        status.className = "ok";
      } else {
        status.textContent = answer.error || ("Upload refused (HTTP " + xhr.status + ")");
        status.className = "error";
      }
    });
    xhr.addEventListener("error", function () {
      status.textContent = "Upload failed: the connection dropped; try again.";
      status.className = "error";
    });
    xhr.send(file);
  });
}

document.addEventListener("DOMContentLoaded", function () {
  var live = document.querySelector("[data-live]");
  if (live) { startLive(live); }
  confirmForms();
  var fw = document.getElementById("fw-form");
  if (fw) { firmwareUpload(fw); }
  var bad = document.querySelector(".field.invalid input, .field.invalid select");
  if (bad) { bad.focus(); }
});
