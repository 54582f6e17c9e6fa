// A small STOMP 1.2 client over a plain WebSocket: CONNECT with heart-beats, SUBSCRIBE, MESSAGE
// dispatch, reconnect with backoff. Enough for the page; the React client uses @stomp/stompjs.
"use strict";

class MutrStomp {
  constructor(url, { onMessage, onState, heartbeatMs = 10000 } = {}) {
    this.url = url;
    this.onMessage = onMessage || (() => {});
    this.onState = onState || (() => {});
    this.heartbeatMs = heartbeatMs;
    this.subscriptions = new Map();
    this.nextId = 0;
    this.backoffMs = 500;
    this.buffer = "";
    this.stopped = false;
    this.open();
  }

  subscribe(destination) {
    const id = `sub-${this.nextId++}`;
    this.subscriptions.set(id, destination);
    if (this.connected) this.sendFrame("SUBSCRIBE", { id, destination });
    return id;
  }

  close() {
    this.stopped = true;
    if (this.ws && this.connected) this.sendFrame("DISCONNECT", {});
    if (this.ws) this.ws.close();
  }

  open() {
    this.connected = false;
    this.onState("connecting");
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.onopen = () => {
      this.sendFrame("CONNECT", {
        "accept-version": "1.2",
        host: location.host,
        "heart-beat": `${this.heartbeatMs},${this.heartbeatMs}`,
      });
    };
    ws.onmessage = (event) => this.receive(String(event.data));
    ws.onclose = () => {
      clearInterval(this.beat);
      this.connected = false;
      if (this.stopped) return;
      this.onState("offline");
      setTimeout(() => this.open(), this.backoffMs);
      this.backoffMs = Math.min(this.backoffMs * 2, 15000);
    };
  }

  sendFrame(command, headers, body = "") {
    const lines = [command];
    for (const [k, v] of Object.entries(headers)) lines.push(`${k}:${escapeHeader(String(v))}`);
    this.ws.send(`${lines.join("\n")}\n\n${body}\0`);
  }

  receive(data) {
    this.buffer += data;
    let end;
    while ((end = this.buffer.indexOf("\0")) >= 0) {
      const raw = this.buffer.slice(0, end).replace(/^[\r\n]+/, "");
      this.buffer = this.buffer.slice(end + 1).replace(/^[\r\n]+/, "");
      if (raw) this.handle(parseFrame(raw));
    }
    // Anything left without a NUL is a heart-beat or an incomplete frame.
    if (/^[\r\n]*$/.test(this.buffer)) this.buffer = "";
  }

  handle(frame) {
    switch (frame.command) {
      case "CONNECTED": {
        this.connected = true;
        this.backoffMs = 500;
        // STOMP 1.2: we send every max(our offer, what the server wants), when both are set.
        const [, serverWants] = (frame.headers["heart-beat"] || "0,0").split(",").map(Number);
        clearInterval(this.beat);
        if (serverWants > 0 && this.heartbeatMs > 0) {
          this.beat = setInterval(() => this.ws.send("\n"), Math.max(this.heartbeatMs, serverWants));
        }
        for (const [id, destination] of this.subscriptions) this.sendFrame("SUBSCRIBE", { id, destination });
        this.onState("live");
        break;
      }
      case "MESSAGE":
        this.onMessage(frame.headers.destination, frame.body);
        break;
      case "ERROR":
        console.warn("STOMP error", frame.headers.message || frame.body);
        break;
      default:
        break;
    }
  }
}

function escapeHeader(v) {
  return v.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/:/g, "\\c").replace(/\r/g, "\\r");
}

function unescapeHeader(v) {
  return v.replace(/\\(.)/g, (_, c) => ({ n: "\n", c: ":", r: "\r", "\\": "\\" })[c] ?? c);
}

function parseFrame(raw) {
  const split = raw.indexOf("\n\n");
  const head = split >= 0 ? raw.slice(0, split) : raw;
  const body = split >= 0 ? raw.slice(split + 2) : "";
  const [command, ...lines] = head.split("\n").map((l) => l.replace(/\r$/, ""));
  const headers = {};
  for (const line of lines) {
    const i = line.indexOf(":");
    if (i < 0) continue;
    const key = unescapeHeader(line.slice(0, i));
    if (!(key in headers)) headers[key] = unescapeHeader(line.slice(i + 1));
  }
  return { command, headers, body };
}

window.MutrStomp = MutrStomp;
