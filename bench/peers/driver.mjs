// Load driver for the automerge-repo peers of Homeroom's relay bench (bench/peers/run.sh).
//
//   node driver.mjs --server js|samod [--quick] --out results/js.json
//
// Starts the server itself (so it can read the server's RSS and CPU from /proc), then runs the
// same workloads as tests/benches/relay.rs with automerge-repo clients (one `Repo` per device,
// WebSocket client adapter, all in this one Node process, on the same 2 cores as the server):
//
// - W1: a teacher posts an entry into the class notebook → all 30 parents have it.
// - W2: N classes; each teacher is a closed-loop writer: post, wait until the server has it
//   (its sync reply carries heads that include the post — the closest thing to Homeroom's
//   `Saved`; NOT durable: neither server fsyncs before answering), repeat.
// - W3: a fresh device fetches a school year: the notebook (E entries, one change each) and
//   30 family lanes (E signatures each, one change each) — time and bytes on the wire.
// - W4: the W1 class (31 devices) reconnects idle: each device is reopened with its saved
//   document — bytes and round trips.
// - W6: N idle devices, each connected and synced to its class notebook — server RSS and CPU
//   per device.
//
// Bytes and round trips of W3/W4 are counted by a TCP proxy in this process: TCP payload both
// ways, including the HTTP upgrade and WebSocket framing (no TCP/IP headers).
import { spawn } from "node:child_process";
import { readFileSync, writeFileSync, mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Worker, isMainThread, parentPort, workerData } from "node:worker_threads";
import { performance } from "node:perf_hooks";
import { Repo } from "@automerge/automerge-repo";
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket";
import * as A from "@automerge/automerge";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const arg = (name, def) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : def;
};
const SERVER = arg("--server", "js");
const QUICK = args.includes("--quick");
const OUT = arg("--out", null);
const W2_LEVELS = (arg("--w2", QUICK ? "2,5" : "10,50,100")).split(",").map(Number).filter(Boolean);
const CFG = QUICK
  ? { w1Posts: 10, w2ParentBudget: 20, w2Secs: 3, w3Entries: 100, w6: Number(arg("--w6", 200)) }
  : { w1Posts: 100, w2ParentBudget: 300, w2Secs: 10, w3Entries: 1000, w6: Number(arg("--w6", 1000)) };
const PARENTS = 30;
const log = (...a) => console.error(`[${SERVER}]`, ...a);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ------------------------------------------------------------------------------------------
// The server process

async function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const p = s.address().port;
      s.close(() => resolve(p));
    });
  });
}

async function startServer(dataDir) {
  const port = await freePort();
  let child;
  if (SERVER === "js") {
    child = spawn(process.execPath, [path.join(HERE, "node_modules/@automerge/automerge-repo-sync-server/src/index.js")], {
      env: { ...process.env, PORT: String(port), DATA_DIR: dataDir },
      stdio: ["ignore", "pipe", "pipe"],
    });
  } else if (SERVER === "samod") {
    const bin = process.env.SAMOD_SERVER_BIN || path.join(HERE, "target/release/samod-bench-server");
    child = spawn(bin, [String(port), dataDir], { stdio: ["ignore", "pipe", "pipe"] });
  } else {
    throw new Error(`unknown --server ${SERVER} (js|samod)`);
  }
  let out = "";
  child.stderr.on("data", (d) => {
    out += d;
  });
  await new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`${SERVER} server did not start in 30 s: ${out}`)), 30000);
    child.stdout.on("data", (d) => {
      out += d;
      if (/Listening on port/.test(out)) {
        clearTimeout(t);
        resolve();
      }
    });
    child.once("exit", (c) => reject(new Error(`${SERVER} server exited (${c}): ${out}`)));
  });
  child.stdout.resume();
  return { child, pid: child.pid, port, url: `ws://127.0.0.1:${port}` };
}

const CLK_TCK = 100;
function snapshot(pid) {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (k) => Number((status.match(new RegExp(`${k}:\\s+(\\d+)`)) || [0, 0])[1]);
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // fields 14 and 15 (utime, stime) are at 11 and 12 after the comm field
  const cpu = (Number(f[11]) + Number(f[12])) / CLK_TCK;
  return { at: performance.now(), cpu, rssKib: kb("VmRSS"), hwmKib: kb("VmHWM") };
}
function usage(a, b) {
  const wall = Math.max((b.at - a.at) / 1000, 1e-9);
  return { rssMib: b.rssKib / 1024, hwmMib: b.hwmKib / 1024, cpuS: b.cpu - a.cpu, cpuPct: (100 * (b.cpu - a.cpu)) / wall };
}

