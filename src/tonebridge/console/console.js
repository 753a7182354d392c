// The operator console's page: polls the state and the callback log, follows the event stream for the
// timeline, and sends the operator's actions to the same calling/v1 routes an application uses, with the
// session cookie and its CSRF token. Elements are updated in place (never rebuilt) so that a button does
// not vanish under the pointer between two polls.
"use strict";

const STATE_EVERY_MS = 400;
const CALLBACKS_EVERY_MS = 2000;
const CHART_SECONDS = 300;
const TIMELINE_ENTRIES = 300;
const METER_FLOOR_DBFS = -60;
const HOLD_MUSIC = "music1";

const csrf = document.querySelector('meta[name="csrf-token"]').content;
const roomsBox = document.getElementById("rooms");
const timeline = document.getElementById("timeline");
const timelineRoom = document.getElementById("timeline-room");
const actionError = document.getElementById("action-error");
const rooms = new Map(); // conference id -> {box, body, rows: Map(call id -> row elements)}
const samples = []; // {t, participants, lateMs}, one a second at most
const pieEntries = []; // timeline entries waiting for their callback's outcome
let callbackRows = [];
let lastLateness = null;

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  node.append(...children);
  return node;
}

function clock(seconds) {
  return new Date(seconds * 1000).toLocaleTimeString([], { hour12: false });
}

function duration(seconds) {
  return `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")}`;
}

function unauthorized(response) {
  if (response.status === 401) window.location.assign("/console"); // the session ended: back to login
  return response.status === 401;
}

// Actions -------------------------------------------------------------------------------------------------

