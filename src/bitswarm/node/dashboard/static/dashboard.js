// bitswarm node dashboard: reads the node's API, redraws a panel when the live stream says it changed.
// No libraries (the page works offline): DOM from escaped template strings, charts as inline SVG.
"use strict";

const CREDIT = 1e18;
const KINDS = ["train", "infer", "eval"];
const PALETTE = ["#58a6ff", "#3fb950", "#d29922", "#bc8cff", "#39c5cf", "#f778ba", "#ff7b72", "#a5d6ff", "#7ee787"];
const FINAL = new Set(["done", "failed", "cancelled"]);
// What each stage of a job's timeline turns its state into (the colour of the segment after it).
const STAGE_STATE = { posted: "open", claimed: "claimed", committed: "committed", audited: "audited",
  challenged: "disputed", "step found": "disputed", "op found": "disputed", voted: "voting", "vote extended": "voting",
  finalized: "done", cancelled: "open" };
const FEED_MAX = 150;

const ui = { events: [], lastEvent: 0, timeline: [], dispute: null, disputeJob: null, pinned: false,
  network: null, status: null, balances: null, swarm: [], assist: null, source: null, retry: 1000 };

// -- helpers ----------------------------------------------------------------------------------------

const $ = (id) => document.getElementById(id);
const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));

async function get(path) {
  const r = await fetch(path, { cache: "no-store" });
  if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
  return r.json();
}

function credits(units, digits = 2) {
  if (units === null || units === undefined) return "–";
  const v = Number(units) / CREDIT;
  if (v === 0) return "0";
  if (Math.abs(v) < 0.01) return v.toPrecision(2);
  return v.toLocaleString("en-US", { maximumFractionDigits: digits });
}

function num(v, digits = 0) {
  if (v === null || v === undefined || Number.isNaN(Number(v))) return "–";
  return Number(v).toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

function pct(v) { return v === null || v === undefined ? "–" : `${Math.round(Number(v) * 100)}%`; }

function short(text, head = 6, tail = 4) {
  const s = String(text ?? "");
  return s.length > head + tail + 1 ? `${s.slice(0, head)}…${s.slice(-tail)}` : s;
}

function addr(a, cls = "addr") {
  if (!a) return '<span class="muted">–</span>';
  return `<span class="${cls}" title="${esc(a)} (click to copy)" data-copy="${esc(a)}">${esc(short(a))}</span>`;
}

function cidLink(cid) {
  const bare = String(cid).replace(/^sha256:/, "");
  return `<a class="cid" href="/blobs/${esc(bare)}" target="_blank" title="${esc(cid)}">${esc(short(bare, 8, 6))}</a>` +
    `<button class="copy" data-copy="${esc(cid)}" title="copy the CID">copy</button>`;
}

function clock(t) {
  if (!t) return "";
  return new Date(t * 1000).toLocaleTimeString("en-GB", { hour12: false });
}

function ago(seconds) {
  if (seconds < 1) return "+0s";
  if (seconds < 90) return `+${Math.round(seconds)}s`;
  if (seconds < 5400) return `+${Math.round(seconds / 60)}m`;
  return `+${(seconds / 3600).toFixed(1)}h`;
}

function toast(text) {
  const t = $("toast");
  t.textContent = text;
  t.classList.add("on");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => t.classList.remove("on"), 1400);
}

document.addEventListener("click", (ev) => {
  const el = ev.target.closest("[data-copy]");
  if (!el) return;
  ev.preventDefault();
  ev.stopPropagation();
  const text = el.dataset.copy;
  const done = () => toast(`copied ${short(text, 10, 6)}`);
  if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(text).then(done, () => toast(text));
  else {
    const ta = Object.assign(document.createElement("textarea"), { value: text });
    document.body.appendChild(ta); ta.select();
    try { document.execCommand("copy"); done(); } catch (_) { toast(text); }
    ta.remove();
  }
});

// -- header and tiles -------------------------------------------------------------------------------

