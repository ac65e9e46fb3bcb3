// sandbox web page: live updates over the service's Server-Sent Events.
// Loaded from the package (CSP: script-src 'self'); nothing here builds
// markup from a run's data: text goes in with textContent, and the runs
// list's refresh imports rows the server rendered (autoescaped).
"use strict";
(function () {
  const body = document.body;
  const prefix = body.dataset.prefix || "/ui";

  // The same rendering as sandbox.printable for program text: control and
  // invisible characters (ESC sequences, CR, BEL, bidi overrides) become
  // visible escapes; newlines are kept.
  const UNSAFE = /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb\\]/g;
  function printable(text) {
    return String(text).replace(UNSAFE, function (ch) {
      if (ch === "\\") return "\\\\";
      if (ch === "\t") return "\\t";
      if (ch === "\r") return "\\r";
      return "\\u" + ch.charCodeAt(0).toString(16).padStart(4, "0");
    });
  }

  function parse(ev) {
    try { return JSON.parse(ev.data); } catch (e) { return null; }
  }

  // --- the runs list ---------------------------------------------------------
  if (body.dataset.page === "runs") {
    const tbody = document.getElementById("runs-body");
    const live = document.getElementById("live");
    let pending = null;
    const refresh = function () {
      pending = null;
      fetch(prefix + "/runs/rows" + window.location.search, {credentials: "same-origin"})
        .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
        .then(function (html) {
          const doc = new DOMParser().parseFromString("<table><tbody>" + html + "</tbody></table>", "text/html");
          const rows = doc.querySelector("tbody");
          if (rows && tbody) {
            tbody.replaceChildren.apply(tbody, Array.from(rows.children).map(function (n) { return document.importNode(n, true); }));
            live.textContent = "Live: updated " + new Date().toLocaleTimeString() + ".";
          }
        })
        .catch(function () { live.textContent = "Live: the refresh failed; reload the page."; });
    };
    const source = new EventSource(prefix + "/events");
    const schedule = function () { if (!pending) pending = setTimeout(refresh, 250); };
    ["queued", "started", "exit", "status", "message"].forEach(function (t) { source.addEventListener(t, schedule); });
    source.onerror = function () { live.textContent = "Live: reconnecting…"; };
  }

  // --- a run's page ----------------------------------------------------------
  if (body.dataset.page === "run" && body.dataset.final === "no") {
    const id = body.dataset.runId;
    const out = {stdout: document.getElementById("stdout"), stderr: document.getElementById("stderr"),
                 logs: document.getElementById("logs")};
    const messages = document.getElementById("messages");
    const denials = document.getElementById("denials");
    const status = document.getElementById("run-status");
    const append = function (el, text) {
      if (!el) return;
      el.appendChild(document.createTextNode(printable(text)));
      el.scrollTop = el.scrollHeight;
    };
    const textOf = function (d) {
      if (d === null || d === undefined) return "";
      if (typeof d === "string") return d;
      return d.text !== undefined ? d.text : (d.data !== undefined ? d.data : (d.chunk !== undefined ? d.chunk : ""));
    };
    const source = new EventSource(prefix + "/runs/" + encodeURIComponent(id) + "/events");
    source.addEventListener("stdout", function (ev) { append(out.stdout, textOf(parse(ev))); });
    source.addEventListener("stderr", function (ev) { append(out.stderr, textOf(parse(ev))); });
    source.addEventListener("log", function (ev) {
      const d = parse(ev) || {};
      const r = (d.record && typeof d.record === "object") ? d.record : d;
      append(out.logs, (r.level || "") + " " + (r.message !== undefined ? r.message : textOf(r)) + "\n");
    });
    const item = function (list, text) {
      if (!list) return;
      const li = document.createElement("li");
      li.textContent = printable(text);
      list.appendChild(li);
    };
    source.addEventListener("message", function (ev) {
      const d = parse(ev);
      if (d !== null) item(messages, (d.type || "") + " " + JSON.stringify(d.payload !== undefined ? d.payload : d));
    });
    source.addEventListener("denied", function (ev) {
      const d = parse(ev) || {};
      const r = (d.record && typeof d.record === "object") ? d.record : d;
      item(denials, (r.operation || "") + " " + (r.path || "") + " (" + (r.rule || "") + ")");
    });
    source.addEventListener("started", function () { if (status) status.textContent = "running"; });
    source.addEventListener("exit", function () {
      source.close();
      // The finished run's page shows its result, limits and files.
      window.location.reload();
    });
  }
})();
