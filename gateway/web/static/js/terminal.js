// auditbox console: the read-only live view (WebSocket) and the recording player, in xterm.js
"use strict";
(function () {
  const el = document.getElementById("term");
  if (!el) { return; }
  const status = document.getElementById("term-status");
  const term = new Terminal({ disableStdin: true, cursorBlink: false, cols: 80, rows: 24,
                              scrollback: 5000, fontSize: 14,
                              fontFamily: "'DejaVu Sans Mono', monospace" });
  term.loadAddon(new CanvasAddon.CanvasAddon());
  term.open(el);
  // for people and tests alike: the text on the terminal, line by line
  window.auditboxTerminalText = function () {
    const buf = term.buffer.active;
    const lines = [];
    for (let i = 0; i < buf.length; i++) { lines.push(buf.getLine(i).translateToString(true)); }
    return lines.join("\n");
  };
  function say(text, state) { status.textContent = text; el.dataset.state = state; }

  if (el.dataset.live) {
    const ws = new WebSocket("wss://" + location.host + el.dataset.live);
    ws.binaryType = "arraybuffer";
    let ended = false;
    ws.onopen = function () { say("live", "live"); };
    ws.onmessage = function (e) {
      if (typeof e.data === "string") {
        const msg = JSON.parse(e.data);
        if (msg.type === "end") { ended = true; say("ended: " + msg.reason, "ended"); }
      } else {
        term.write(new Uint8Array(e.data));
      }
    };
    ws.onclose = function () { if (!ended) { say("disconnected", "closed"); } };
    return;
  }

  // the player: asciicast v2 output events at the chosen speed
  const speed = document.getElementById("speed");
  const skipIdle = document.getElementById("skip-idle");
  const play = document.getElementById("play");
  let events = [];
  let timer = null;
  function stop() { if (timer !== null) { clearTimeout(timer); timer = null; } }
  function start() {
    stop();
    term.reset();
    let i = 0;
    let last = 0;
    say("playing", "playing");
    function step() {
      while (i < events.length) {
        const [at, , data] = events[i];
        let wait = (at - last) / parseFloat(speed.value);
        if (skipIdle.checked) { wait = Math.min(wait, 2); }
        last = at;
        if (wait > 0.005) {
          timer = setTimeout(function () { term.write(data); i++; step(); }, wait * 1000);
          return;
        }
        term.write(data);
        i++;
      }
      timer = null;
      term.write("", function () { say("played to the end", "done"); });  // once parsed
    }
    step();
  }
  fetch(el.dataset.cast, { credentials: "same-origin" })
    .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.text(); })
    .then(function (text) {
      const lines = text.split("\n").filter(function (l) { return l.length > 0; });
      const header = JSON.parse(lines[0]);
      term.resize(Math.min(header.width, 500), Math.min(header.height, 200));
      events = lines.slice(1).map(function (l) { return JSON.parse(l); })
        .filter(function (e) { return e[1] === "o"; });
      say(events.length + " output events; press Play", "ready");
      play.addEventListener("click", start);
    })
    .catch(function (err) { say("cannot load the recording: " + err.message, "error"); });
})();
