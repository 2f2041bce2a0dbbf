// Node module hook for the bench's automerge-repo CLIENTS only (never the servers):
// automerge-repo's DocSynchronizer throttles outgoing sync messages per document
// (`syncDebounceRate = 100` ms, not settable through the Repo constructor). A closed-loop writer
// then cannot post more than ~10 edits/s whatever the server does, so the bench sets the
// client-side rate from AM_CLIENT_SYNC_THROTTLE_MS (default here: 0) to measure the servers,
// not the client library. The servers (JS sync server, samod) run exactly as shipped.
// Used as: node --import ./client-throttle-hook.mjs driver.mjs ...
import { register } from "node:module";

register(
  "data:text/javascript," +
    encodeURIComponent(`
const ms = ${JSON.stringify(process.env.AM_CLIENT_SYNC_THROTTLE_MS ?? "0")};
export async function load(url, context, next) {
  const r = await next(url, context);
  if (url.endsWith("/automerge-repo/dist/synchronizer/DocSynchronizer.js") && !url.includes("sync-server/node_modules")) {
    const src = String(r.source);
    if (!src.includes("syncDebounceRate = 100;")) throw new Error("client-throttle-hook: DocSynchronizer changed; update the hook");
    return { ...r, source: src.replace("syncDebounceRate = 100;", "syncDebounceRate = " + Number(ms) + ";") };
  }
  return r;
}
`),
);
