// The galaxy: nodes from /api/v1/nodes/viz, drawn in 3-D perspective on a canvas, coloured by
// emotion and joined to their parents; new nodes arrive over STOMP; a guest can post.
"use strict";

const EMOTION_COLOURS = {
  joy: "#ffd166", embarrassed: "#f79d65", anger: "#ef476f", anxiety: "#b388ff",
  hurt: "#f15bb5", sadness: "#4cc9f0", neutral: "#cfd8dc",
};
const TOPIC = "/topic/galaxy/public";
const VIEW_RANGE = 2000;
const MAX_FEED = 30;

const nodes = new Map(); // id -> node
const canvas = document.getElementById("galaxy");
const ctx = canvas.getContext("2d");
const camera = { yaw: 0.6, pitch: 0.35, distance: 120, autoRotate: true };
let selected = null;

// ---- data ------------------------------------------------------------------------------------

function upsert(node) {
  const known = nodes.get(node.id);
  // Events may arrive out of order across replicas: never go back from an ended analysis.
  if (known && isEnded(known) && !isEnded(node)) return;
  nodes.set(node.id, node);
  document.getElementById("count").textContent = String(nodes.size);
  if (!known) addToFeed(node);
  else describe(document.querySelector(`#recent li[data-node-id="${node.id}"]`), node);
  fitCamera();
}

function isEnded(node) {
  return node.analysisStatus === "COMPLETED" || node.analysisStatus === "FAILED";
}

// The analysis line of a feed entry: the topic and emotion once analysed.
function describe(li, node) {
  if (!li) return;
  li.dataset.status = node.analysisStatus;
  const line = li.querySelector(".analysis");
  const dot = line.querySelector(".emotion");
  dot.style.background = EMOTION_COLOURS[node.emotion] || EMOTION_COLOURS.neutral;
  const topic = line.querySelector(".topic");
  if (node.analysisStatus === "COMPLETED") {
    topic.textContent = node.topic;
    dot.title = node.emotion;
  } else if (node.analysisStatus === "FAILED") {
    topic.textContent = "analysis failed";
  } else {
    topic.textContent = "analysing…";
  }
}

function addToFeed(node) {
  const list = document.getElementById("recent");
  const li = document.createElement("li");
  li.dataset.nodeId = String(node.id);
  const who = document.createElement("div");
  who.className = "who";
  who.textContent = `#${node.id} ${node.authorNickname}${node.parentId ? ` → #${node.parentId}` : ""}`;
  const text = document.createElement("div");
  text.className = "content";
  text.textContent = node.content;
  const analysis = document.createElement("div");
  analysis.className = "analysis";
  const dot = document.createElement("span");
  dot.className = "emotion";
  const topic = document.createElement("span");
  topic.className = "topic";
  analysis.append(dot, topic);
  li.append(who, text, analysis);
  describe(li, node);
  list.prepend(li);
  while (list.children.length > MAX_FEED) list.lastChild.remove();
}

async function api(path, options = {}) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => null);
  if (!body || !body.success) throw new Error(body?.message || `HTTP ${response.status}`);
  return body.data;
}

async function loadGalaxy() {
  const found = await api(`/api/v1/nodes/viz?x=0&y=0&z=0&range=${VIEW_RANGE}`);
  // Oldest first so the feed ends with the newest on top.
  found.sort((a, b) => a.id - b.id).forEach(upsert);
}

async function guestToken() {
  let token = localStorage.getItem("mutr.guestToken");
  let nickname = localStorage.getItem("mutr.nickname");
  if (token) {
    try {
      const me = await api("/api/v1/users/me", { headers: { "X-Guest-Token": token } });
      nickname = me.nickname;
    } catch {
      token = null;
    }
  }
  if (!token) {
    const issued = await api("/api/v1/auth/guest", { method: "POST" });
    token = issued.guestToken;
    nickname = issued.nickname;
    localStorage.setItem("mutr.guestToken", token);
    localStorage.setItem("mutr.nickname", nickname);
  }
  document.getElementById("me").textContent = `guest: ${nickname}`;
  return token;
}

// ---- drawing ---------------------------------------------------------------------------------

function fitCamera() {
  let r = 30;
  for (const n of nodes.values()) r = Math.max(r, Math.hypot(n.x, n.y, n.z));
  camera.distance = Math.min(r * 2.6, 20000);
}

function project(n, w, h) {
  const cy = Math.cos(camera.yaw), sy = Math.sin(camera.yaw);
  const cp = Math.cos(camera.pitch), sp = Math.sin(camera.pitch);
  const x1 = n.x * cy - n.z * sy;
  const z1 = n.x * sy + n.z * cy;
  const y2 = n.y * cp - z1 * sp;
  const depth = n.y * sp + z1 * cp + camera.distance;
  if (depth <= 1) return null;
  const focal = Math.min(w, h);
  return { x: w / 2 + (x1 * focal) / depth, y: h / 2 - (y2 * focal) / depth, depth };
}

