// The distlab console: draws each snapshot of /console/events; the buttons call the gateway's /console/*
// controls, which go to the chaos sidecar. Text from the stack is only ever set as text, never as HTML.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
const ISOLATION = "console-isolate-config-";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value !== undefined && value !== null) node.setAttribute(name, String(value));
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(child === undefined || child === null ? "" : String(child)));
  }
  return node;
}

function svg(tag, attrs, text) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
  if (text !== undefined) node.textContent = text;
  return node;
}

/** Marks a panel reachable or not and shows the source's error. */
function reachable(panel, source) {
  const ok = Boolean(source && source.reachable);
  panel.dataset.reachable = String(ok);
  const error = panel.querySelector(".error");
  if (error) {
    error.hidden = ok;
    const why = (source && source.error) || "no answer";
    error.textContent = ok ? "" : why.startsWith("unreachable") ? why : "unreachable: " + why;
  }
  return ok;
}

function age(iso) {
  if (!iso) return "";
  const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  return seconds < 120 ? seconds.toFixed(1) + " s" : Math.round(seconds / 60) + " min";
}

// What the sidecar said last: a snapshot in which it did not answer in time keeps the last known
// isolations and cuts rather than showing every node as joined (and its heal button disabled).
let lastIsolated = new Set();
let lastCuts = [];

function isolatedNodes(snapshot) {
  const chaos = snapshot.chaos;
  if (!chaos || !chaos.reachable || !Array.isArray(chaos.partitions)) return lastIsolated;
  lastIsolated = new Set(chaos.partitions.map((p) => p.name).filter((n) => n.startsWith(ISOLATION)).map((n) => Number(n.slice(ISOLATION.length))));
  return lastIsolated;
}

function drawRaft(snapshot) {
  const raft = snapshot.raft || { nodes: [] };
  const panel = document.getElementById("raft");
  const nodes = [...raft.nodes].sort((a, b) => a.node_id - b.node_id);
  panel.dataset.reachable = String(nodes.some((n) => n.reachable));
  const leader = document.getElementById("raft-leader");
  leader.dataset.leader = raft.leader === null || raft.leader === undefined ? "" : String(raft.leader);
  leader.textContent = leader.dataset.leader ? "leader: node " + raft.leader + " (a majority agrees)" : "leader: none agreed by a majority";

  const isolated = isolatedNodes(snapshot);
  if (Array.isArray(raft.cuts)) lastCuts = raft.cuts;
  const cuts = lastCuts;
  const cut = (a, b) => cuts.some((c) => (c.from === a && c.to === b) || (c.from === b && c.to === a));
  const positions = [[150, 45], [55, 200], [245, 200]];
  const map = document.getElementById("raft-map");
  map.replaceChildren();
  nodes.forEach((a, i) => nodes.slice(i + 1).forEach((b, j) => {
    const [x1, y1] = positions[i % 3];
    const [x2, y2] = positions[(i + 1 + j) % 3];
    const broken = cut(a.node_id, b.node_id);
    map.append(svg("line", { x1, y1, x2, y2, class: broken ? "link cut" : "link", "data-link": a.node_id + "-" + b.node_id }));
  }));
  nodes.forEach((node, i) => {
    const [x, y] = positions[i % 3];
    const role = node.reachable ? node.state : "unreachable";
    const group = svg("g", { class: role, "data-node": node.node_id });
    group.append(svg("circle", { cx: x, cy: y, r: 34 }));
    group.append(svg("text", { x, y: y - 6, class: "name" }, "N" + node.node_id));
    group.append(svg("text", { x, y: y + 12 }, node.reachable ? "term " + node.term : "?"));
    group.append(svg("text", { x, y: y + 50 }, role));
    map.append(group);
  });

  // Rows (and their buttons) are made once per node and updated in place, so a button being clicked is
  // never replaced under the pointer by the next snapshot.
  const body = document.getElementById("raft-nodes");
  for (const node of nodes) {
    const id = node.node_id;
    let row = document.getElementById("node-" + id);
    if (!row) {
      row = el("tr", { id: "node-" + id, "data-node": id },
        el("td", {}, "node " + id), el("td"), el("td"), el("td"), el("td"), el("td"),
        el("td", {},
          el("button", { type: "button", "data-isolate": id }, "isolate"),
          " ",
          el("button", { type: "button", "data-heal": id }, "heal")));
      body.append(row);
    }
    const cutFrom = cuts.filter((c) => c.from === id).map((c) => c.to);
    for (const peer of node.partitioned_from || []) if (!cutFrom.includes(peer)) cutFrom.push(peer);
    row.dataset.reachable = String(Boolean(node.reachable));
    row.dataset.state = node.reachable ? node.state : "unreachable";
    row.dataset.term = node.reachable ? String(node.term) : "";
    row.dataset.isolated = String(isolated.has(id));
    const cells = row.children;
    cells[1].textContent = node.reachable ? node.state : "unreachable";
    cells[2].textContent = node.reachable ? node.term : "";
    cells[3].textContent = node.reachable ? (node.leader === null ? "none" : node.leader) : "";
    cells[4].textContent = node.reachable ? node.commit_index : "";
    cells[5].textContent = node.reachable ? cutFrom.sort().join(", ") || "—" : (node.error || "");
    row.querySelector("[data-isolate]").disabled = isolated.has(id);
    row.querySelector("[data-heal]").disabled = !isolated.has(id);
  }
}