// ------------------------------------------------------------------------------------------
// Byte-counting TCP proxy (W3, W4)

function startProxy(targetPort) {
  const conns = [];
  const server = net.createServer((client) => {
    const c = { up: 0, down: 0, flights: 0, lastDir: null, last: performance.now(), upgraded: false, httpUp: 0, httpDown: 0 };
    conns.push(c);
    const upstream = net.connect(targetPort, "127.0.0.1");
    client.on("data", (d) => {
      c.up += d.length;
      c.last = performance.now();
      c.lastDir = "up";
      upstream.write(d);
    });
    upstream.on("data", (d) => {
      c.down += d.length;
      c.last = performance.now();
      // A round trip: the server answers after the client sent something. The first answer is
      // the HTTP upgrade (101); it is counted separately.
      if (c.lastDir === "up") {
        if (c.upgraded) c.flights += 1;
        else {
          c.upgraded = true;
          // The HTTP upgrade request and the 101 response (up to its blank line).
          c.httpUp = c.up;
          const end = d.indexOf("\r\n\r\n");
          c.httpDown = end >= 0 ? end + 4 : d.length;
        }
      }
      c.lastDir = "down";
      client.write(d);
    });
    const end = () => {
      client.destroy();
      upstream.destroy();
    };
    client.on("error", end);
    upstream.on("error", end);
    client.on("close", end);
    upstream.on("close", end);
  });
  return new Promise((resolve) => {
    server.listen(0, "127.0.0.1", () => {
      resolve({ server, conns, url: `ws://127.0.0.1:${server.address().port}` });
    });
  });
}

// ------------------------------------------------------------------------------------------
// Devices and documents (same shapes and sizes as Homeroom's bench entries)

let devSeq = 0;
function device(url) {
  devSeq += 1;
  return new Repo({
    network: [new WebSocketClientAdapter(url)],
    peerId: `dev-${devSeq}-${Math.random().toString(36).slice(2, 8)}`,
    sharePolicy: async () => true,
  });
}

const hex = (n) => {
  let s = "";
  for (let i = 0; i < n; i++) s += Math.floor(Math.random() * 16).toString(16);
  return s;
};
// tests/benches/relay.rs `entry()`: homework, green, whole class, title, text, signature asked.
function newEntry(title, author, at) {
  return {
    kind: "homework",
    urgency: "green",
    audience: "whole_class",
    title,
    text: "Page 12, exercises 1-4",
    signature_requested: true,
    author,
    posted_at: at,
    revisions: [],
  };
}
// core/client/benches/school_year.rs: a signature of one entry revision by a guardian.
function newSignature(entry, member, at) {
  return { entry, rev: entry, by: member, at };
}

function entryCount(doc) {
  return doc && doc.entries ? Object.keys(doc.entries).length : 0;
}
const sameHeads = (a, b) => a && b && a.length === b.length && a.every((h) => b.includes(h));

// Resolves once the server (any peer with a storage id) reports heads equal to `heads`.
function serverHas(handle, heads, timeoutMs) {
  return new Promise((resolve, reject) => {
    let done = false;
    const finish = (ok) => {
      if (done) return;
      done = true;
      clearTimeout(t);
      handle.off("remote-heads", onRemote);
      ok ? resolve() : reject(new Error(`server did not acknowledge ${handle.documentId} within ${timeoutMs} ms`));
    };
    const onRemote = ({ heads: rh }) => {
      if (sameHeads(rh, heads)) finish(true);
    };
    const t = setTimeout(() => finish(false), timeoutMs);
    handle.on("remote-heads", onRemote);
  });
}

