// The wallet page. Its address is /wallet/<wallet key>; every call sends that key as X-Api-Key
// to /ui/wallet/*. Live updates: Server-Sent Events from /ui/wallet/<key>/events (the stream of
// GET /v1/wallet/:key/events; EventSource cannot send headers, so the key is in the path, as it
// is in the page's own address), otherwise a poll of the balance every few seconds.
"use strict";
(function () {
  var key = decodeURIComponent(location.pathname.split("/").pop() || "");
  var POLL_MS = 3000;
  var pollTimer = null;
  var lastBalance = null;

  function $(id) { return document.getElementById(id); }

  function showError(text) {
    var e = $("error");
    if (!text) { e.hidden = true; e.textContent = ""; return; }
    e.hidden = false;
    e.textContent = text;
  }

  function call(method, path, body) {
    var opts = { method: method, headers: { "X-Api-Key": key }, credentials: "omit", cache: "no-store" };
    if (body) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    return fetch(path, opts).then(function (r) {
      return r.json().catch(function () { return {}; }).then(function (j) {
        if (!r.ok) { throw new Error(j.message || ("HTTP " + r.status)); }
        return { status: r.status, body: j };
      });
    });
  }

  function fmtTime(secs) {
    return new Date(secs * 1000).toISOString().replace("T", " ").slice(0, 19);
  }

  function renderHistory(list) {
    var tbody = $("history").querySelector("tbody");
    while (tbody.firstChild) { tbody.removeChild(tbody.firstChild); }
    list.forEach(function (t) {
      var tr = document.createElement("tr");
      var memo = (t.lnTx && t.lnTx.memo) || t.user_label || "";
      [fmtTime(t.created_at), t.wtxType.display_name || t.wtxType.name, String(t.num_satoshis), memo]
        .forEach(function (text) {
          var td = document.createElement("td");
          td.textContent = text;
          tr.appendChild(td);
        });
      tbody.appendChild(tr);
    });
  }

  function refresh() {
    return call("GET", "/ui/wallet/info").then(function (r) {
      var w = r.body.wallet;
      $("wallet-label").textContent = w.user_label || w.id;
      $("balance").textContent = String(w.balance);
      showPayLink(r.body.pay_link);
      var changed = lastBalance !== w.balance;
      lastBalance = w.balance;
      if (changed) {
        return call("GET", "/ui/wallet/transactions").then(function (h) { renderHistory(h.body); });
      }
    }).then(function () { showError(""); }, function (e) { showError(e.message); });
  }

  // The default LNURL-pay link: the Lightning Address (or, without a username, the LNURL) and a
  // QR code of the LNURL, which any LNURL wallet can scan.
  function showPayLink(link) {
    var slot = $("address-slot");
    if (!slot || !link) { return; }
    slot.hidden = false;
    $("address-title").textContent = link.lightning_address ? "Lightning Address" : "LNURL-pay";
    $("address-text").textContent = link.lightning_address || link.lnurl;
    if (link.qr && $("address-qr").src !== link.qr) { $("address-qr").src = link.qr; }
  }

  function startPolling() {
    if (pollTimer) { return; }
    $("live").textContent = "(updates every " + POLL_MS / 1000 + " s)";
    pollTimer = setInterval(refresh, POLL_MS);
  }

  function startLive() {
    if (!window.EventSource) { startPolling(); return; }
    var es;
    try {
      es = new EventSource("/ui/wallet/" + encodeURIComponent(key) + "/events");
    } catch (e) { startPolling(); return; }
    var opened = false;
    es.onopen = function () { opened = true; $("live").textContent = "(live)"; };
    // Every event is named (`event: wallet_receive`, …), so `onmessage` never fires: listen to
    // each name the server sends (README, "Live events"); `reset` means "re-read everything".
    ["wallet_created", "wallet_receive", "wallet_send", "wallet_transfer_in", "wallet_transfer_out",
      "network_fee_incurred", "wallet_send_failure", "reset"].forEach(function (name) {
      es.addEventListener(name, function () { refresh(); });
    });
    es.onerror = function () {
      // Refused, missing or dropped: fall back to polling (and keep polling).
      if (!opened || es.readyState === EventSource.CLOSED) { es.close(); }
      startPolling();
    };
    // Also poll until the stream has proved itself, so nothing is missed meanwhile.
    setTimeout(function () { if (!opened) { startPolling(); } }, POLL_MS);
  }

  function busy(button, on) { if (button) { button.disabled = on; } }

  function wireReceive() {
    var form = $("invoice-form");
    if (!form) { return; }
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      busy($("invoice-button"), true);
      var body = { num_satoshis: Number($("invoice-amount").value || 0), memo: $("invoice-memo").value };
      call("POST", "/ui/wallet/invoice", body).then(function (r) {
        $("invoice-out").hidden = false;
        $("invoice-text").textContent = r.body.lnTx.payment_request;
        if (r.body.qr) { $("invoice-qr").src = r.body.qr; }
        showError("");
      }, function (e) { showError(e.message); }).then(function () { busy($("invoice-button"), false); });
    });
  }

  function wireSend() {
    var form = $("pay-form");
    if (!form) { return; }
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var input = $("pay-input").value.trim();
      var status = $("pay-status");
      busy($("pay-button"), true);
      status.textContent = "Sending…";
      var p;
      if (input.indexOf("@") > 0) {
        // A Lightning Address: paid through the LNURL-pay path (POST /v1/…/lnurlp/pay).
        p = call("POST", "/ui/wallet/pay",
          { ln_address: input, num_satoshis: Number($("pay-amount").value || 0) });
      } else {
        p = call("POST", "/ui/wallet/pay", { payment_request: input });
      }
      p.then(function (r) {
        status.textContent = r.status === 202 ? "Payment in flight." : "Paid.";
        $("pay-input").value = "";
        showError("");
        return refresh();
      }, function (e) {
        status.textContent = "Not paid.";
        showError(e.message);
      }).then(function () { busy($("pay-button"), false); });
    });
    var lw = $("lnurlw-form");
    lw.addEventListener("submit", function (ev) {
      ev.preventDefault();
      busy($("lnurlw-button"), true);
      var amount = Number($("lnurlw-amount").value || 0);
      call("POST", "/ui/wallet/lnurlw", amount ? { num_satoshis: amount } : {}).then(function (r) {
        $("lnurlw-out").hidden = false;
        $("lnurlw-text").textContent = r.body.lnurl;
        if (r.body.qr) { $("lnurlw-qr").src = r.body.qr; }
        showError("");
      }, function (e) { showError(e.message); }).then(function () { busy($("lnurlw-button"), false); });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    wireReceive();
    wireSend();
    refresh().then(startLive);
  });
})();
