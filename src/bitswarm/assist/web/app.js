// The building game's page: draws the world from /api/state on a canvas, sends the player's actions,
// and gives the assistant a tick every 600 ms. The server checks everything; the page only asks.
"use strict";

(() => {
  // Block ids 1..6 (0 is air), in the order of the server's colour names.
  const PALETTE = [null, "#e03c3c", "#f28c28", "#f2cd2e", "#3fae49", "#3478f6", "#9b4fd1"];
  const SHADE = { top: 1.0, "+x": 0.8, "+z": 0.62 };  // light from above, a little from the +x side
  const TICK_MS = 600;
  // W/S walk along z, A/D along x: on screen W is up-right, S down-left, A up-left, D down-right.
  const KEYS = { w: [0, -1], s: [0, 1], a: [-1, 0], d: [1, 0],
                 arrowup: [0, -1], arrowdown: [0, 1], arrowleft: [-1, 0], arrowright: [1, 0] };

  const $ = (id) => document.getElementById(id);
  const world = $("world"), goalView = $("goal-view");
  let S = null;             // the last state the server sent
  let selected = 1, ghost = true, hover = null, ticking = false;
  let geom = null;          // the world canvas's projection (CSS px)
  let faces = [];           // pickable faces in the order drawn (back to front)

  // -- projection ------------------------------------------------------------------------------
  // Orthographic "2:1" isometric: +x goes down-right, +z down-left, +y up; a cube's side is as tall
  // as its top is high (h = a/2 * 2 = a), so the view direction is (1, 1, 1) and x + y + z orders
  // unit cubes back to front.
  function fit(canvas, size, pad, headroom) {
    const rect = canvas.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    canvas.width = Math.max(1, Math.round(rect.width * dpr));
    canvas.height = Math.max(1, Math.round(rect.height * dpr));
    const [sx, sy, sz] = size;
    const a = Math.min((rect.width - 2 * pad) / (sx + sz), (rect.height - 2 * pad) / ((sx + sz) / 2 + sy + headroom));
    const top = -(sy + headroom) * a, bottom = (sx + sz) / 2 * a;
    return { a, h: a, dpr, w: rect.width, hgt: rect.height,
             ox: rect.width / 2 - (sx - sz) / 2 * a, oy: (rect.height - (bottom - top)) / 2 - top };
  }

  function project(g, x, y, z) {
    return [g.ox + (x - z) * g.a, g.oy + (x + z) * g.a / 2 - y * g.h];
  }

  function facePoints(g, kind, x, y, z) {
    const c = (dx, dy, dz) => project(g, x + dx, y + dy, z + dz);
    if (kind === "top") return [c(0, 1, 0), c(1, 1, 0), c(1, 1, 1), c(0, 1, 1)];
    if (kind === "+x") return [c(1, 0, 0), c(1, 1, 0), c(1, 1, 1), c(1, 0, 1)];
    if (kind === "+z") return [c(0, 0, 1), c(1, 0, 1), c(1, 1, 1), c(0, 1, 1)];
    return [c(0, 0, 0), c(1, 0, 0), c(1, 0, 1), c(0, 0, 1)];  // "floor": the y = 0 plane of cell (x, z)
  }

  function shade(hex, k) {
    const n = parseInt(hex.slice(1), 16);
    const ch = (s) => Math.round(((n >> s) & 255) * k);
    return `rgb(${ch(16)}, ${ch(8)}, ${ch(0)})`;
  }

  function poly(ctx, pts) {
    ctx.beginPath();
    ctx.moveTo(pts[0][0], pts[0][1]);
    for (let i = 1; i < pts.length; i++) ctx.lineTo(pts[i][0], pts[i][1]);
    ctx.closePath();
  }

  function inside(pts, px, py) {  // convex quad, either winding
    let sign = 0;
    for (let i = 0; i < pts.length; i++) {
      const [x1, y1] = pts[i], [x2, y2] = pts[(i + 1) % pts.length];
      const cross = (x2 - x1) * (py - y1) - (y2 - y1) * (px - x1);
      if (cross !== 0) {
        if (sign === 0) sign = Math.sign(cross);
        else if (Math.sign(cross) !== sign) return false;
      }
    }
    return true;
  }

  // -- drawing -----------------------------------------------------------------------------------
  // Floor first; then real blocks, goal ghosts and the players' pins together, ordered by depth
  // (x + y + z: back to front); then the pins again, faintly, so one hidden behind blocks still shows.
  // `pick` collects the floor and real block faces in draw order, so the last one under the cursor is
  // the one the player sees.
  function drawScene(canvas, g, st, opts) {
    const ctx = canvas.getContext("2d");
    ctx.setTransform(g.dpr, 0, 0, g.dpr, 0, 0);
    ctx.clearRect(0, 0, g.w, g.hgt);
    const [sx, sy, sz] = st.size;
    const blocks = opts.blocks, goal = st.goal, pick = opts.pick;
    const human = st.human, reach = st.reach;
    ctx.lineJoin = "round";

    for (let x = 0; x < sx; x++) {
      for (let z = 0; z < sz; z++) {
        const pts = facePoints(g, "floor", x, 0, z);
        const near = opts.players && Math.max(Math.abs(x - human[0]), Math.abs(z - human[1])) <= reach;
        const dark = (x + z) % 2 === 0;
        ctx.fillStyle = near ? (dark ? "#bcd2ee" : "#c6dbf4") : (dark ? "#cfd5df" : "#d8dde6");
        poly(ctx, pts); ctx.fill();
        ctx.strokeStyle = "rgba(80, 90, 110, 0.25)"; ctx.lineWidth = 1; ctx.stroke();
        if (pick) pick.push({ kind: "floor", cell: [x, 0, z], pts });
      }
    }
    if (opts.players) {
      for (const [who, color] of [["human", "#2a5bb8"], ["assistant", "#1d2430"]]) {
        const [x, z] = st[who];
        poly(ctx, facePoints(g, "floor", x, 0, z));
        ctx.fillStyle = color; ctx.globalAlpha = 0.35; ctx.fill(); ctx.globalAlpha = 1;
      }
      drawAxes(ctx, g, st.size);
    }

    const cubes = [];
    for (let x = 0; x < sx; x++) {
      for (let y = 0; y < sy; y++) {
        for (let z = 0; z < sz; z++) {
          const b = blocks[x][y][z], want = goal[x][y][z];
          if (b) cubes.push({ x, y, z, b, wrong: opts.ghost && b !== want });
          else if (opts.ghost && want) cubes.push({ x, y, z, b: want, isGhost: true });
        }
      }
    }
    for (const c of cubes) c.depth = c.x + c.y + c.z;
    // A player's pin stands on its column's top block: in front of that block, behind any block nearer.
    const who = opts.players ? [["assistant", "AI", "#1d2430"], ["human", "you", "#2a5bb8"]] : [];
    const pins = who.map(([player, label, fill]) => {
      const [x, z] = st[player];
      let top = 0;
      for (let y = 0; y < sy; y++) if (blocks[x][y][z]) top = y + 1;
      return { pin: true, x, z, top, label, fill, depth: x + z + top + 0.75 };
    });
    const items = cubes.concat(pins).sort((p, q) => p.depth - q.depth);
    for (const it of items) (it.pin ? drawPin(ctx, g, it) : drawCube(ctx, g, it, pick));

    if (opts.hover) {
      ctx.strokeStyle = "#ffe14d"; ctx.lineWidth = 3;
      poly(ctx, opts.hover.pts); ctx.stroke();
    }
    ctx.globalAlpha = 0.55;  // x-ray: a pin behind blocks still shows, faintly
    for (const pin of pins) drawPin(ctx, g, pin);
    ctx.globalAlpha = 1;
  }

  function drawCube(ctx, g, c, pick) {
    for (const kind of ["+x", "+z", "top"]) {
      const pts = facePoints(g, kind, c.x, c.y, c.z);
      poly(ctx, pts);
      if (c.isGhost) {
        ctx.globalAlpha = 0.22; ctx.fillStyle = PALETTE[c.b]; ctx.fill(); ctx.globalAlpha = 1;
        ctx.setLineDash([4, 3]); ctx.strokeStyle = shade(PALETTE[c.b], 0.75); ctx.lineWidth = 1.2; ctx.stroke();
        ctx.setLineDash([]);
      } else {
        ctx.fillStyle = shade(PALETTE[c.b], SHADE[kind]); ctx.fill();
        ctx.strokeStyle = "rgba(20, 25, 35, 0.45)"; ctx.lineWidth = 1; ctx.stroke();
        if (pick) pick.push({ kind, cell: [c.x, c.y, c.z], pts });
      }
    }
    if (c.wrong) {  // a block the goal does not want here: an X on its top, white over dark so any colour shows it
      const [p0, p1, p2, p3] = facePoints(g, "top", c.x, c.y, c.z);
      const a = lerp(p0, p1, 0.5), b = lerp(p2, p3, 0.5), d = lerp(p1, p2, 0.5), e = lerp(p3, p0, 0.5);
      for (const [style, width] of [["rgba(20, 25, 35, 0.7)", 4.5], ["#ffffff", 2]]) {
        ctx.strokeStyle = style; ctx.lineWidth = width;
        ctx.beginPath();
        ctx.moveTo(...lerp(a, b, 0.2)); ctx.lineTo(...lerp(a, b, 0.8));
        ctx.moveTo(...lerp(d, e, 0.2)); ctx.lineTo(...lerp(d, e, 0.8));
        ctx.stroke();
      }
    }
  }

  const lerp = (p, q, t) => [p[0] + (q[0] - p[0]) * t, p[1] + (q[1] - p[1]) * t];

  function drawPin(ctx, g, pin) {
    const [fx, fy] = project(g, pin.x + 0.5, pin.top, pin.z + 0.5);
    const [hx, hy] = project(g, pin.x + 0.5, pin.top + 0.9, pin.z + 0.5);
    const r = Math.max(9, g.a * 0.3);
    ctx.strokeStyle = pin.fill; ctx.lineWidth = 2;
    ctx.beginPath(); ctx.moveTo(fx, fy); ctx.lineTo(hx, hy + r); ctx.stroke();
    ctx.beginPath(); ctx.arc(hx, hy, r, 0, Math.PI * 2);
    ctx.fillStyle = pin.fill; ctx.fill();
    ctx.strokeStyle = "#ffffff"; ctx.lineWidth = 2; ctx.stroke();
    ctx.fillStyle = "#ffffff"; ctx.font = `700 ${Math.round(r * 0.85)}px system-ui, sans-serif`;
    ctx.textAlign = "center"; ctx.textBaseline = "middle";
    ctx.fillText(pin.label, hx, hy + 0.5);
  }

  function drawAxes(ctx, g, size) {  // which way x and z grow, and the keys that walk along them
    const [sx, , sz] = size;
    ctx.fillStyle = "#5b6678"; ctx.font = "600 12px system-ui, sans-serif";
    ctx.textAlign = "center"; ctx.textBaseline = "middle";
    const [ax, ay] = project(g, sx + 0.7, 0, sz / 2);
    ctx.fillText("+x  (D)", ax + 14, ay + 8);
    const [bx, by] = project(g, sx / 2, 0, sz + 0.7);
    ctx.fillText("+z  (S)", bx - 14, by + 8);
  }

  // -- the page ----------------------------------------------------------------------------------
  function render() {
    if (!S) return;
    geom = fit(world, S.size, 24, 1.2);
    const pick = [];
    drawScene(world, geom, S, { blocks: S.blocks, ghost, players: true, pick, hover });
    faces = pick;
    const g2 = fit(goalView, S.size, 6, 0);
    drawScene(goalView, g2, S, { blocks: S.goal, ghost: false, players: false });
  }

  function matched(st) {
    let right = 0;
    for (let x = 0; x < st.size[0]; x++)
      for (let y = 0; y < st.size[1]; y++)
        for (let z = 0; z < st.size[2]; z++)
          if (st.goal[x][y][z] && st.blocks[x][y][z] === st.goal[x][y][z]) right++;
    return right;
  }

  function show(st) {
    if (S && st.version < S.version) return;  // an older answer, overtaken on the wire
    S = st;
    $("goal-name").textContent = `goal: ${st.goal_name} · seed ${st.seed}`;
    $("score").textContent = st.score;
    $("right").textContent = `${matched(st)}/${st.goal_blocks}`;
    $("step").textContent = `${st.step}/${st.max_steps}`;
    $("turn").textContent = !st.has_assistant ? "you" : st.turn === "assistant" ? "AI" : "you";
    const banner = $("banner");
    banner.hidden = !st.ended;
    if (st.ended) {
      const built = st.outcome && st.outcome.completed;
      banner.textContent = built ? `Goal built in ${st.step} steps` : "Out of steps";
      banner.className = built ? "" : "out";
    }
    const log = $("log");
    log.replaceChildren(...st.events.slice(0, 30).map((e) => {
      const li = document.createElement("li");
      li.className = e.kind === "dropped" || e.kind === "error" ? e.kind : e.who;
      const n = document.createElement("span");
      n.className = "n"; n.textContent = `${e.step}`;
      li.append(n, e.text);
      return li;
    }));
    $("share-card").hidden = !(st.ended && st.has_assistant);
    if (st.receipt) showReceipt(st.receipt);
    else if (!st.ended) { $("receipt").textContent = ""; $("share").disabled = false; }
    paletteButtons();
    render();
  }

  function showReceipt(r) {
    const p = $("receipt");
    const tx = r.tx_hash ? [" · tx ", code(r.tx_hash)] : [];
    p.replaceChildren("Shared: ", code(r.cid), ` · ${r.size} bytes`, ...tx);
    $("share").disabled = true;
  }

  function code(text) { const c = document.createElement("code"); c.textContent = text; return c; }

  function say(text, error = false) {
    const m = $("message");
    m.textContent = text;
    m.className = error ? "error" : "";
  }

  async function call(method, path, body) {
    const init = { method, headers: {} };
    if (body !== undefined) { init.body = JSON.stringify(body); init.headers["Content-Type"] = "application/json"; }
    const res = await fetch(path, init);
    let data = null;
    try { data = await res.json(); } catch (e) { data = { error: `${res.status} ${res.statusText}` }; }
    if (!res.ok) throw new Error(data.error || `${res.status}`);
    return data;
  }

  async function send(action) {
    try {
      show(await call("POST", "/api/act", { action }));
      say("");
    } catch (e) { say(`Not allowed: ${e.message}`, true); }
  }

  async function tick() {
    if (ticking || !S || S.ended) return;
    ticking = true;
    try { show(await call("POST", "/api/tick", {})); }
    catch (e) { say(`The server did not answer: ${e.message}`, true); }
    finally { ticking = false; }
  }

  function pickAt(px, py) {
    for (let i = faces.length - 1; i >= 0; i--) if (inside(faces[i].pts, px, py)) return faces[i];
    return null;
  }

  function target(face) {  // the air cell a placement on this face fills
    const [x, y, z] = face.cell;
    if (face.kind === "top") return [x, y + 1, z];
    if (face.kind === "+x") return [x + 1, y, z];
    if (face.kind === "+z") return [x, y, z + 1];
    return [x, 0, z];
  }

  function local(ev) {
    const r = world.getBoundingClientRect();
    return [ev.clientX - r.left, ev.clientY - r.top];
  }

  function useMouse(ev, remove) {
    const face = pickAt(...local(ev));
    if (!face || !S) return;
    if (remove) {
      if (face.kind === "floor") { say("Nothing to remove there: that is the floor", true); return; }
      const [x, y, z] = face.cell;
      send({ kind: "remove", x, y, z, block: 0 });
    } else {
      const [x, y, z] = target(face);
      send({ kind: "place", x, y, z, block: selected });
    }
  }

  world.addEventListener("click", (ev) => useMouse(ev, ev.shiftKey));
  world.addEventListener("contextmenu", (ev) => { ev.preventDefault(); useMouse(ev, true); });
  world.addEventListener("mousemove", (ev) => {
    const face = pickAt(...local(ev));
    if (face !== hover) { hover = face; render(); }
    if (face && S) {
      const t = target(face);
      say(`click: place ${S.colors[selected - 1]} at (${t.join(",")})` +
          (face.kind === "floor" ? "" : ` · right-click: remove (${face.cell.join(",")})`));
    }
  });
  world.addEventListener("mouseleave", () => { hover = null; render(); });

  document.addEventListener("keydown", (ev) => {
    if (ev.ctrlKey || ev.metaKey || ev.altKey || !S) return;
    const key = ev.key.toLowerCase();
    if (key >= "1" && key <= "6") selectColor(Number(key));
    else if (KEYS[key]) { const [dx, dz] = KEYS[key]; send({ kind: "move", x: dx, y: 0, z: dz, block: 0 }); }
    else if (key === "g") toggleGhost();
    else if (key === "n") newEpisode();
    else return;
    ev.preventDefault();
  });

  function selectColor(n) { selected = n; paletteButtons(); render(); }

  function toggleGhost() {
    ghost = !ghost;
    const b = $("ghost");
    b.textContent = `Ghost ${ghost ? "on" : "off"} (G)`;
    b.setAttribute("aria-pressed", String(ghost));
    render();
  }

  async function newEpisode() {
    try { show(await call("POST", "/api/new", { seed: null })); say("A new goal: build it with the assistant"); }
    catch (e) { say(e.message, true); }
  }

  function paletteButtons() {
    const box = $("palette");
    if (!box.children.length && S) {
      for (let i = 1; i < PALETTE.length; i++) {
        const b = document.createElement("button");
        b.type = "button"; b.textContent = String(i); b.title = S.colors[i - 1];
        b.style.background = PALETTE[i];
        b.addEventListener("click", () => selectColor(i));
        box.append(b);
      }
    }
    [...box.children].forEach((b, i) => {
      b.classList.toggle("selected", i + 1 === selected);
      b.setAttribute("aria-pressed", String(i + 1 === selected));
    });
  }

  $("ghost").addEventListener("click", toggleGhost);
  $("new").addEventListener("click", newEpisode);
  $("share").addEventListener("click", async () => {
    $("share").disabled = true;
    try { showReceipt(await call("POST", "/api/share", {})); }
    catch (e) { $("share").disabled = false; say(`Not shared: ${e.message}`, true); }
  });
  window.addEventListener("resize", render);

  // For tests: where to click to hit a face, and what the page last heard from the server.
  window.bitswarm = {
    cellToScreen(x, y, z, face = "top") {
      const pts = facePoints(geom, face, x, y, z);
      const r = world.getBoundingClientRect();
      const cx = pts.reduce((s, p) => s + p[0], 0) / 4, cy = pts.reduce((s, p) => s + p[1], 0) / 4;
      return [r.left + cx, r.top + cy];
    },
    state: () => S,
    selected: () => selected,
  };

  call("GET", "/api/state").then(show, (e) => say(`The game server did not answer: ${e.message}`, true));
  setInterval(tick, TICK_MS);
})();