// `repo.find` without an AbortSignal: with one, finds on a fresh repo stalled until the signal
// was about to fire (automerge-repo 2.5.6), so the deadline is a race here instead.
async function findRetry(repo, id, timeoutMs = 60000) {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    try {
      let timer;
      const late = new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error("timeout")), Math.max(1000, deadline - performance.now()));
      });
      try {
        return await Promise.race([repo.find(id), late]);
      } finally {
        clearTimeout(timer);
      }
    } catch (e) {
      if (performance.now() > deadline) throw new Error(`find ${id}: ${e}`);
      await sleep(50);
    }
  }
}

function pct(sorted, q) {
  if (!sorted.length) return 0;
  const rank = Math.min(Math.max(Math.ceil(q * sorted.length), 1), sorted.length);
  return sorted[rank - 1];
}

// A class: teacher + parents, the notebook created by the teacher and known to the server,
// found by every parent.
async function makeClass(url, parents) {
  const teacher = device(url);
  const nb = teacher.create({ entries: {} });
  await serverHas(nb, nb.heads(), 30000);
  const ps = parents > 0 ? Array.from({ length: parents }, () => device(url)) : [];
  const handles = await Promise.all(ps.map((p) => findRetry(p, nb.documentId)));
  return { teacher, nb, parents: ps, handles };
}

async function shutdown(repos) {
  await Promise.all(repos.map((r) => r.shutdown().catch(() => {})));
}

// ------------------------------------------------------------------------------------------
// W1

// The 30 parents run in worker threads (W1_WORKERS, default 2 — like the 2 tokio worker
// threads Homeroom's bench devices share): in one JS thread, 30 repos applying the same sync
// message one after another would measure Node's event loop, not the server.
const W1_WORKERS = Number(arg("--w1-workers", 2));
const nowEpoch = () => performance.timeOrigin + performance.now();

function parentWorker() {
  const { url, docId, count } = workerData;
  (async () => {
    const repos = Array.from({ length: count }, () => device(url));
    const handles = await Promise.all(repos.map((r) => findRetry(r, docId)));
    parentPort.on("message", async (m) => {
      if (m.type === "expect") {
        const times = await Promise.all(
          handles.map(
            (h) =>
              new Promise((resolve) => {
                const t = setTimeout(() => resolve(null), 10000);
                const on = ({ doc }) => {
                  if (doc.entries && doc.entries[m.id]) {
                    clearTimeout(t);
                    h.off("change", on);
                    resolve(nowEpoch());
                  }
                };
                h.on("change", on);
                if (h.doc().entries[m.id]) on({ doc: h.doc() });
              }),
          ),
        );
        parentPort.postMessage({ type: "got", id: m.id, times });
      } else if (m.type === "save") {
        const saved = handles.map((h) => A.save(h.doc()));
        await shutdown(repos);
        parentPort.postMessage({ type: "saved", saved });
      }
    });
    parentPort.postMessage({ type: "ready" });
  })().catch((e) => parentPort.postMessage({ type: "error", error: String(e) }));
}

function ask(w, msg, type) {
  return new Promise((resolve, reject) => {
    const on = (m) => {
      if (m.type === "error") {
        w.off("message", on);
        reject(new Error(m.error));
      } else if (m.type === type && (msg === null || m.id === undefined || m.id === msg.id)) {
        w.off("message", on);
        resolve(m);
      }
    };
    w.on("message", on);
    if (msg) w.postMessage(msg);
  });
}