function draw(time) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (canvas.width !== w * dpr || canvas.height !== h * dpr) {
    canvas.width = w * dpr;
    canvas.height = h * dpr;
  }
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.fillStyle = "#05060d";
  ctx.fillRect(0, 0, w, h);
  if (camera.autoRotate) camera.yaw += 0.0015;

  const projected = new Map();
  for (const n of nodes.values()) {
    const p = project(n, w, h);
    if (p) projected.set(n.id, p);
  }
  ctx.lineWidth = 1;
  for (const n of nodes.values()) {
    if (!n.parentId) continue;
    const a = projected.get(n.id), b = projected.get(n.parentId);
    if (!a || !b) continue;
    ctx.strokeStyle = "rgba(140, 150, 255, 0.35)";
    ctx.beginPath();
    ctx.moveTo(a.x, a.y);
    ctx.lineTo(b.x, b.y);
    ctx.stroke();
  }
  const order = [...projected.entries()].sort((a, b) => b[1].depth - a[1].depth);
  for (const [id, p] of order) {
    const n = nodes.get(id);
    const colour = EMOTION_COLOURS[n.emotion] || EMOTION_COLOURS.neutral;
    const size = Math.max(2, Math.min(9, (6 * camera.distance) / p.depth)) * (n.parentId ? 1 : 1.5);
    ctx.beginPath();
    ctx.arc(p.x, p.y, size, 0, Math.PI * 2);
    if (n.analysisStatus === "PENDING" || n.analysisStatus === "PROCESSING") {
      ctx.strokeStyle = colour;
      ctx.globalAlpha = 0.5 + 0.5 * Math.sin(time / 300 + id);
      ctx.stroke();
      ctx.globalAlpha = 1;
    } else {
      ctx.fillStyle = colour;
      ctx.shadowColor = colour;
      ctx.shadowBlur = 12;
      ctx.fill();
      ctx.shadowBlur = 0;
    }
    if (selected === id) {
      ctx.strokeStyle = "#ffffff";
      ctx.beginPath();
      ctx.arc(p.x, p.y, size + 5, 0, Math.PI * 2);
      ctx.stroke();
    }
    p.size = size;
  }
  draw.projected = projected;
  requestAnimationFrame(draw);
}

// ---- interaction -----------------------------------------------------------------------------

let drag = null;
canvas.addEventListener("pointerdown", (e) => {
  drag = { x: e.clientX, y: e.clientY, moved: false };
  camera.autoRotate = false;
});
window.addEventListener("pointermove", (e) => {
  if (!drag) return;
  const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
  if (Math.abs(dx) + Math.abs(dy) > 3) drag.moved = true;
  camera.yaw += dx * 0.005;
  camera.pitch = Math.max(-1.5, Math.min(1.5, camera.pitch + dy * 0.005));
  drag.x = e.clientX;
  drag.y = e.clientY;
});
window.addEventListener("pointerup", (e) => {
  if (drag && !drag.moved) pick(e.clientX, e.clientY);
  drag = null;
});
canvas.addEventListener("wheel", (e) => {
  camera.distance = Math.max(20, camera.distance * (e.deltaY > 0 ? 1.1 : 0.9));
  e.preventDefault();
}, { passive: false });

function pick(x, y) {
  let best = null, bestD = 14;
  for (const [id, p] of draw.projected || []) {
    const d = Math.hypot(p.x - x, p.y - y);
    if (d < bestD) { best = id; bestD = d; }
  }
  selected = best;
  const reply = document.getElementById("reply");
  const clear = document.getElementById("clear-reply");
  if (best === null) {
    reply.textContent = "new root";
    clear.hidden = true;
  } else {
    const n = nodes.get(best);
    reply.textContent = `reply to #${best}: ${n.content.slice(0, 24)}`;
    clear.hidden = false;
  }
}
document.getElementById("clear-reply").addEventListener("click", () => pick(-1e9, -1e9));

/** The direction the camera looks in, in galaxy space: children are placed towards it. */
function gaze() {
  const cp = Math.cos(camera.pitch), sp = Math.sin(camera.pitch);
  const cy = Math.cos(camera.yaw), sy = Math.sin(camera.yaw);
  return { dirX: -sy * cp, dirY: -sp, dirZ: -cy * cp };
}

document.getElementById("composer").addEventListener("submit", async (e) => {
  e.preventDefault();
  const error = document.getElementById("error");
  const content = document.getElementById("content");
  const button = document.getElementById("post");
  error.textContent = "";
  button.disabled = true;
  try {
    const token = await guestToken();
    const body = { content: content.value, parentId: selected, ...gaze() };
    if (selected === null) {
      // A new root somewhere near the centre, so that roots do not all sit on one point.
      const r = () => Math.round((Math.random() - 0.5) * 200);
      Object.assign(body, { x: r(), y: r(), z: r() });
    }
    await api("/api/v1/nodes", {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Guest-Token": token },
      body: JSON.stringify(body),
    });
    // The node itself arrives over the live push, like everyone else's.
    content.value = "";
  } catch (err) {
    error.textContent = err.message;
  } finally {
    button.disabled = false;
  }
});

// ---- start -----------------------------------------------------------------------------------

const legend = document.getElementById("legend");
for (const [emotion, colour] of Object.entries(EMOTION_COLOURS)) {
  const dot = document.createElement("span");
  dot.style.background = colour;
  legend.append(dot, document.createTextNode(emotion));
}

const scheme = location.protocol === "https:" ? "wss" : "ws";
const stomp = new MutrStomp(`${scheme}://${location.host}/ws-mutr/websocket`, {
  onState: (state) => {
    const live = document.getElementById("live");
    live.textContent = state;
    live.dataset.state = state;
  },
  onMessage: (destination, body) => {
    if (destination !== TOPIC) return;
    try {
      upsert(JSON.parse(body));
    } catch (err) {
      console.warn("bad node event", err);
    }
  },
});
stomp.subscribe(TOPIC);

loadGalaxy().catch((err) => {
  document.getElementById("error").textContent = `could not load the galaxy: ${err.message}`;
});
requestAnimationFrame(draw);
