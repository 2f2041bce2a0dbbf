// Prints ONE table comparing Homeroom (durable, and with durability off) with the
// automerge-repo sync server and samod, from the JSON files bench/peers/run.sh wrote.
//
//   node report.mjs results/homeroom.json results/homeroom-nofsync.json results/js.json results/samod.json
//
// Ratios are Homeroom (durable) against the better of the two peers on that row; the goals of
// issue 8 are ≥ 10× their throughput, ≤ 1/5 of their p99 and ≤ 1/4 of their memory per device.
import { readFileSync, existsSync } from "node:fs";

const [hrPath, hrNoPath, jsPath, samodPath] = process.argv.slice(2);
const load = (p) => (p && existsSync(p) ? JSON.parse(readFileSync(p, "utf8")) : null);
const hr = load(hrPath);
const hrNo = load(hrNoPath);
const js = load(jsPath);
const sm = load(samodPath);
const systems = [hr, hrNo, js, sm];

function pct(sorted, q) {
  if (!sorted || !sorted.length) return null;
  const v = sorted.slice().sort((a, b) => a - b);
  const rank = Math.min(Math.max(Math.ceil(q * v.length), 1), v.length);
  return v[rank - 1];
}
const fmt = (v, d = 1) => (v === null || v === undefined || Number.isNaN(v) ? "–" : Number(v).toFixed(d));
const kb = (b) => (b === null || b === undefined ? null : b / 1000);

// rows: [label, getter, decimals, better ("low"|"high"), goal factor or null]
const rows = [];
rows.push(["W1 post → all 30 parents, p50 ms", (s) => pct(s?.w1?.lat, 0.5), 1, "low", null]);
rows.push(["W1 post → all 30 parents, p99 ms", (s) => pct(s?.w1?.lat, 0.99), 1, "low", 1 / 5]);
rows.push(["W1 post → first parent, p50 ms", (s) => pct(s?.w1?.first, 0.5), 1, "low", null]);
rows.push(["W1 the class's first post (warm-up), ms", (s) => s?.w1?.cold, 1, "low", null]);
const levels = [...new Set(systems.flatMap((s) => (s?.w2 ?? []).map((r) => r.classes)))].sort((a, b) => a - b);
for (const n of levels) {
  const at = (s) => (s?.w2 ?? []).find((r) => r.classes === n);
  rows.push([`W2 ${n} classes: edits/s (acked)`, (s) => at(s)?.editsPerSec, 1, "high", 10]);
  rows.push([`W2 ${n} classes: p99 ms`, (s) => at(s)?.p99, 1, "low", 1 / 5]);
  rows.push([`W2 ${n} classes: server CPU ms per acked edit`, (s) => (at(s)?.edits ? (1000 * at(s).usage.cpuS) / at(s).edits : null), 2, "low", null]);
}
// The same W2 with Homeroom's clients storage-less too (hand-driven sync engines in memory,
// still signing and verifying), as the peers' clients are: this measures the servers, not
// 400 durable devices sharing the 2 cores. The peers' columns repeat their W2 figures.
const lightLevels = [...new Set((hr?.w2Light ?? []).map((r) => r.classes))].sort((a, b) => a - b);
for (const n of lightLevels) {
  const at = (s) => (s?.system === "homeroom" ? s?.w2Light ?? [] : s?.w2 ?? []).find((r) => r.classes === n);
  rows.push([`W2 ${n} classes, storage-less clients: edits/s`, (s) => at(s)?.editsPerSec, 1, "high", 10]);
  rows.push([`W2 ${n} classes, storage-less clients: p99 ms`, (s) => at(s)?.p99, 1, "low", 1 / 5]);
  rows.push([`W2 ${n} classes, storage-less: server CPU ms/edit`, (s) => (at(s)?.edits ? (1000 * at(s).usage.cpuS) / at(s).edits : null), 2, "low", null]);
}
rows.push(["W3 fresh device fetches the year, ms", (s) => s?.w3?.ms, 0, "low", null]);
rows.push(["W3 bytes on the wire, KB", (s) => (s?.w3 ? kb(s.w3.bytesUp + s.w3.bytesDown) : null), 1, "low", null]);
rows.push(["W3 protocol bytes (no handshake/upgrade), KB", (s) => kb(s?.w3?.appBytes), 1, "low", null]);
rows.push(["W4 idle reconnect, wire KB per parent (median)", (s) => kb(s?.w4?.parentMedianBytes), 2, "low", null]);
// Over TCP for everyone: Homeroom's TLS-over-TCP fallback (no QUIC Initial padding) against
// the peers' WebSocket (the same figure as the row above for them).
rows.push(["W4 the same over TCP (HR: TLS fallback), KB", (s) => kb(s?.system === "homeroom" ? s?.w4?.tcp?.parentMedianBytes : s?.w4?.parentMedianBytes), 2, "low", null]);
rows.push(["W4 protocol bytes per parent (median), B", (s) => s?.w4?.parentMedianAppBytes, 0, "low", null]);
rows.push(["W4 idle reconnect, round trips per parent", (s) => (s?.w4 ? s.w4.parentRts[1] : null), 0, "low", null]);
rows.push(["W4 idle reconnect, KB for the class of 31", (s) => kb(s?.w4?.classBytes), 1, "low", null]);
rows.push(["server RSS per connected device, KiB", (s) => (s?.w6?.connected ? s.w6.perDeviceKib : null), 1, "low", 1 / 4]);
// Over TCP for everyone: devices on Homeroom's TLS-over-TCP fallback against the peers'
// WebSocket devices (the same figure as the row above for them).
const w6Tcp = (s) => (s?.system === "homeroom" ? s?.w6Tcp : s?.w6);
rows.push(["the same over TCP (HR: TLS fallback), KiB", (s) => (w6Tcp(s)?.connected ? w6Tcp(s).perDeviceKib : null), 1, "low", 1 / 4]);
rows.push(["server CPU per device connect+sync, ms", (s) => (s?.w6?.connected ? s.w6.cpuMsPerDevice : null), 2, "low", null]);
rows.push(["devices in the memory run", (s) => s?.w6?.connected || null, 0, null, null]);
rows.push(["server RSS empty, MiB", (s) => s?.emptyRssMib, 1, "low", null]);

