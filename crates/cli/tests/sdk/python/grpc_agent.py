"""An A2A agent served by a2a-sdk's own gRPC server (the A2A 1.0 gRPC binding), plaintext on
ADDR, for crates/cli/tests/grpc.rs to put behind `warden sidecar` and the gateway.

What it does, by the text of the message it receives:
- `stream`: a task that reports `working`, waits PAUSE seconds, then completes, so a client
  can tell an incremental stream from a buffered one by when the events arrive;
- `wait`: a task that stays `working` until it is canceled;
- anything else: a completed task with an artifact `echo: <text>`.

Usage: grpc_agent.py ADDR PAUSE; without them (as `warden up` starts it), 127.0.0.1:$PORT and
$PAUSE (default 1).
"""

import asyncio
import os
import sys

import grpc

from a2a.server.request_handlers import DefaultRequestHandler, GrpcHandler
from a2a.server.tasks import InMemoryTaskStore
from a2a.types import a2a_pb2_grpc
from a2a.types.a2a_pb2 import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
)

from echo_executor import Executor


async def main() -> None:
    if len(sys.argv) > 2:
        addr, pause = sys.argv[1], float(sys.argv[2])
    else:
        addr, pause = f"127.0.0.1:{os.environ['PORT']}", float(os.environ.get("PAUSE", "1"))
    card = AgentCard(
        name="grpc-specialist",
        description="a2a-sdk gRPC agent behind Warden",
        version="1.0.0",
        supported_interfaces=[
            AgentInterface(url=addr, protocol_binding="GRPC", protocol_version="1.0")
        ],
        capabilities=AgentCapabilities(streaming=True),
        skills=[AgentSkill(id="echo", name="echo", description="echoes", tags=["echo"])],
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
    )
    handler = DefaultRequestHandler(
        agent_executor=Executor(pause), task_store=InMemoryTaskStore(), agent_card=card
    )
    server = grpc.aio.server()
    a2a_pb2_grpc.add_A2AServiceServicer_to_server(GrpcHandler(handler), server)
    server.add_insecure_port(addr)
    await server.start()
    print("listening", flush=True)
    await server.wait_for_termination()


asyncio.run(main())