async function loadHeader() {
  [ui.status, ui.balances] = await Promise.all([get("/status"), get("/balances")]);
  renderHeader();
  renderTiles();
}

function renderHeader() {
  const s = ui.status || {}, b = ui.balances || {};
  const parts = [
    `<span>${addr(s.address)}</span>`,
    `<span>${(s.roles || []).map((r) => `<span class="role ${esc(r)}">${esc(r)}</span>`).join("") || '<span class="muted">poster</span>'}</span>`,
    `<span>block <b>${num(s.block)}</b></span>`,
    `<span><b>${credits(b.token)}</b> credits</span>`,
    `<span>staked <b>${credits(b.stake)}</b></span>`,
    `<span>${esc(s.state || "starting")}${s.adversary ? ` · <span style="color:var(--red)">adversary ${esc(s.adversary)}</span>` : ""}</span>`,
  ];
  $("who").innerHTML = parts.join("");
}

function renderTiles() {
  const nodes = ui.network?.nodes || [];
  const jobs = ui.timeline;
  const disputed = jobs.filter(isDisputed);
  const settled = disputed.filter((j) => j.stages.some((s) => s.stage === "settled"));
  const slashed = settled.reduce((sum, j) => sum + Number(j.solver_stake || 0), 0);
  const rounds = Math.max(0, ...ui.swarm.flatMap((s) => s.peers.flatMap((p) => p.points.map((q) => q.round ?? 0))));
  const a = ui.assist || {};
  const tiles = [
    ["nodes online", `${nodes.filter((n) => n.online).length}<small>/ ${nodes.length}</small>`, ""],
    ["jobs settled", `${jobs.filter((j) => j.status === "done").length}<small>/ ${jobs.length}</small>`, "good"],
    ["disputes", `${disputed.length}<small>${settled.length} settled</small>`, ""],
    ["stake slashed", `${credits(slashed)}<small>credits</small>`, slashed ? "bad" : ""],
    ["swarm rounds", `${ui.swarm.length ? rounds + 1 : 0}`, ""],
    ["episodes shared", `${num(a.shared || 0)}<small>${(a.models || []).length} models</small>`, ""],
  ];
  $("tiles").innerHTML = tiles.map(([k, v, cls]) => `<div class="tile ${cls}"><div class="k">${k}</div><div class="v">${v}</div></div>`).join("");
}

// -- network ------------------------------------------------------------------------------------------

async function loadNetwork() {
  ui.network = await get("/network");
  const nodes = ui.network.nodes;
  const body = nodes.length ? nodes.map((n) => `
    <tr class="${n.self ? "me" : ""}" data-testid="network-row" data-address="${esc(n.address)}" data-online="${n.online}">
      <td><span class="dot ${n.online ? "on" : ""}" title="${n.online ? "online (a peer of this node)" : "not a peer now"}"></span></td>
      <td>${addr(n.address)}${n.self ? '<span class="you">this node</span>' : ""}</td>
      <td>${(n.roles || []).map((r) => `<span class="role ${esc(r)}">${esc(r)}</span>`).join("")}</td>
      <td class="num">${credits(n.staked)}</td>
      <td class="num">${credits(n.locked)}</td>
      <td class="num">${credits(n.token)}</td>
    </tr>`).join("") : '<tr><td colspan="6" class="empty">No node registered on chain yet (or the node has not read the registry).</td></tr>';
  document.querySelector("#network tbody").innerHTML = body;
  $("network-sub").textContent = `${nodes.length} registered · ${ui.network.peers.length} peers`;
  renderTiles();
}

// -- jobs -------------------------------------------------------------------------------------------

function isDisputed(j) {
  return j.dispute_rounds > 0 || j.status === "disputed" || j.stages.some((s) => s.stage === "challenged");
}