const head = ["measure", "Homeroom", "HR no-fsync", "am-repo JS", "samod", "HR ÷ best peer", "goal"];
const table = [head];
for (const [label, get, d, better, goal] of rows) {
  const vals = systems.map((s) => (s ? get(s) : null));
  const [h, , j, m] = vals;
  const peers = [j, m].filter((v) => v !== null && v !== undefined && !Number.isNaN(v));
  let ratio = "–";
  let g = "";
  if (better && h !== null && h !== undefined && peers.length) {
    const best = better === "high" ? Math.max(...peers) : Math.min(...peers);
    if (best > 0) {
      const r = h / best;
      ratio = `${r >= 10 ? r.toFixed(0) : r >= 1 ? r.toFixed(1) : r.toFixed(2)}×`;
      if (goal) {
        const met = better === "high" ? r >= goal : r <= goal;
        g = `${better === "high" ? "≥" : "≤"} ${goal >= 1 ? goal + "×" : "1/" + Math.round(1 / goal)}: ${met ? "met" : "NOT met"}`;
      }
    }
  }
  table.push([label, ...vals.map((v) => fmt(v, d)), ratio, g]);
}
const widths = head.map((_, i) => Math.max(...table.map((r) => String(r[i]).length)));
const line = (r) => "| " + r.map((c, i) => (i === 0 ? String(c).padEnd(widths[i]) : String(c).padStart(widths[i]))).join(" | ") + " |";
console.log(line(table[0]));
console.log("|" + widths.map((w, i) => (i === 0 ? "-".repeat(w + 2) : "-".repeat(w + 1) + ":")).join("|") + "|");
for (const r of table.slice(1)) console.log(line(r));
const quick = systems.some((s) => s?.quick) || (hr && hr.w3 && hr.w3.entries < 1000);
console.log(
  `\n${quick ? "QUICK run (small sizes: W1 10 posts, W2 2/5 classes × 3 s, W3 100 entries, W6 200 devices) — for a smoke test, not for figures. " : ""}` +
    "Same machine, 2 cores shared by the server and all client processes. Acked: Homeroom = the relay's Saved, after an fsync " +
    "(no fsync in the no-fsync column); peers = the server's sync reply carrying the new heads (in memory, nothing durable). " +
    "Homeroom runs over QUIC+TLS with ed25519-signed changes and roster access checks; the peers over plain WebSocket, unsigned, no access control. " +
    "Bytes: Homeroom = UDP payload incl. the QUIC/TLS handshake (TCP payload incl. the TLS handshake on the W4-over-TCP row; the memory-over-TCP row runs its devices on that fallback); peers = TCP payload incl. the HTTP upgrade. See docs/benchmarks.md.",
);
