"""An A2A agent served by a2a-sdk's own Starlette routes (JSON-RPC and HTTP+JSON), plaintext
on 127.0.0.1:$PORT, for `warden up` to start as an agent's app (crates/cli/tests/sdk_up.rs).

The routes are laid out as the SDK's own usage example mounts them: JSON-RPC at `/`, the
HTTP+JSON routes at the root (`/message:send`, `/tasks/{id}` …), the card at
`/.well-known/agent-card.json`; JSONRPC_PATH and REST_PATH (environment) move them.

What it does, by the text of the message it receives:
- `stream`: a task that reports `working`, waits PAUSE seconds, then completes, so a client
  can tell an incremental stream from a buffered one by when the events arrive;
- `wait`: a task that stays `working` until it is canceled;
- anything else: a completed task with an artifact `echo: <text>`.

Environment: PORT (set by `warden up`), NAME, PAUSE (seconds, default 1), JSONRPC_PATH
(default `/`), REST_PATH (default ``).
"""

import os

import uvicorn
from starlette.applications import Starlette

from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import (
    create_agent_card_routes,
    create_jsonrpc_routes,
    create_rest_routes,
)
from a2a.server.tasks import InMemoryTaskStore
from a2a.types.a2a_pb2 import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
)

from echo_executor import Executor


def main() -> None:
    port = int(os.environ["PORT"])
    name = os.environ.get("NAME", "py-agent")
    pause = float(os.environ.get("PAUSE", "1"))
    rpc_path = os.environ.get("JSONRPC_PATH", "/")
    rest_path = os.environ.get("REST_PATH", "").rstrip("/")
    base = f"http://127.0.0.1:{port}"
    card = AgentCard(
        name=name,
        description="a2a-sdk (Python) agent behind Warden",
        version="1.0.0",
        supported_interfaces=[
            AgentInterface(url=base + rpc_path, protocol_binding="JSONRPC", protocol_version="1.0"),
            AgentInterface(url=base + rest_path, protocol_binding="HTTP+JSON", protocol_version="1.0"),
        ],
        capabilities=AgentCapabilities(streaming=True),
        skills=[AgentSkill(id="echo", name="echo", description="echoes", tags=["echo"])],
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
    )
    handler = DefaultRequestHandler(
        agent_executor=Executor(pause), task_store=InMemoryTaskStore(), agent_card=card
    )
    routes = [
        *create_agent_card_routes(card),
        *create_jsonrpc_routes(handler, rpc_url=rpc_path),
        *create_rest_routes(handler, path_prefix=rest_path),
    ]
    uvicorn.run(Starlette(routes=routes), host="127.0.0.1", port=port, log_level="warning")


main()