async function loadJobs() {
  ui.timeline = await get("/timeline?limit=40");
  renderJobs();
  renderTiles();
  const disputed = ui.timeline.filter(isDisputed);
  if (!ui.pinned || !ui.timeline.some((j) => j.job_id === ui.disputeJob)) ui.disputeJob = disputed[0]?.job_id ?? null;
  await loadDispute();
}

function segments(job, t0, span, now) {
  const stages = job.stages;
  const out = [];
  for (let i = 0; i < stages.length; i++) {
    const s = stages[i];
    let state = STAGE_STATE[s.stage];
    if (s.stage === "settled") state = job.status === "done" ? "done" : "failed";
    const end = i + 1 < stages.length ? stages[i + 1].seen : (FINAL.has(job.status) ? s.seen : now);
    out.push({ state, from: s.seen, to: end, stage: s });
  }
  const x = (t) => span > 0 ? ((t - t0) / span) * 100 : 0;
  return out.map((g) => `<div class="seg c-${g.state}" style="left:${x(g.from).toFixed(2)}%;width:${Math.max(0.6, x(g.to) - x(g.from)).toFixed(2)}%"
      title="${esc(g.stage.stage)} at ${clock(g.stage.seen)} (block ${g.stage.block})"></div>`).join("") +
    stages.map((s) => `<div class="mark" style="left:${x(s.seen).toFixed(2)}%" title="${esc(s.stage)} · block ${s.block} · ${clock(s.seen)}"></div>`).join("");
}

function renderJobs() {
  const jobs = ui.timeline;
  $("jobs-sub").textContent = jobs.length ? `${jobs.length} on chain, newest first` : "";
  $("jobs-legend").innerHTML = jobs.length ? [["open", "open"], ["claimed", "claimed"], ["committed", "committed"],
    ["disputed", "challenged"], ["voting", "referees voting"], ["done", "paid"], ["failed", "failed"]]
    .map(([c, label]) => `<span><i class="c-${c}"></i>${label}</span>`).join("") : "";
  if (!jobs.length) { $("jobs").innerHTML = '<p class="empty">No job on chain yet.</p>'; return; }
  const now = Date.now() / 1000;
  const seen = jobs.flatMap((j) => j.stages.map((s) => s.seen));
  const t0 = seen.length ? Math.min(...seen) : now;
  const live = jobs.some((j) => !FINAL.has(j.status) && j.stages.length);
  const t1 = Math.max(t0 + 1, live ? now : Math.max(...seen, t0));
  const rows = jobs.map((j) => {
    const last = j.stages[j.stages.length - 1];
    const meta = [j.bounty != null ? `${credits(j.bounty)} cr` : null, j.solver ? `solver ${short(j.solver)}` : null]
      .filter(Boolean).join(" · ");
    return `<div class="job ${j.job_id === ui.disputeJob ? "sel" : ""}" data-testid="job-row" data-job="${j.job_id}" data-status="${esc(j.status)}"
        title="${esc(j.stages.map((s) => `${s.stage} @ ${clock(s.seen)}`).join("  →  "))}">
      <div class="title"><b>Job #${j.job_id}<span class="kind">${esc(j.kind || "?")}</span></b><span class="m">${esc(meta) || "&nbsp;"}</span></div>
      <div class="track">${segments(j, t0, t1 - t0, now)}</div>
      <span class="status st-${esc(j.status)}" title="${last && last.stage === "settled" ? "settled by a dispute" : ""}">${last && last.stage === "settled" ? "⚖ " : ""}${esc(j.status)}</span>
    </div>`;
  });
  $("jobs").innerHTML = rows.join("") +
    `<div class="axis"><span></span><div><span>${clock(t0)}</span><span>${ago((t1 - t0) / 2)}</span><span>${live ? "now" : clock(t1)}</span></div><span></span></div>`;
}

$("jobs").addEventListener("click", (ev) => {
  const row = ev.target.closest(".job");
  if (!row) return;
  const job = ui.timeline.find((j) => j.job_id === Number(row.dataset.job));
  if (job && isDisputed(job)) { ui.disputeJob = job.job_id; ui.pinned = true; renderJobs(); loadDispute(); }
});

