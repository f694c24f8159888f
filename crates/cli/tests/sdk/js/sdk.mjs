// Loads @a2a-js/sdk from the node_modules that scripts/install-sdk-deps.sh installs outside
// the clone (A2A_NODE_MODULES), for the test agent and client beside this file.
import { createRequire } from "node:module";
import path from "node:path";

const modules = process.env.A2A_NODE_MODULES;
if (!modules) {
  throw new Error("A2A_NODE_MODULES must name the node_modules holding @a2a-js/sdk");
}
export const require = createRequire(path.join(modules, "warden-sdk-tests.cjs"));

/** A text part, in the SDK's 1.0 shape. */
export function textPart(text) {
  return { content: { $case: "text", value: text }, metadata: undefined, filename: "", mediaType: "text/plain" };
}

/** The text of a message's parts. */
export function textOf(message) {
  return (message?.parts ?? [])
    .map((p) => (p.content?.$case === "text" ? p.content.value : ""))
    .join("");
}

import dns from "node:dns";
import fs from "node:fs";
import http from "node:http";
import https from "node:https";
import { Readable } from "node:stream";

/**
 * A `fetch` for the SDK's transports that presents the client's SVID (CERT/KEY, `-` for none)
 * and checks the gateway's chain against CA. Node's own fetch takes no client certificate
 * without undici, which the SDK does not ship. SVIDs name a SPIFFE ID, not a host, so the
 * host name is not checked. Plain `http:` URLs (an egress) go without TLS. Names under
 * `.localhost` resolve to loopback, as RFC 6761 asks (glibc without nss-myhostname does not).
 */
export function svidFetch(cert, key, ca) {
  const tls = {
    ca: ca === "-" ? undefined : fs.readFileSync(ca),
    cert: cert === "-" ? undefined : fs.readFileSync(cert),
    key: key === "-" ? undefined : fs.readFileSync(key),
    checkServerIdentity: () => undefined,
  };
  const lookup = (host, options, callback) =>
    host.replace(/\.$/, "").endsWith(".localhost")
      ? options.all
        ? callback(null, [{ address: "127.0.0.1", family: 4 }])
        : callback(null, "127.0.0.1", 4)
      : dns.lookup(host, options, callback);
  const agents = {
    "https:": new https.Agent({ ...tls, keepAlive: true, lookup }),
    "http:": new http.Agent({ keepAlive: true, lookup }),
  };
  return (input, init = {}) =>
    new Promise((resolve, reject) => {
      const url = new URL(typeof input === "string" || input instanceof URL ? input : input.url);
      const headers = Object.fromEntries(new Headers(init.headers ?? input.headers ?? {}));
      const client = url.protocol === "https:" ? https : http;
      const request = client.request(
        url,
        { method: init.method ?? "GET", headers, agent: agents[url.protocol], signal: init.signal ?? undefined },
        (response) => {
          const out = new Headers();
          for (const [name, value] of Object.entries(response.headers)) {
            for (const v of [value].flat()) if (v !== undefined) out.append(name, v);
          }
          const empty = [204, 304].includes(response.statusCode) || init.method === "HEAD";
          resolve(
            new Response(empty ? null : Readable.toWeb(response), {
              status: response.statusCode,
              statusText: response.statusMessage,
              headers: out,
            }),
          );
        },
      );
      request.on("error", reject);
      request.end(init.body ?? undefined);
    });
}
