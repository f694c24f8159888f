// An A2A agent served by @a2a-js/sdk's own Express handlers (JSON-RPC and HTTP+JSON), plaintext
// on 127.0.0.1:$PORT, for `warden up` to start as an agent's app (crates/cli/tests/sdk_up.rs).
//
// The routes are the SDK's sample layout: JSON-RPC at /a2a/jsonrpc, HTTP+JSON under /a2a/rest,
// the card at /.well-known/agent-card.json. What it does, by the text of the message:
// - `stream`: a task that reports `working`, waits PAUSE seconds, then completes, so a client
//   can tell an incremental stream from a buffered one by when the events arrive;
// - `wait`: a task that stays `working` until it is canceled;
// - anything else: a completed task with an artifact `echo: <text>`.
//
// Environment: PORT (set by `warden up`), NAME, PAUSE (seconds, default 1),
// A2A_NODE_MODULES (where @a2a-js/sdk is installed).
import { require, textOf, textPart } from "./sdk.mjs";

const express = require("express");
const { TaskState } = require("@a2a-js/sdk");
const { AgentEvent, DefaultRequestHandler, InMemoryTaskStore } = require("@a2a-js/sdk/server");
const { agentCardHandler, jsonRpcHandler, restHandler, UserBuilder } = require("@a2a-js/sdk/server/express");

const port = Number(process.env.PORT);
const pause = Number(process.env.PAUSE ?? "1") * 1000;
const base = `http://127.0.0.1:${port}`;

const status = (state) => ({ state, message: undefined, timestamp: new Date().toISOString() });

class Executor {
  // taskId → [contextId, release], for the tasks that wait to be canceled.
  waiting = new Map();

  async execute(ctx, bus) {
    const text = textOf(ctx.userMessage);
    const ids = { taskId: ctx.taskId, contextId: ctx.contextId, metadata: undefined };
    bus.publish(
      AgentEvent.task({
        id: ctx.taskId,
        contextId: ctx.contextId,
        status: status(TaskState.TASK_STATE_SUBMITTED),
        artifacts: [],
        history: [ctx.userMessage],
        metadata: undefined,
      }),
    );
    bus.publish(AgentEvent.statusUpdate({ ...ids, status: status(TaskState.TASK_STATE_WORKING) }));
    if (text === "wait") {
      await new Promise((release) => this.waiting.set(ctx.taskId, [ctx.contextId, release]));
      return;
    }
    if (text === "stream") {
      await new Promise((resolve) => setTimeout(resolve, pause));
    }
    bus.publish(
      AgentEvent.artifactUpdate({
        ...ids,
        artifact: {
          artifactId: "echo",
          name: "echo",
          description: "",
          parts: [textPart(`echo: ${text}`)],
          metadata: undefined,
          extensions: [],
        },
        append: false,
        lastChunk: true,
      }),
    );
    bus.publish(AgentEvent.statusUpdate({ ...ids, status: status(TaskState.TASK_STATE_COMPLETED) }));
    bus.finished();
  }

  async cancelTask(taskId, bus) {
    const [contextId, release] = this.waiting.get(taskId) ?? ["", () => {}];
    this.waiting.delete(taskId);
    bus.publish(
      AgentEvent.statusUpdate({ taskId, contextId, metadata: undefined, status: status(TaskState.TASK_STATE_CANCELED) }),
    );
    bus.finished();
    release();
  }
}

const card = {
  name: process.env.NAME ?? "js-agent",
  description: "@a2a-js/sdk agent behind Warden",
  version: "1.0.0",
  supportedInterfaces: [
    { url: `${base}/a2a/jsonrpc`, protocolBinding: "JSONRPC", protocolVersion: "1.0", tenant: "" },
    { url: `${base}/a2a/rest`, protocolBinding: "HTTP+JSON", protocolVersion: "1.0", tenant: "" },
  ],
  provider: undefined,
  capabilities: { streaming: true, pushNotifications: false, extensions: [], extendedAgentCard: false },
  securitySchemes: {},
  securityRequirements: [],
  defaultInputModes: ["text/plain"],
  defaultOutputModes: ["text/plain"],
  skills: [{ id: "echo", name: "echo", description: "echoes", tags: ["echo"], examples: [], inputModes: [], outputModes: [], securityRequirements: [] }],
  signatures: [],
};

const handler = new DefaultRequestHandler(card, new InMemoryTaskStore(), new Executor());
const app = express();
app.use("/.well-known/agent-card.json", agentCardHandler({ agentCardProvider: handler }));
app.use("/a2a/jsonrpc", jsonRpcHandler({ requestHandler: handler, userBuilder: UserBuilder.noAuthentication }));
app.use("/a2a/rest", restHandler({ requestHandler: handler, userBuilder: UserBuilder.noAuthentication }));
app.listen(port, "127.0.0.1", () => console.log(`listening on ${base}`));