// -- the dispute ------------------------------------------------------------------------------------

async function loadDispute() {
  const disputed = ui.timeline.filter(isDisputed);
  $("dispute-pick").innerHTML = disputed.length > 1 ? disputed.map((j) =>
    `<button data-job="${j.job_id}" class="${j.job_id === ui.disputeJob ? "sel" : ""}">#${j.job_id}</button>`).join("") : "";
  if (ui.disputeJob === null) { ui.dispute = null; renderDispute(); return; }
  ui.dispute = await get(`/jobs/${ui.disputeJob}/bisection`);
  renderDispute();
}

$("dispute-pick").addEventListener("click", (ev) => {
  const b = ev.target.closest("button");
  if (!b) return;
  ui.disputeJob = Number(b.dataset.job); ui.pinned = true;
  renderJobs(); loadDispute();
});

function roundRows(rounds, count, found, unit) {
  const w = (n) => (100 * n / Math.max(1, count)).toFixed(2);
  const rows = rounds.map((r) => {
    const cls = r.agreed === true ? "agree" : r.agreed === false ? "differ" : "";
    const said = r.agreed === true ? "both agree" : r.agreed === false ? "they differ" : "waiting for answers";
    const range = r.lo !== null && r.hi !== null ?
      `<span style="left:${w(r.lo)}%;width:${w(r.hi - r.lo + 1)}%"></span>` : "";
    const mark = r.index !== null ? `<em style="left:calc(${w(r.index + 0.5)}% - 1px)"></em>` : "";
    return `<div class="round ${cls}" data-testid="dispute-round" data-phase="${esc(r.phase)}" data-lo="${r.lo}" data-hi="${r.hi}"
        title="round ${r.round}: ${unit}s ${r.lo}–${r.hi} in dispute, asked ${unit} ${r.index}: ${said} (block ${r.block})">
      <span class="n">R${r.round}</span><div class="bar">${range}${mark}</div>
      <span class="r">${num(r.lo)}–${num(r.hi)} <span class="muted">(${num(r.hi - r.lo + 1)})</span></span></div>`;
  });
  if (found !== null && found !== undefined) {
    rows.push(`<div class="round found" data-testid="dispute-found" title="the one ${unit} both sides disagree on">
      <span class="n">→</span><div class="bar"><span style="left:${w(found)}%;width:${w(1)}%"></span></div>
      <span class="r">${unit} ${num(found)}</span></div>`);
  }
  return rows.join("");
}

