// The order page follows its order until it is decided (PENDING -> CONFIRMED | REJECTED), without a reload.
(function () {
  "use strict";
  var order = document.getElementById("order");
  if (!order) return;
  var id = order.getAttribute("data-order-id");
  var status = document.getElementById("status");
  var reason = document.getElementById("reason");
  var note = document.getElementById("pending-note");
  function show(o) {
    status.textContent = o.status;
    status.setAttribute("data-status", o.status);
    reason.textContent = o.reason ? "(" + o.reason + ")" : "";
    if (o.status !== "PENDING" && note) note.textContent = "";
  }
  var delay = 500;
  function poll() {
    if (status.getAttribute("data-status") !== "PENDING") return;
    fetch("/api/orders/" + encodeURIComponent(id), { headers: { accept: "application/json" } })
      .then(function (r) {
        // A busy or cut-off shop: ask less often (up to every 10 s) until it answers again.
        delay = r.ok ? 500 : Math.min(delay * 2, 10000);
        return r.ok ? r.json() : null;
      })
      .then(function (o) { if (o) show(o); })
      .catch(function () { delay = Math.min(delay * 2, 10000); })
      .then(function () { setTimeout(poll, delay); });
  }
  setTimeout(poll, 300);
})();