function drawOrders(snapshot) {
  const panel = document.getElementById("orders");
  const orders = snapshot.orders || {};
  const ok = reachable(panel, orders);
  for (const dd of panel.querySelectorAll("dd[data-field]")) {
    const field = dd.dataset.field;
    let text = ok ? orders[field] : "?";
    if (ok && field === "pending" && orders.pending_more) text = orders.pending + "+";
    if (ok && field === "outbox_oldest_seconds") text = Number(orders[field]).toFixed(1) + " s";
    if (ok && field === "cap_mode" && !orders[field]) text = "not set";
    dd.textContent = text;
  }
}

function drawTwopc(snapshot) {
  const panel = document.getElementById("twopc");
  const twopc = snapshot.twopc || {};
  const ok = reachable(panel, twopc);
  const list = ok ? twopc.in_doubt : [];
  panel.dataset.count = String(list.length);
  panel.querySelector(".summary").textContent = ok
    ? (list.length === 0 ? "No transaction in doubt." : list.length + " transaction(s) not complete at the coordinator.")
    : "";
  panel.querySelector("tbody").replaceChildren(...list.map((t) => el("tr", { "data-state": t.state },
    el("td", { class: "mono" }, t.gid),
    el("td", {}, t.state + (t.stuck ? " (stuck)" : "")),
    el("td", { class: "mono" }, t.order),
    el("td", {}, age(t.created_at)))));
}

function drawLocks(snapshot) {
  const panel = document.getElementById("locks");
  const locks = snapshot.locks || {};
  const ok = reachable(panel, locks);
  const held = ok ? locks.locks || [] : [];
  panel.dataset.count = String(held.length);
  const rows = held.map((l) => el("tr", { "data-lock": l.backend + "/" + l.name },
    el("td", { class: "mono" }, l.name),
    el("td", {}, l.backend),
    el("td", {}, l.holder.owner),
    el("td", { class: "mono", "data-field": "fencing_token" }, l.holder.fencing_token),
    el("td", {}, l.holder.expires_at ? new Date(l.holder.expires_at).toLocaleTimeString() : "with the session"),
    el("td", {}, l.waiting)));
  for (const u of ok ? locks.unreadable || [] : []) {
    rows.push(el("tr", { class: "error" }, el("td", { class: "mono" }, u.name), el("td", {}, u.backend), el("td", { colspan: 4 }, u.message)));
  }
  if (ok && rows.length === 0) rows.push(el("tr", {}, el("td", { colspan: 6 }, "No lock held.")));
  panel.querySelector("tbody").replaceChildren(...rows);
}

function describeToxic(t) {
  const attributes = Object.entries(t.attributes || {}).map(([k, v]) => k + "=" + v).join(" ");
  return t.type + " " + (t.stream || "downstream") + (attributes ? " " + attributes : "") +
    (t.toxicity !== undefined && t.toxicity !== 1 ? " (toxicity " + t.toxicity + ")" : "");
}