async function act(method, path, body) {
  actionError.textContent = "";
  const response = await fetch(path, {
    method,
    credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (unauthorized(response)) return;
  if (!response.ok) {
    const answer = await response.json().catch(() => ({}));
    actionError.textContent = `${method} ${path}: ${response.status} ${answer.message || ""}`;
  }
  pollState();
}

function participantPath(roomId, callId) {
  return `/calling/v1/conferences/id/${encodeURIComponent(roomId)}/${encodeURIComponent(callId)}`;
}

function onAction(event) {
  const button = event.target.closest("button[data-action]");
  if (!button) return;
  const { action, room, call } = button.dataset;
  if (action === "kick-all") {
    if (confirm(`Kick everyone from ${room}?`)) act("DELETE", `/calling/v1/conferences/id/${encodeURIComponent(room)}`);
  } else if (action === "kick") {
    act("DELETE", participantPath(room, call));
  } else if (action === "onhold") {
    act("PATCH", participantPath(room, call), { command: "onhold", moh: HOLD_MUSIC });
  } else {
    act("PATCH", participantPath(room, call), { command: action }); // mute, unmute, resume
  }
}

function onModeChange(event) {
  const select = event.target.closest("select[data-room]");
  if (!select) return;
  const { room, call, maxDigits, timeoutMills } = select.dataset;
  act("PATCH", participantPath(room, call), {
    conferenceDtmfOptions: { mode: select.value, maxDigits: Number(maxDigits), timeoutMills: Number(timeoutMills) },
  });
}

// Rooms -----------------------------------------------------------------------------------------------------

function roomBox(room) {
  let entry = rooms.get(room.id);
  if (entry) return entry;
  const kickAll = element("button", { type: "button", "data-action": "kick-all", "data-room": room.id }, "kick all");
  const body = element("tbody");
  const head = element("tr", {}, ...["cli", "callId", "duration", "DTMF mode", "muted", "on hold", "collecting", "level", ""]
    .map((name) => element("th", {}, name)));
  const owner = room.owner ? element("span", { class: "status" }, `application ${room.owner}`) : "";
  const box = element("div", { class: "room", "data-room": room.id },
    element("h3", {}, element("span", {}, `Room ${room.id}`), owner, kickAll),
    element("table", {}, element("thead", {}, head), body));
  roomsBox.append(box);
  timelineRoom.append(element("option", { value: room.id }, room.id));
  entry = { box, body, rows: new Map() };
  rooms.set(room.id, entry);
  return entry;
}

function participantRow(roomId, entry, p) {
  let row = entry.rows.get(p.callId);
  if (row) return row;
  const cells = {};
  for (const name of ["cli", "callId", "duration", "mode", "muted", "onHold", "collecting", "level", "actions"]) {
    cells[name] = element("td", { class: name });
  }
  const select = element("select", { "data-room": roomId, "data-call": p.callId, "aria-label": "DTMF mode" },
    ...["ignore", "forward", "detect"].map((mode) => element("option", { value: mode }, mode)));
  cells.mode.append(select);
  const meter = element("div", { class: "meter" }, element("div"));
  cells.level.append(meter, element("span", { class: "db" }));
  const button = () => element("button", { type: "button", "data-room": roomId, "data-call": p.callId });
  const mute = button(), hold = button(), kick = button();
  kick.dataset.action = "kick";
  kick.textContent = "kick";
  cells.actions.append(mute, " ", hold, " ", kick);
  cells.callId.append(element("code"));
  const tr = element("tr", { "data-call-id": p.callId }, ...Object.values(cells));
  entry.body.append(tr);
  row = { tr, cells, select, meter, mute, hold };
  entry.rows.set(p.callId, row);
  return row;
}

function flag(cell, on, text) {
  cell.innerHTML = "";
  cell.append(element("span", { class: on ? "flag on" : "flag" }, text));
}

function renderParticipant(row, p) {
  const { cells } = row;
  cells.cli.textContent = p.cli || "(none)";
  cells.callId.firstChild.textContent = p.callId;
  cells.duration.textContent = duration(p.duration);
  if (document.activeElement !== row.select) row.select.value = p.mode;
  row.select.dataset.maxDigits = p.maxDigits;
  row.select.dataset.timeoutMills = p.timeoutMills;
  cells.mode.title = `maxDigits ${p.maxDigits}, timeout ${p.timeoutMills} ms`;
  flag(cells.muted, p.muted, p.muted ? "muted" : "no");
  flag(cells.onHold, p.onHold, p.onHold ? "on hold" : "no");
  const collecting = p.state === "collecting";
  flag(cells.collecting, collecting, collecting ? `collecting ${p.collected}` : p.state.replace("_", " "));
  const level = p.level ?? METER_FLOOR_DBFS;
  const fill = Math.max(0, Math.min(1, (level - METER_FLOOR_DBFS) / -METER_FLOOR_DBFS));
  row.meter.firstChild.style.width = `${Math.round(fill * 100)}%`;
  cells.level.querySelector(".db").textContent = p.level === null ? "" : ` ${p.level.toFixed(1)} dBFS`;
  row.mute.dataset.action = p.muted ? "unmute" : "mute";
  row.mute.textContent = p.muted ? "unmute" : "mute";
  row.hold.dataset.action = p.onHold ? "resume" : "onhold";
  row.hold.textContent = p.onHold ? "resume" : "hold";
}

function renderRooms(state) {
  const seen = new Set();
  for (const room of state.rooms) {
    seen.add(room.id);
    const entry = roomBox(room);
    const present = new Set();
    for (const p of room.participants) {
      present.add(p.callId);
      renderParticipant(participantRow(room.id, entry, p), p);
    }
    for (const [callId, row] of entry.rows) {
      if (!present.has(callId)) {
        row.tr.remove();
        entry.rows.delete(callId);
      }
    }
  }
  for (const [id, entry] of rooms) {
    if (!seen.has(id)) {
      entry.box.remove();
      rooms.delete(id);
    }
  }
  document.getElementById("no-rooms").hidden = rooms.size > 0;
}

// Chart -----------------------------------------------------------------------------------------------------

function record(state) {
  const now = Date.now() / 1000;
  const lateness = state.media.tickLatenessMs;
  let lateMs = 0;
  if (lastLateness && lateness.count > lastLateness.count) {
    lateMs = (lateness.sum - lastLateness.sum) / (lateness.count - lastLateness.count);
  }
  if (samples.length && now - samples[samples.length - 1].t < 1) return;
  lastLateness = lateness;
  samples.push({ t: now, participants: state.media.participants, lateMs });
  while (samples.length && samples[0].t < now - CHART_SECONDS) samples.shift();
  drawChart(now);
}

function drawChart(now) {
  const canvas = document.getElementById("chart");
  const scale = window.devicePixelRatio || 1;
  canvas.width = canvas.clientWidth * scale;
  canvas.height = canvas.clientHeight * scale;
  const g = canvas.getContext("2d");
  g.scale(scale, scale);
  const width = canvas.clientWidth, height = canvas.clientHeight, pad = 4;
  g.clearRect(0, 0, width, height);
  const style = getComputedStyle(document.documentElement);
  const series = [
    ["participants", style.getPropertyValue("--accent"), ""],
    ["lateMs", style.getPropertyValue("--warn"), " ms"],
  ];
  series.forEach(([key, color, unit], index) => {
    const top = Math.max(1, ...samples.map((s) => s[key]));
    g.strokeStyle = color;
    g.fillStyle = color;
    g.beginPath();
    samples.forEach((s, i) => {
      const x = width - ((now - s.t) / CHART_SECONDS) * width;
      const y = height - pad - (s[key] / top) * (height - 2 * pad - 12);
      if (i) g.lineTo(x, y);
      else g.moveTo(x, y);
    });
    g.stroke();
    g.fillText(`max ${Number(top.toFixed(2))}${unit}`, 4 + index * 120, 12);
  });
}

// Timeline --------------------------------------------------------------------------------------------------

function describe(event) {
  switch (event.type) {
    case "press":
      return `press ${event.digit} (source ${event.source}, mode ${event.mode}): ${event.outcome}`;
    case "collection":
      return `collection "${event.digits}" ended (${event.reason})`;
    case "pie_sent":
      return "PIE sent";
    case "pie_answered":
      return "PIE answered";
    case "joined":
      return "joined";
    case "left":
      return `left (${event.reason})`;
    case "left_mix":
      return "left the mix";
    case "returned_to_mix":
      return "returned to the mix";
    case "options_changed":
      return `DTMF mode ${event.mode}`;
    case "conference_started":
      return "room started";
    case "conference_ended":
      return "room ended";
    default:
      return event.type;
  }
}

function addToTimeline(event) {
  if (!event.conferenceId) return;
  const time = event.time || Date.now() / 1000;
  const who = event.callId ? element("code", {}, event.callId.slice(0, 8)) : "";
  const outcome = element("span", { class: "outcome" });
  const item = element("li", { "data-type": event.type, "data-room": event.conferenceId },
    element("time", {}, clock(time)), `${event.conferenceId} `, who, ` ${describe(event)}`, outcome);
  item.hidden = Boolean(timelineRoom.value) && timelineRoom.value !== event.conferenceId;
  timeline.prepend(item);
  while (timeline.children.length > TIMELINE_ENTRIES) timeline.lastChild.remove();
  if (event.type === "pie_sent") {
    pieEntries.push({ callId: event.callId, time, outcome, row: null });
    matchPies();
  }
}

// A PIE's outcome (status, latency, retries) is in the callback log: the PIE row of the same call
// created nearest the moment the stream said it was sent.
function matchPies() {
  const claimed = new Set(pieEntries.map((entry) => entry.row && entry.row.id));
  for (const entry of pieEntries) {
    if (entry.row && entry.row.state === "pending") {
      entry.row = callbackRows.find((row) => row.id === entry.row.id) || entry.row;
    }
    if (!entry.row) {
      const candidates = callbackRows.filter((row) => row.event === "pie" && row.callId === entry.callId
        && !claimed.has(row.id) && Math.abs(row.createdAt - entry.time) < 2);
      candidates.sort((a, b) => Math.abs(a.createdAt - entry.time) - Math.abs(b.createdAt - entry.time));
      entry.row = candidates[0] || null;
      if (entry.row) claimed.add(entry.row.id);
    }
    if (entry.row) entry.outcome.textContent = `: ${pieOutcome(entry.row)}`;
  }
  while (pieEntries.length > TIMELINE_ENTRIES) pieEntries.shift();
}

function pieOutcome(row) {
  const retries = Math.max(0, row.attempts - 1);
  const latency = row.doneAt ? `, ${Math.round((row.doneAt - row.createdAt) * 1000)} ms` : "";
  return `${row.state} status ${row.status ?? "none"}${latency}, ${retries} ${retries === 1 ? "retry" : "retries"}`;
}

timelineRoom.addEventListener("change", () => {
  for (const item of timeline.children) {
    item.hidden = Boolean(timelineRoom.value) && timelineRoom.value !== item.dataset.room;
  }
});

function followEvents() {
  const source = new EventSource("/tonebridge/v1/events");
  const status = document.getElementById("connection");
  source.onopen = () => {
    status.textContent = "live";
    status.classList.add("live");
  };
  source.onerror = () => {
    status.textContent = "reconnecting";
    status.classList.remove("live");
  };
  source.onmessage = (message) => addToTimeline(JSON.parse(message.data));
}

// Polling ---------------------------------------------------------------------------------------------------

async function pollState() {
  const response = await fetch("/tonebridge/v1/console/state", { credentials: "same-origin" }).catch(() => null);
  if (!response || unauthorized(response) || !response.ok) return;
  const state = await response.json();
  renderRooms(state);
  record(state);
}

async function pollCallbacks() {
  const response = await fetch("/tonebridge/v1/console/callbacks", { credentials: "same-origin" }).catch(() => null);
  if (!response || unauthorized(response) || !response.ok) return;
  callbackRows = (await response.json()).callbacks;
  const body = document.querySelector("#callbacks tbody");
  body.replaceChildren(...callbackRows.map((row) => element("tr", { "data-event": row.event },
    element("td", {}, row.event),
    element("td", {}, element("code", {}, row.callId.slice(0, 8))),
    element("td", { class: "url", title: row.url }, row.url),
    element("td", {}, String(row.attempts)),
    element("td", {}, row.state),
    element("td", { title: row.lastError || "" }, row.status === null ? (row.lastError || "") : String(row.status)),
    element("td", {}, row.doneAt ? `${Math.round((row.doneAt - row.createdAt) * 1000)} ms` : ""),
    element("td", {}, row.nextRetryAt ? clock(row.nextRetryAt) : ""))));
  matchPies();
}

document.getElementById("logout").addEventListener("click", async () => {
  await fetch("/console/logout", { method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": csrf } });
  window.location.assign("/console");
});
roomsBox.addEventListener("click", onAction);
roomsBox.addEventListener("change", onModeChange);
followEvents();
pollState();
pollCallbacks();
setInterval(pollState, STATE_EVERY_MS);
setInterval(pollCallbacks, CALLBACKS_EVERY_MS);