function renderDispute() {
  const d = ui.dispute;
  const box = $("dispute");
  if (!d) {
    $("dispute-sub").textContent = "";
    box.innerHTML = '<p class="empty">No dispute yet. When a verifier challenges a result, the bisection shows here round by round.</p>';
    return;
  }
  const steps = d.rounds.filter((r) => r.phase === "step");
  const ops = d.rounds.filter((r) => r.phase === "op");
  const leaves = d.num_leaves || 1, opCount = (d.ops_per_leaf || 0) + 1;
  $("dispute-sub").textContent = `job #${d.job_id} · ${d.rounds.length} rounds`;
  const sw = d.votes.filter((v) => v.solver_wins).reduce((s, v) => s + Number(v.weight || 0), 0);
  const cw = d.votes.filter((v) => !v.solver_wins).reduce((s, v) => s + Number(v.weight || 0), 0);
  const released = Object.fromEntries(d.releases.map((r) => [String(r.referee).toLowerCase(), r]));
  const votes = d.votes.length ? `
    <div class="tally" title="referee stake: ${credits(sw)} for the solver, ${credits(cw)} for the challenger">
      <div class="s" style="flex:${sw}"></div><div class="c" style="flex:${cw}"></div></div>
    ${d.votes.map((v) => {
      const rel = released[String(v.referee).toLowerCase()];
      return `<div class="vote" data-testid="referee-vote">${addr(v.referee)}
        <span class="${v.solver_wins ? "side-s" : "side-c"}">for the ${v.solver_wins ? "solver" : "challenger"}</span>
        <span>${credits(v.weight)} cr${rel ? (rel.slashed ? ' · <span style="color:var(--red)">slashed</span>' : " · returned") : ""}</span></div>`;
    }).join("")}` : `<p class="empty">${d.op !== null ? "Waiting for the referees' votes." : "Referees vote once the one op is found."}</p>`;
  const v = d.verdict;
  const loserSide = v ? (String(v.loser).toLowerCase() === String(d.solver).toLowerCase() ? "the solver" : "the challenger") : "";
  const winnerSide = v ? (String(v.winner).toLowerCase() === String(d.solver).toLowerCase() ? "The solver" :
    String(v.winner).toLowerCase() === String(d.challenger).toLowerCase() ? "The challenger" : "The poster") : "";
  const verdict = v ? `
    <div class="verdict settled" data-testid="dispute-verdict" data-loser="${esc(v.loser)}" data-winner="${esc(v.winner)}">
      <div class="big">${winnerSide} wins by ${esc(v.reason || "settlement")}: ${loserSide}
        <span class="mono">${esc(v.loser)}</span> was <span class="slashed">slashed ${credits(v.slashed)} credits</span></div>
      <div class="muted">winner ${addr(v.winner)} · settled in block ${num(v.block)}</div>
    </div>` : `<div class="verdict" data-testid="dispute-verdict">Not settled yet.</div>`;
  box.innerHTML = `${verdict}
    <div class="parties"><span>solver ${addr(d.solver)}</span><span>challenger ${addr(d.challenger)}</span>
      <span><b>${num(d.num_leaves)}</b> steps · <b>${num(d.ops_per_leaf)}</b> ops per step</span></div>
    <div class="dgrid">
      <div class="phase"><h3>1 · Bisect the steps</h3>${roundRows(steps, leaves, d.step, "step") || '<p class="empty">No step round yet.</p>'}</div>
      <div class="phase"><h3>2 · Bisect the ops of step ${d.step ?? "…"}</h3>${roundRows(ops, opCount, d.op, "op") || '<p class="empty">Starts once the one step is found.</p>'}</div>
    </div>
    <div class="dgrid" style="margin-top:12px">
      <div class="votes"><h3>3 · Referees vote</h3>${votes}</div>
      <div class="votes"><h3>Blobs and roots</h3><div class="blobs" style="margin-top:0;flex-direction:column;gap:4px">
        ${d.blobs.map((b) => `<span class="blob"><span class="muted">${esc(b.what)}</span> ${cidLink(b.cid)}</span>`).join("")}
        ${d.traces.map((t) => `<span class="blob"><span class="muted">trace of ${addr(t.party)}</span>
          <span class="cid" data-copy="${esc(t.trace_root)}" title="${esc(t.trace_root)}">${esc(short(t.trace_root, 8, 6))}</span></span>`).join("")}
      </div></div>
    </div>`;
}

// -- swarm ------------------------------------------------------------------------------------------

async function loadSwarm() {
  ui.swarm = await get("/swarm");
  const box = $("swarm");
  if (!ui.swarm.length) { box.innerHTML = '<p class="empty">No swarm rounds under this node\'s home yet.</p>'; renderTiles(); return; }
  box.innerHTML = ui.swarm.map(chart).join("");
  renderTiles();
}

