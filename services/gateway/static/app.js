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
  function poll() {
    if (status.getAttribute("data-status") !== "PENDING") return;
    fetch("/api/orders/" + encodeURIComponent(id), { headers: { accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (o) { if (o) show(o); })
      .catch(function () { /* the gateway is busy: try again */ })
      .then(function () { setTimeout(poll, 500); });
  }
  setTimeout(poll, 300);
})();
