// The tcpext operator console page: polls the admin API and renders it.
// Everything from the API is inserted as text (never as HTML).
"use strict";

(function () {
  const POLL_MS = 1000;
  const AUDIT_ROWS = 200;
  let token = null;
  let auditAfter = 0;
  let timer = null;

  const $ = (selector) => document.querySelector(selector);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === "class") node.className = value;
      else if (key.startsWith("data-")) node.setAttribute(key, value);
      else node[key] = value;
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function takeTokenFromFragment() {
    const match = /(?:^|[#&])token=([^&]*)/.exec(window.location.hash);
    if (match) {
      token = decodeURIComponent(match[1]);
      // Keep the token out of the address bar and the history.
      history.replaceState(null, "", window.location.pathname + window.location.search);
    }
  }

  async function api(method, path, body) {
    const headers = { "Accept": "application/json" };
    if (token) headers["Authorization"] = "Bearer " + token;
    const init = { method, headers, cache: "no-store" };
    if (method === "POST" || method === "DELETE") {
      headers["Content-Type"] = "application/json";
      if (body !== undefined) init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    if (response.status === 401) {
      const error = new Error("the console needs its token");
      error.unauthorized = true;
      throw error;
    }
    const data = await response.json().catch(() => ({}));
    if (!response.ok) throw new Error(data.error || response.statusText);
    return data;
  }

  function setStatus(text, isError) {
    const status = $("#status");
    status.textContent = text;
    status.classList.toggle("error", Boolean(isError));
  }

  function when(seconds) {
    if (seconds === null || seconds === undefined) return "";
    return new Date(seconds * 1000).toLocaleTimeString();
  }

  async function act(what, method, path, body) {
    try {
      await api(method, path, body);
      setStatus(what + ": done");
    } catch (error) {
      setStatus(what + ": " + error.message, true);
    }
    refresh();
  }

  function renderRequests(requests) {
    const tbody = $("#requests tbody");
    tbody.replaceChildren(...requests.map((r) => el("tr", { "data-request": r.id },
      el("td", {}, r.id),
      el("td", {}, r.extension),
      el("td", { class: "mono" }, r.permissions.join(", ")),
      el("td", {}, when(r.askedAt)),
      el("td", {},
        el("button", { class: "approve", "data-request": r.id, type: "button",
          onclick: () => act("approve request " + r.id, "POST",
            "/api/v1/requests/" + encodeURIComponent(r.id), { approve: true }) }, "Approve"),
        " ",
        el("button", { class: "deny", "data-request": r.id, type: "button",
          onclick: () => act("deny request " + r.id, "POST",
            "/api/v1/requests/" + encodeURIComponent(r.id), { approve: false }) }, "Deny")))));
    $("#no-requests").hidden = requests.length > 0;
    $("#requests").hidden = requests.length === 0;
  }

  function grantList(extension, source, entries) {
    if (!entries.length) return el("span", { class: "empty" }, "none");
    return el("span", {}, ...entries.map((entry) => el("span", { class: "grant" },
      el("code", {}, entry),
      source === "manifest" ? null : el("button", {
        class: "revoke", type: "button", "data-extension": extension, "data-permission": entry,
        title: "revoke " + entry,
        onclick: () => act("revoke " + entry, "DELETE",
          "/api/v1/extensions/" + encodeURIComponent(extension) + "/grants/" + encodeURIComponent(entry)),
      }, "revoke"))));
  }

  function renderExtension(ext, sockets) {
    const grantInput = el("input", { type: "text", placeholder: "tcp-connect:HOST:PORT", spellcheck: false });
    const form = el("form", { class: "grant-form" }, "Grant optional permission: ", grantInput, " ",
      el("button", { type: "submit" }, "Grant"));
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const permission = grantInput.value.trim();
      if (permission) act("grant " + permission, "POST",
        "/api/v1/extensions/" + encodeURIComponent(ext.id) + "/grants", { permission });
    });
    const rows = sockets.map((s) => el("tr", {},
      el("td", {}, s.kind), el("td", { class: "mono" }, s.local || ""),
      el("td", { class: "mono" }, s.remote || ""), el("td", {}, s.bytesIn),
      el("td", {}, s.bytesOut), el("td", {}, when(s.openedAt)), el("td", {}, s.tls ? "yes" : "")));
    const socketTable = sockets.length
      ? el("table", { class: "sockets", "data-extension": ext.id },
        el("thead", {}, el("tr", {}, ...["kind", "local", "remote", "bytes in", "bytes out", "opened", "TLS"]
          .map((h) => el("th", {}, h)))),
        el("tbody", {}, ...rows))
      : el("p", { class: "empty sockets", "data-extension": ext.id }, "No open sockets.");
    return el("div", { class: "extension", "data-extension": ext.id },
      el("h3", {}, ext.name + " " + ext.version,
        el("span", { class: "state state-" + ext.state }, ext.state),
        el("span", { class: "empty" }, " isolation: " + ext.isolation)),
      el("div", { class: "grants" },
        el("span", {}, "manifest"), grantList(ext.id, "manifest", ext.grants.manifest),
        el("span", {}, "operator"), grantList(ext.id, "operator", ext.grants.operator),
        el("span", {}, "stored"), grantList(ext.id, "stored", ext.grants.stored)),
      form,
      socketTable);
  }

  function renderAudit(events) {
    const tbody = $("#audit tbody");
    for (const e of events) {
      tbody.prepend(el("tr", { "data-seq": e.seq },
        el("td", {}, e.seq), el("td", {}, when(e.time)), el("td", {}, e.extension),
        el("td", {}, e.verb), el("td", { class: "mono" }, e.target),
        el("td", { class: "decision-" + e.decision }, e.decision),
        el("td", {}, e.decision === "allow" ? e.grant : e.reason)));
      auditAfter = Math.max(auditAfter, e.seq);
    }
    while (tbody.rows.length > AUDIT_ROWS) tbody.deleteRow(tbody.rows.length - 1);
  }

  async function refresh() {
    clearTimeout(timer);
    try {
      const [extensions, requests, audit] = await Promise.all([
        api("GET", "/api/v1/extensions"),
        api("GET", "/api/v1/requests"),
        api("GET", "/api/v1/audit?after=" + auditAfter),
      ]);
      const sockets = await Promise.all(extensions.map((ext) =>
        api("GET", "/api/v1/extensions/" + encodeURIComponent(ext.id) + "/sockets")));
      const focused = document.activeElement;
      const keepFocus = focused && focused.tagName === "INPUT" && $("#extensions").contains(focused);
      renderRequests(requests);
      if (!keepFocus) {
        $("#extensions").replaceChildren(...extensions.map((ext, i) => renderExtension(ext, sockets[i])));
      }
      renderAudit(audit);
      if (!$("#status").classList.contains("error") || !$("#status").textContent.includes(":")) {
        setStatus("updated " + new Date().toLocaleTimeString());
      }
      $("#login").hidden = true;
    } catch (error) {
      if (error.unauthorized) {
        $("#login").hidden = false;
        setStatus("token needed", true);
        return;
      }
      setStatus("cannot reach the service: " + error.message, true);
    }
    timer = setTimeout(refresh, POLL_MS);
  }

  document.addEventListener("DOMContentLoaded", () => {
    takeTokenFromFragment();
    $("#login").addEventListener("submit", (event) => {
      event.preventDefault();
      token = $("#token").value.trim();
      refresh();
    });
    refresh();
  });
})();