function drawChaos(snapshot) {
  const panel = document.getElementById("chaos");
  const chaos = snapshot.chaos || {};
  const ok = reachable(panel, chaos);
  const partitions = ok ? chaos.partitions || [] : [];
  const faults = ok ? chaos.faults || [] : [];
  panel.dataset.partitions = partitions.map((p) => p.name).join(",");
  const none = ok ? [el("li", {}, "none")] : [];
  panel.querySelector(".partitions").replaceChildren(...(partitions.length ? partitions.map((p) => el("li", { "data-partition": p.name },
    el("strong", {}, p.name), " (" + p.mode + "): ",
    p.sides.map((side) => "[" + side.join(", ") + "]").join(" ✂ "),
    " — cuts " + p.links.length + " link(s)")) : none));
  panel.querySelector(".faults").replaceChildren(...(faults.length ? faults.map((f) => {
    const what = [];
    if (!f.enabled) what.push("disabled");
    if (f.cut_by.length) what.push("cut by " + f.cut_by.join(", "));
    for (const t of f.toxics) what.push(describeToxic(t));
    return el("li", { "data-link": f.link }, el("span", { class: "mono" }, f.link), ": " + what.join("; "));
  }) : none.map((li) => li.cloneNode(true))));
}

function drawSwitches(snapshot) {
  const panel = document.getElementById("switches");
  const switches = snapshot.switches || {};
  const ok = reachable(panel, switches);
  for (const s of ok ? switches.switches || [] : []) {
    const row = document.getElementById("switch-" + s.name);
    if (!row) continue;
    const value = s.value || s.default;
    row.dataset.value = value;
    row.querySelector(".value").textContent = value + (s.value ? "" : " (default)");
    for (const button of row.querySelectorAll("button")) button.classList.toggle("current", button.dataset.value === value);
  }
}

function draw(snapshot) {
  drawRaft(snapshot);
  drawOrders(snapshot);
  drawTwopc(snapshot);
  drawLocks(snapshot);
  drawChaos(snapshot);
  drawSwitches(snapshot);
  document.body.dataset.snapshots = String(Number(document.body.dataset.snapshots) + 1);
  document.body.dataset.at = snapshot.at;
}

function connect() {
  const stream = document.getElementById("stream");
  const source = new EventSource("/console/events");
  source.addEventListener("open", () => { stream.dataset.state = "live"; stream.textContent = "live"; });
  source.addEventListener("snapshot", (event) => {
    stream.dataset.state = "live";
    stream.textContent = "live — " + new Date().toLocaleTimeString();
    draw(JSON.parse(event.data));
  });
  // EventSource reconnects by itself; say so meanwhile.
  source.addEventListener("error", () => { stream.dataset.state = "reconnecting"; stream.textContent = "reconnecting…"; });
}

async function control(method, path, body, what) {
  const result = document.getElementById("control-result");
  result.dataset.outcome = "pending";
  result.textContent = what + "…";
  try {
    const response = await fetch(path, {
      method,
      headers: body === undefined ? {} : { "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (response.ok) {
      result.dataset.outcome = "ok";
      result.textContent = what + ": done";
    } else {
      const answer = await response.json().catch(() => ({}));
      result.dataset.outcome = "failed";
      result.textContent = what + ": " + response.status + " " + ((answer.error && answer.error.message) || "");
    }
  } catch (error) {
    result.dataset.outcome = "failed";
    result.textContent = what + ": the gateway cannot be reached (" + error.message + ")";
  }
}

document.addEventListener("click", (event) => {
  const button = event.target.closest("button");
  if (!button) return;
  if (button.dataset.isolate) {
    control("POST", "/console/partitions", { node: Number(button.dataset.isolate) }, "isolate node " + button.dataset.isolate);
  } else if (button.dataset.heal) {
    control("DELETE", "/console/partitions/" + button.dataset.heal, undefined, "heal node " + button.dataset.heal);
  } else if (button.dataset.switch) {
    control("PUT", "/console/switches/" + button.dataset.switch, { value: button.dataset.value }, button.dataset.switch + " = " + button.dataset.value);
  }
});

connect();
