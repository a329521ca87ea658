/* branchline web page: the little JavaScript it needs (no libraries, no CDN).
   - the dashboard's live part (/live, server-rendered HTML) refreshes on each core event
     of /events, and polls once a second only while that stream is down;
   - forms with data-confirm ask before they submit (reboot);
   - the firmware form uploads with XMLHttpRequest to show progress, and the firmware
     page polls the update service's state (phase, progress bar, message, outcome);
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
          " bytes, SHA-256 verified). Not installed yet: " +
          (answer.bundle ? "choose it under Install a stored bundle." :
           "only a RAUC bundle (.raucb) can be installed.");
        status.className = "ok";
        if (answer.bundle) { offerBundle(answer.file); }
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

function offerBundle(name) {  // a bundle just uploaded: first in the install form's list
  var select = document.getElementById("f-file");
  if (!select) { return; }
  Array.prototype.slice.call(select.options).forEach(function (o) {
    if (o.value === name) { select.removeChild(o); }
  });
  var option = document.createElement("option");
  option.value = name;
  option.textContent = name;
  select.insertBefore(option, select.firstChild);
  select.value = name;
}

/* The update service's phase, progress and message, polled from a small JSON endpoint
   (/firmware/status.json) every second while the page is visible. */
function updateStatus(box) {
  var el = function (id) { return document.getElementById(id); };
  var finished = ["GOOD", "ROLLED_BACK", "FAILED"];
  var down = el("update-down");

  function banner(text) {
    if (!down && !text) { return; }
    if (!down) {
      down = document.createElement("div");
      down.id = "update-down";
      down.className = "banner warn";
      box.parentNode.insertBefore(down, box.parentNode.firstChild);
    }
    down.hidden = !text;
    down.textContent = text || "";
  }

  function show(st) {
    el("upd-phase").textContent = st.phase || "unknown";
    el("upd-progress").value = st.progress || 0;
    el("upd-message").textContent = st.message || "";
    el("upd-version").textContent = st.version_to ? (st.version_from || "?") + " → " + st.version_to : "";
    el("upd-reason").hidden = !st.reason;
    el("upd-reason").textContent = st.reason ? "Refused or failed: " + st.reason : "";
    var done = finished.indexOf(st.phase) >= 0;
    el("upd-outcome").hidden = !done;
    if (done) {
      el("upd-outcome").textContent = "Last update: " + st.phase +
        (st.version_to ? " (" + st.version_to + ")" : "") + (st.reason ? ": " + st.reason : "");
    }
    el("upd-cancel").hidden = ["CHECKING", "WAITING"].indexOf(st.phase) < 0;
    box.setAttribute("data-phase", st.phase || "");
  }

  function poll() {
    if (document.hidden) { return; }
    fetch(box.getAttribute("data-status"), {credentials: "same-origin", cache: "no-store"})
      .then(function (r) {
        if (r.redirected || r.status === 401) { window.location = "/login"; return null; }
        return r.json();
      }).then(function (st) {
        if (st === null) { return; }
        if (st.ok) { banner(""); show(st); } else { banner(st.error); }
      }).catch(function () {
        banner("The web page does not answer; retrying.");
      });
  }

  setInterval(poll, 1000);
  poll();
}

document.addEventListener("DOMContentLoaded", function () {
  var live = document.querySelector("[data-live]");
  if (live) { startLive(live); }
  confirmForms();
  var fw = document.getElementById("fw-form");
  if (fw) { firmwareUpload(fw); }
  var upd = document.getElementById("fw-update");
  if (upd) { updateStatus(upd); }
  var bad = document.querySelector(".field.invalid input, .field.invalid select");
  if (bad) { bad.focus(); }
});