async function w1(srv) {
  const teacher = device(srv.url);
  const nb = teacher.create({ entries: {} });
  await serverHas(nb, nb.heads(), 30000);
  const workers = [];
  for (let i = 0; i < W1_WORKERS; i++) {
    const count = Math.floor(PARENTS / W1_WORKERS) + (i < PARENTS % W1_WORKERS ? 1 : 0);
    const w = new Worker(fileURLToPath(import.meta.url), { workerData: { role: "parents", url: srv.url, docId: nb.documentId, count }, argv: process.argv.slice(2) });
    workers.push(ask(w, null, "ready").then(() => w));
  }
  const ws = await Promise.all(workers);
  await sleep(300);
  let before = snapshot(srv.pid);
  let lat = [];
  let first = [];
  let local = [];
  let cold = null;
  // Post 1 is a warm-up, as in tests/benches/relay.rs: the class's first post since its
  // devices joined carries one-time costs; it is reported as `cold`, not in the figures.
  for (let k = 1; k <= CFG.w1Posts + 1; k++) {
    if (k === 2) {
      cold = lat[0];
      [lat, first, local] = [[], [], []];
      before = snapshot(srv.pid);
    }
    const id = hex(32);
    const waits = ws.map((w) => ask(w, { type: "expect", id }, "got"));
    await sleep(5); // the workers have registered their listeners
    const t0 = nowEpoch();
    nb.change((d) => {
      d.entries[id] = newEntry(`Post ${k}`, "teacher", Date.now());
    });
    local.push(nowEpoch() - t0);
    const times = (await Promise.all(waits)).flatMap((m) => m.times);
    if (times.some((t) => t === null)) throw new Error(`W1 post ${k}: a parent did not receive it within 10 s`);
    lat.push(Math.max(...times) - t0);
    first.push(Math.min(...times) - t0);
    await sleep(10);
  }
  const after = snapshot(srv.pid);
  const sort = (v) => v.sort((a, b) => a - b);
  const parentSaves = (await Promise.all(ws.map((w) => ask(w, { type: "save" }, "saved")))).flatMap((m) => m.saved);
  await Promise.all(ws.map((w) => w.terminate()));
  return { cls: { teacher, nb, parentSaves }, res: { lat: sort(lat), first: sort(first), local: sort(local), cold, usage: usage(before, after), workers: W1_WORKERS } };
}

// ------------------------------------------------------------------------------------------
// W2

async function w2(srv, n, parents, secs) {
  const setupT = performance.now();
  const classes = [];
  for (let c = 0; c < n; c++) classes.push(await makeClass(srv.url, parents));
  await sleep(500);
  const setup = (performance.now() - setupT) / 1000;
  const before = snapshot(srv.pid);
  const cpu0 = process.cpuUsage();
  const start = performance.now();
  const deadline = start + secs * 1000;
  let stuck = 0;
  const lats = await Promise.all(
    classes.map(async (cls) => {
      const lat = [];
      let k = 0;
      while (performance.now() < deadline) {
        k += 1;
        const id = hex(32);
        const t0 = performance.now();
        cls.nb.change((d) => {
          d.entries[id] = newEntry(`Edit ${k}`, "teacher", Date.now());
        });
        try {
          await serverHas(cls.nb, cls.nb.heads(), 10000);
        } catch {
          stuck += 1;
          return lat;
        }
        lat.push(performance.now() - t0);
      }
      return lat;
    }),
  );
  const elapsed = (performance.now() - start) / 1000;
  const after = snapshot(srv.pid);
  const cpu1 = process.cpuUsage(cpu0);
  // This driver process (all the clients): % of one core. Near 100 % means the single JS
  // thread of the clients, not the server, bounds the run.
  const clientCpuPct = (cpu1.user + cpu1.system) / 1e4 / elapsed;
  const lat = lats.flat().sort((a, b) => a - b);
  await shutdown(classes.flatMap((c) => [c.teacher, ...c.parents]));
  return { classes: n, parentsPerClass: parents, edits: lat.length, secs: elapsed, editsPerSec: lat.length / elapsed, p50: pct(lat, 0.5), p99: pct(lat, 0.99), usage: usage(before, after), clientCpuPct, setup, stuck };
}

// ------------------------------------------------------------------------------------------
// W3: a fresh device fetches a school year