function chart(swarm) {
  const W = 760, H = 210, L = 44, R = 12, T = 10, B = 26;
  const pts = swarm.peers.flatMap((p) => p.points.filter((q) => q.reward !== undefined && q.round !== undefined));
  const xs = pts.map((q) => q.round), ys = pts.map((q) => Number(q.reward));
  let x0 = Math.min(...xs), x1 = Math.max(...xs), y0 = Math.min(0, ...ys), y1 = Math.max(...ys);
  if (!pts.length) { x0 = 0; x1 = 1; y0 = 0; y1 = 1; }
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) y1 = y0 + 1;
  const pad = (y1 - y0) * 0.08; y1 += pad;
  const X = (v) => L + (v - x0) / (x1 - x0) * (W - L - R);
  const Y = (v) => T + (1 - (v - y0) / (y1 - y0)) * (H - T - B);
  const grid = [0, 1, 2, 3, 4].map((i) => {
    const v = y0 + (y1 - y0) * i / 4, y = Y(v).toFixed(1);
    return `<line x1="${L}" x2="${W - R}" y1="${y}" y2="${y}"/><text x="${L - 6}" y="${y}" dy="3.5" text-anchor="end">${num(v, 2)}</text>`;
  }).join("");
  const step = Math.max(1, Math.ceil((x1 - x0) / 8));
  const xl = Array.from({ length: Math.floor((x1 - x0) / step) + 1 }, (_, i) => x0 + i * step)
    .map((v) => `<text x="${X(v).toFixed(1)}" y="${H - 8}" text-anchor="middle">${v}</text>`).join("");
  const lines = swarm.peers.map((p, i) => {
    const c = PALETTE[i % PALETTE.length];
    const q = p.points.filter((r) => r.reward !== undefined && r.round !== undefined);
    const path = q.map((r) => `${X(r.round).toFixed(1)},${Y(Number(r.reward)).toFixed(1)}`).join(" ");
    const dots = q.length <= 40 ? q.map((r) => `<circle cx="${X(r.round).toFixed(1)}" cy="${Y(Number(r.reward)).toFixed(1)}" r="2.6" fill="${c}"><title>${esc(p.peer)} · round ${r.round}: reward ${num(r.reward, 3)}</title></circle>`).join("") : "";
    return `<polyline data-testid="swarm-line" data-peer="${esc(p.peer)}" data-points="${q.length}" stroke="${c}" points="${path}"><title>${esc(p.peer)}</title></polyline>${dots}`;
  }).join("");
  const keys = swarm.peers.map((p, i) => {
    const last = p.points[p.points.length - 1] || {};
    return `<span title="${esc(p.peer)}"><i style="background:${PALETTE[i % PALETTE.length]}"></i>${esc(short(p.peer, 10, 4))} <span class="muted">· ${p.points.length} rounds · last ${num(last.reward, 3)}</span></span>`;
  }).join("");
  return `<div class="swarm-name">${esc(swarm.swarm)} <span class="muted">· reward (y) by round (x)</span></div>
    <svg class="chart" data-testid="swarm-chart" data-swarm="${esc(swarm.swarm)}" data-peers="${swarm.peers.length}" data-points="${pts.length}"
      viewBox="0 0 ${W} ${H}" role="img" aria-label="reward per round for each peer of ${esc(swarm.swarm)}">
      <g class="grid">${grid}</g>${xl}${lines}</svg>
    <div class="keys">${keys}</div>`;
}

// -- assistant --------------------------------------------------------------------------------------

