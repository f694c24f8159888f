// An @a2a-js/sdk client of an agent behind Warden, as a user writes one.
//
// `follow BASE BINDING CERT KEY CA`: fetches the agent card from BASE (the agent's URL at the
// gateway over mTLS, or at the caller's egress over http) and follows it — no URL patched —
// over BINDING (JSONRPC or HTTP+JSON) only; calls sendMessage, sendMessageStream (noting when
// each event arrives), getTask and cancelTask (of a task that waits). Prints one JSON object.
//
// `refused BASE CERT KEY CA`: what the SDK's user sees when Warden refuses the caller: the
// card fetch, and a message sent over each binding at BASE's sample paths. Prints one JSON
// object of the errors, as the SDK raised them.
//
// CERT/KEY: the client's SVID (from `warden ca issue`), `-` for none; CA: the bundle the
// gateway's certificate is checked against. A2A_NODE_MODULES: where @a2a-js/sdk is installed.
import { require, svidFetch, textOf, textPart } from "./sdk.mjs";

const { Role, TaskState } = require("@a2a-js/sdk");
const {
  ClientFactory,
  ClientFactoryOptions,
  DefaultAgentCardResolver,
  JsonRpcTransportFactory,
  RestTransportFactory,
} = require("@a2a-js/sdk/client");

function factory(fetchImpl, binding) {
  return new ClientFactory(
    ClientFactoryOptions.createFrom(ClientFactoryOptions.default, {
      transports: [new JsonRpcTransportFactory({ fetchImpl }), new RestTransportFactory({ fetchImpl })],
      preferredTransports: [binding],
      cardResolver: new DefaultAgentCardResolver({ fetchImpl }),
    }),
  );
}

function message(text, returnImmediately = false) {
  return {
    tenant: "",
    message: {
      messageId: `m-${text}-${process.hrtime.bigint()}`,
      contextId: "",
      taskId: "",
      role: Role.ROLE_USER,
      parts: [textPart(text)],
      metadata: undefined,
      extensions: [],
      referenceTaskIds: [],
    },
    configuration: { acceptedOutputModes: [], taskPushNotificationConfig: undefined, returnImmediately },
    metadata: undefined,
  };
}

const stateName = (task) => TaskState[task.status?.state];

async function follow(base, binding, cert, key, ca) {
  const fetchImpl = svidFetch(cert, key, ca);
  // The resolver puts its default path at the host's root; an agent under a path prefix (the
  // gateway's /api/a2a/{ns}/{agent}) is reached the documented way: the full URL, empty path.
  const client = await factory(fetchImpl, binding).createFromUrl(`${base}/.well-known/agent-card.json`, "");
  const card = await client.getAgentCard();
  const seen = { urls: Object.fromEntries(card.supportedInterfaces.map((i) => [i.protocolBinding, i.url])) };
  seen.binding = client.transport?.constructor?.name ?? null;

  const sent = await client.sendMessage(message("hello"));
  seen.send = { state: stateName(sent), artifact: textOf(sent.artifacts?.[0]) || null };

  const start = performance.now();
  const events = [];
  for await (const event of client.sendMessageStream(message("stream"))) {
    events.push({ at: (performance.now() - start) / 1000, kind: event.payload?.$case });
  }
  seen.stream = events;

  const got = await client.getTask({ tenant: "", id: sent.id });
  seen.get = { id_matches: got.id === sent.id, state: stateName(got) };

  const waiting = await client.sendMessage(message("wait", true));
  const canceled = await client.cancelTask({ tenant: "", id: waiting.id, metadata: undefined });
  seen.cancel = stateName(canceled);
  console.log(JSON.stringify(seen));
}

async function refusal(call) {
  try {
    await call();
    return "not refused";
  } catch (error) {
    return `${error.constructor?.name}: ${error.message}`;
  }
}

async function refused(base, cert, key, ca) {
  const fetchImpl = svidFetch(cert, key, ca);
  const card = {
    name: "refused",
    supportedInterfaces: [
      { url: `${base}/a2a/jsonrpc`, protocolBinding: "JSONRPC", protocolVersion: "1.0", tenant: "" },
      { url: `${base}/a2a/rest`, protocolBinding: "HTTP+JSON", protocolVersion: "1.0", tenant: "" },
    ],
    capabilities: { streaming: true },
    skills: [],
    defaultInputModes: [],
    defaultOutputModes: [],
  };
  const seen = {
    card: await refusal(() => new DefaultAgentCardResolver({ fetchImpl }).resolve(`${base}/.well-known/agent-card.json`, "")),
    jsonrpc: await refusal(async () =>
      (await factory(fetchImpl, "JSONRPC").createFromAgentCard(card)).sendMessage(message("hi")),
    ),
    rest: await refusal(async () =>
      (await factory(fetchImpl, "HTTP+JSON").createFromAgentCard(card)).sendMessage(message("hi")),
    ),
  };
  console.log(JSON.stringify(seen));
}

const [mode, ...args] = process.argv.slice(2);
await { follow, refused }[mode](...args);