function buildYear(entries, families) {
  const t0 = performance.now();
  const now = 1_760_000_000_000;
  let nb = A.from({ entries: {} }, { actor: "aa".repeat(16) });
  const ids = [];
  for (let i = 0; i < entries; i++) {
    const id = hex(32);
    ids.push(id);
    nb = A.change(nb, (d) => {
      d.entries[id] = {
        ...newEntry("Today", "teacher", now + i * 60000),
        kind: i % 3 === 0 ? "homework" : "daily_note",
        text: "Maths: page 12, exercises 1 to 4. Reading: chapter 3. Bring a coat.",
      };
    });
  }
  const lanes = [];
  for (let f = 0; f < families; f++) {
    let lane = A.from({ signatures: {} }, { actor: (f + 1).toString(16).padStart(32, "0") });
    for (let i = 0; i < entries; i++) {
      lane = A.change(lane, (d) => {
        d.signatures[ids[i]] = newSignature(ids[i], `parent-${f}`, now + i * 60000 + 3600000);
      });
    }
    lanes.push(lane);
  }
  log(`W3: generated ${entries} entries × ${families} families in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  return [nb, ...lanes];
}

async function w3(srv, proxy) {
  const docs = buildYear(CFG.w3Entries, PARENTS);
  const savedBytes = docs.reduce((s, d) => s + A.save(d).length, 0);
  // Upload through one device; wait until the server has every document.
  const up = device(srv.url);
  const handles = docs.map((d) => up.import(A.save(d)));
  await Promise.all(handles.map((h) => serverHas(h, h.heads(), 120000)));
  const want = handles.map((h) => ({ id: h.documentId, heads: h.heads() }));
  await shutdown([up]);
  await sleep(500);
  const before = snapshot(srv.pid);
  const nConn = proxy.conns.length;
  const t0 = performance.now();
  const fresh = device(proxy.url);
  const got = await Promise.all(want.map((w) => findRetry(fresh, w.id, 120000)));
  // find() resolves once the document is available; wait until it has all of the year.
  for (let i = 0; i < got.length; i++) {
    const deadline = performance.now() + 120000;
    while (!sameHeads(got[i].heads(), want[i].heads)) {
      if (performance.now() > deadline) throw new Error("W3: fresh device never got the whole year");
      await sleep(5);
    }
  }
  const elapsed = performance.now() - t0;
  const after = snapshot(srv.pid);
  const nbDoc = got[0].doc();
  const sigs = got.slice(1).reduce((s, h) => s + Object.keys(h.doc().signatures).length, 0);
  await sleep(300);
  const c = proxy.conns[nConn];
  const res = { entries: entryCount(nbDoc), signatures: sigs, docs: got.length, ms: elapsed, bytesUp: c.up, bytesDown: c.down, appBytes: c.up + c.down - c.httpUp - c.httpDown, rts: c.flights, savedBytes, usage: usage(before, after) };
  await shutdown([fresh]);
  return res;
}

// ------------------------------------------------------------------------------------------
// W4: idle reconnect of the W1 class, each device reopened with its saved document

async function w4(srv, proxy, cls) {
  const docId = cls.nb.documentId;
  const saved = [A.save(cls.nb.doc()), ...cls.parentSaves];
  await shutdown([cls.teacher]);
  await sleep(300);
  const before = snapshot(srv.pid);
  const per = [];
  for (const bin of saved) {
    const nConn = proxy.conns.length;
    const t0 = performance.now();
    const r = device(proxy.url);
    const h = r.import(bin, { docId });
    // Quiet: 250 ms without a byte on the connection (as Homeroom's W4).
    for (;;) {
      await sleep(25);
      const c = proxy.conns[nConn];
      if (c && c.upgraded && performance.now() - c.last > 250 && h.isReady()) break;
      if (performance.now() - t0 > 20000) throw new Error("W4: reconnect never went quiet");
    }
    const c = proxy.conns[nConn];
    per.push({ up: c.up, down: c.down, ws: c.up + c.down - c.httpUp - c.httpDown, rts: c.flights, ms: c.last - t0 });
    await shutdown([r]);
  }
  const after = snapshot(srv.pid);
  const parents = per.slice(1);
  const med = (v) => v.slice().sort((a, b) => a - b)[Math.floor(v.length / 2)];
  return {
    teacher: per[0],
    parentMedianBytes: med(parents.map((p) => p.up + p.down)),
    // WebSocket frames only (no HTTP upgrade): the counterpart of Homeroom's protocol frames.
    parentMedianAppBytes: med(parents.map((p) => p.ws)),
    parentRts: [Math.min(...parents.map((p) => p.rts)), Math.max(...parents.map((p) => p.rts))],
    classBytes: per.reduce((s, p) => s + p.up + p.down, 0),
    usage: usage(before, after),
  };
}

// ------------------------------------------------------------------------------------------
// W6: idle connected devices, each synced to its class notebook

async function w6(srv, target) {
  const base = snapshot(srv.pid);
  const classes = Math.ceil(target / PARENTS);
  const notebooks = [];
  const teachers = [];
  for (let c = 0; c < classes; c++) {
    const t = device(srv.url);
    const nb = t.create({ entries: {} });
    await serverHas(nb, nb.heads(), 30000);
    notebooks.push(nb.documentId);
    teachers.push(t);
  }
  await shutdown(teachers);
  await sleep(500);
  const before = snapshot(srv.pid);
  const t0 = performance.now();
  const devices = [];
  let failed = 0;
  for (let i = 0; i < target; i += 50) {
    const batch = [];
    for (let j = i; j < Math.min(i + 50, target); j++) {
      const d = device(srv.url);
      devices.push(d);
      batch.push(findRetry(d, notebooks[Math.floor(j / PARENTS)], 60000).catch(() => (failed += 1)));
    }
    await Promise.all(batch);
  }
  const connectS = (performance.now() - t0) / 1000;
  await sleep(3000);
  const loaded = snapshot(srv.pid);
  await sleep(5000);
  const idle = snapshot(srv.pid);
  const connected = target - failed;
  const res = {
    target,
    connected,
    failed,
    connectS,
    baseRssMib: before.rssKib / 1024,
    emptyRssMib: base.rssKib / 1024,
    rssMib: loaded.rssKib / 1024,
    perDeviceKib: connected ? (loaded.rssKib - before.rssKib) / connected : 0,
    connectCpuS: loaded.cpu - before.cpu,
    cpuMsPerDevice: connected ? (1000 * (loaded.cpu - before.cpu)) / connected : 0,
    idleCpuPct: usage(loaded, idle).cpuPct,
  };
  await shutdown(devices);
  return res;
}

// ------------------------------------------------------------------------------------------

async function main() {
  const tmp = mkdtempSync(path.join(os.tmpdir(), `peers-${SERVER}-`));
  const results = { system: SERVER, quick: QUICK, node: process.version };
  const t = performance.now();
  const stepDir = (name) => path.join(tmp, name);
  try {
    const w2Only = args.includes("--w2-only"); // profiling aid: W2 alone
    // W1 + W4 + W3 share one server.
    let srv = await startServer(stepDir("w1"));
    const proxy = await startProxy(srv.port);
    results.emptyRssMib = snapshot(srv.pid).rssKib / 1024;
    if (!w2Only) {
    const { cls, res } = await w1(srv);
    results.w1 = res;
    log(`W1 done: p50 ${pct(res.lat, 0.5).toFixed(2)} ms, p99 ${pct(res.lat, 0.99).toFixed(2)} ms (${((performance.now() - t) / 1000).toFixed(1)} s)`);
    results.w4 = await w4(srv, proxy, cls);
    log(`W4 done: parent median ${results.w4.parentMedianBytes} B, RTs ${results.w4.parentRts}`);
    results.w3 = await w3(srv, proxy);
    log(`W3 done: ${results.w3.ms.toFixed(0)} ms, ${results.w3.bytesDown + results.w3.bytesUp} B`);
    }
    proxy.server.close();
    srv.child.kill("SIGKILL");
    results.w2 = [];
    for (const n of W2_LEVELS) {
      srv = await startServer(stepDir(`w2-${n}`));
      const parents = Math.min(Math.max(Math.floor(CFG.w2ParentBudget / n), 2), PARENTS);
      const r = await w2(srv, n, parents, CFG.w2Secs);
      results.w2.push(r);
      log(`W2 ${n} classes: ${r.editsPerSec.toFixed(1)} edits/s, p50 ${r.p50.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms; server ${r.usage.cpuPct.toFixed(0)} % of a core, clients (this process) ${r.clientCpuPct.toFixed(0)} %`);
      srv.child.kill("SIGKILL");
    }
    if (!w2Only) {
      srv = await startServer(stepDir("w6"));
      results.w6 = await w6(srv, CFG.w6);
      log(`W6 done: ${results.w6.connected} devices, ${results.w6.perDeviceKib.toFixed(1)} KiB/device`);
      srv.child.kill("SIGKILL");
    }
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  results.totalS = (performance.now() - t) / 1000;
  const json = JSON.stringify(results, null, 1);
  if (OUT) writeFileSync(OUT, json);
  else console.log(json);
  process.exit(0);
}

if (!isMainThread && workerData?.role === "parents") parentWorker();
else main().catch((e) => {
  console.error(`[${SERVER}] FAILED:`, e);
  process.exit(1);
});