async function loadAssist() {
  ui.assist = await get("/assist");
  const a = ui.assist, box = $("assist");
  renderTiles();
  if (!a.shared && !a.models.length && !a.simulations.length) {
    box.innerHTML = '<p class="empty">No assistant data under this node\'s home yet.</p>';
    return;
  }
  const sims = a.simulations;
  const last = sims[sims.length - 1] || {};
  const withA = last.human_actions_with_assistant, alone = last.human_actions_alone;
  const top = Math.max(Number(alone || 0), Number(withA || 0), 1);
  const saved = alone && withA !== undefined ? 1 - withA / alone : null;
  const compare = alone !== undefined ? `
    <div class="compare">
      <div class="muted" style="margin-bottom:3px">Human actions per goal, latest simulation (${num(last.episodes)} episodes)</div>
      <div class="row"><span>alone</span><div class="b" style="width:${(100 * alone / top).toFixed(1)}%;background:#3b4450"></div><span class="n">${num(alone, 1)}</span></div>
      ${withA !== undefined ? `<div class="row"><span>with assistant</span><div class="b" style="width:${(100 * withA / top).toFixed(1)}%;background:var(--green)"></div><span class="n">${num(withA, 1)}</span></div>` : ""}
    </div>` : "";
  box.innerHTML = `
    <div class="stats">
      <div class="stat"><div class="k">episodes shared</div><div class="v">${num(a.shared)}</div></div>
      <div class="stat"><div class="k">models trained</div><div class="v">${num(a.models.length)}</div></div>
      <div class="stat"><div class="k">simulations</div><div class="v">${num(sims.length)}</div></div>
      <div class="stat"><div class="k">actions saved</div><div class="v" style="color:var(--green)">${saved === null ? "–" : pct(saved)}</div></div>
      <div class="stat"><div class="k">assistant's blocks</div><div class="v">${pct(last.assistant_share_of_goal_blocks)}</div></div>
      <div class="stat"><div class="k">goals completed</div><div class="v">${pct(last.goal_completion_rate)}</div></div>
    </div>${compare}
    ${a.models.length ? `<div class="muted" style="margin-top:8px">latest model ${cidLink(a.models[a.models.length - 1].model)}
      · ${num(a.models[a.models.length - 1].episodes)} episodes · ${num(a.models[a.models.length - 1].steps)} steps</div>` : ""}`;
}

// -- live feed --------------------------------------------------------------------------------------

const EV_CLASS = { JobPosted: "ev-job", JobClaimed: "ev-job", ResultCommitted: "ev-job", AuditDrawn: "ev-job",
  Attested: "ev-job", Revealed: "ev-job", JobChallenged: "ev-dispute", DisputeQuery: "ev-dispute",
  StepAnswered: "ev-dispute", StepFound: "ev-dispute", TraceCommitted: "ev-dispute", OpAnswered: "ev-dispute",
  OpFound: "ev-dispute", RefereeVoted: "ev-vote", VoteExtended: "ev-vote", VoteReleased: "ev-vote",
  DisputeSettled: "ev-settle", JobFinalized: "ev-pay", VerifierPaid: "ev-pay", JobCancelled: "" };

function describe(e) {
  const a = e.args || {};
  const job = e.job_id !== null && e.job_id !== undefined ? `#${e.job_id} ` : "";
  switch (e.name) {
    case "JobPosted": return `${job}${KINDS[a.kind] || a.kind} · bounty ${credits(a.bounty)} · ${num(a.num_leaves)} steps`;
    case "JobClaimed": return `${job}by ${short(a.solver)}`;
    case "ResultCommitted": return `${job}result ${short(a.result_cid, 8, 4)}`;
    case "JobChallenged": return `${job}by ${short(a.challenger)}`;
    case "DisputeQuery": return `${job}${a.phase === 3 ? "op" : "step"} ${num(a.index)}?`;
    case "StepAnswered": case "OpAnswered": return `${job}${short(a.party)} at ${num(a.index)}`;
    case "StepFound": return `${job}step ${num(a.step_index)}`;
    case "OpFound": return `${job}step ${num(a.step)}, op ${num(a.op)}`;
    case "TraceCommitted": return `${job}${short(a.party)} · ${num(a.n_ops)} ops`;
    case "RefereeVoted": return `${job}${short(a.referee)} for the ${a.solver_wins ? "solver" : "challenger"} · ${credits(a.weight)}`;
    case "VoteReleased": return `${job}${short(a.referee)} ${a.slashed ? "slashed" : "returned"} ${credits(a.weight)}`;
    case "DisputeSettled": return `${job}${short(a.winner)} wins, ${short(a.loser)} slashed (${a.reason || ""})`;
    case "JobFinalized": return `${job}solver paid ${credits(a.solver_paid)}`;
    case "VerifierPaid": return `${job}${short(a.verifier)} +${credits(a.amount)}`;
    default: return job + Object.entries(a).filter(([k]) => k !== "job_id").map(([k, v]) => `${k} ${typeof v === "string" ? short(v) : v}`).join(" · ");
  }
}

function feedItem(e, fresh) {
  return `<li class="${fresh ? "new" : ""}" data-testid="event-item" data-id="${e.id}" data-name="${esc(e.name)}" title="${esc(JSON.stringify(e.args))}">
    <span class="t">${clock(e.seen)}</span><span class="e ${EV_CLASS[e.name] || ""}">${esc(e.name)}</span><span class="a">${esc(describe(e))}</span></li>`;
}

function addEvents(events, fresh) {
  const added = events.filter((e) => e.id > ui.lastEvent);
  if (!added.length) return [];
  ui.lastEvent = added[added.length - 1].id;
  ui.events = ui.events.concat(added).slice(-FEED_MAX);
  const feed = $("feed");
  if (!fresh || feed.children.length === 0) feed.innerHTML = ui.events.slice().reverse().map((e) => feedItem(e, false)).join("");
  else {
    feed.insertAdjacentHTML("afterbegin", added.slice().reverse().map((e) => feedItem(e, true)).join(""));
    while (feed.children.length > FEED_MAX) feed.lastElementChild.remove();
  }
  return added;
}

async function loadFeed() {
  for (let page = 0; page < 40; page++) {  // oldest first, 500 at a time: keep the newest FEED_MAX
    const rows = await get(`/events?after=${ui.lastEvent}&limit=500`);
    addEvents(rows, false);
    if (rows.length < 500) break;
  }
}

// -- live updates -----------------------------------------------------------------------------------

const LOADERS = { header: loadHeader, network: loadNetwork, jobs: loadJobs, swarm: loadSwarm, assist: loadAssist };
const pending = new Set();
let flushTimer = null;

function schedule(...panels) {
  panels.forEach((p) => pending.add(p));
  if (!flushTimer) flushTimer = setTimeout(flush, 250);  // one redraw for a burst of events
}

async function flush() {
  flushTimer = null;
  const todo = [...pending];
  pending.clear();
  await Promise.all(todo.map((p) => LOADERS[p]().catch((err) => console.warn(p, err))));
}

function setConn(state, text) {
  const el = $("conn");
  el.dataset.state = state;
  el.querySelector("span").textContent = text || state;
}

function connect() {
  if (ui.source) ui.source.close();
  setConn("connecting", "connecting…");
  const es = new EventSource(`/stream?after=${ui.lastEvent}`);
  ui.source = es;
  let first = true;
  es.addEventListener("hello", () => {
    setConn("live");
    ui.retry = 1000;
    if (!first) schedule(...Object.keys(LOADERS));
    first = false;
  });
  es.addEventListener("chain", (m) => {
    if (addEvents([JSON.parse(m.data)], true).length) schedule("jobs", "header");
  });
  es.addEventListener("snapshot", (m) => {
    const keys = JSON.parse(m.data).keys || [];
    if (keys.some((k) => k === "network" || k === "peers")) schedule("network");
    if (keys.some((k) => k === "status" || k === "balances")) schedule("header");
  });
  es.addEventListener("logs", () => schedule("swarm", "assist"));
  es.onerror = () => {
    // The browser retries on its own while the state is CONNECTING; a CLOSED stream is reopened here,
    // with `after` the last event drawn, and every panel is read again once it is back.
    setConn("offline", "reconnecting…");
    if (es.readyState === EventSource.CLOSED) {
      es.close();
      setTimeout(() => { loadFeed().catch(() => {}).finally(connect); }, ui.retry);
      ui.retry = Math.min(ui.retry * 2, 15000);
    }
    first = false;
  };
}

async function start() {
  await Promise.all([loadHeader(), loadNetwork(), loadJobs(), loadSwarm(), loadAssist(), loadFeed()]
    .map((p) => p.catch((err) => console.warn(err))));
  connect();
}

start();
