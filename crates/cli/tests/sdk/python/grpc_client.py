"""An a2a-sdk (Python) gRPC client of an agent behind Warden, holding an SVID.

`follow BASE CERT KEY CA`: fetches the agent card from BASE (its gateway URL, over mTLS; or,
with CERT `plain`, its URL at the caller's egress, plaintext),
follows the card's GRPC interface with a channel presenting CERT/KEY and trusting CA, and
calls SendMessage, SendStreamingMessage (noting when each event arrives), GetTask (of its
task and of one that does not exist),
SubscribeToTask and CancelTask. Prints one JSON object of what it saw.

`refused TARGET CERT KEY CA`: one SendMessage to the gRPC TARGET (`host:port`); CERT/KEY `-`
for a caller without a certificate, CERT `plain` for one without TLS (h2c). Prints the error the SDK raised, as its user sees it
(or that the call hung, past 20 s).
"""

import asyncio
import json
import sys
import time

import grpc
import httpx

from a2a.client import ClientConfig, ClientFactory
from a2a.client.card_resolver import A2ACardResolver
from a2a.client.client_factory import minimal_agent_card
from a2a.types.a2a_pb2 import (
    CancelTaskRequest,
    GetTaskRequest,
    Message,
    Part,
    ROLE_USER,
    SendMessageRequest,
    SubscribeToTaskRequest,
    TaskState,
)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def channel_factory(cert, key, ca):
    if cert == "plain":  # h2c with prior knowledge, no TLS at all
        return lambda url: grpc.aio.insecure_channel(url)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=read(ca),
        private_key=None if key == "-" else read(key),
        certificate_chain=None if cert == "-" else read(cert),
    )
    return lambda url: grpc.aio.secure_channel(url, credentials)


def message(text, immediately=False):
    request = SendMessageRequest(
        message=Message(message_id=f"m-{text}-{time.monotonic_ns()}", role=ROLE_USER, parts=[Part(text=text)])
    )
    request.configuration.return_immediately = immediately
    return request


def state(task):
    return TaskState.Name(task.status.state)


async def follow(base, cert, key, ca):
    seen = {}
    # CERT `plain`: an app inside the mesh, calling through its egress without TLS.
    http_cert = None if cert == "plain" else (cert, key)
    async with httpx.AsyncClient(cert=http_cert, verify=False, timeout=10) as http:
        config = dict(
            httpx_client=http,
            grpc_channel_factory=channel_factory(cert, key, ca),
            supported_protocol_bindings=["GRPC"],
        )
        card = await A2ACardResolver(http, base).get_agent_card()
        unary = ClientFactory(ClientConfig(streaming=False, **config)).create(card)
        streaming = ClientFactory(ClientConfig(streaming=True, **config)).create(card)
        seen["card_grpc_urls"] = [
            i.url for i in card.supported_interfaces if i.protocol_binding == "GRPC"
        ]

        # SendMessage.
        [sent] = [event async for event in unary.send_message(message("hello"))]
        seen["send"] = {
            "state": state(sent.task),
            "artifact": sent.task.artifacts[0].parts[0].text if sent.task.artifacts else None,
        }

        # SendStreamingMessage: when each event arrives.
        start, events = time.monotonic(), []
        async for event in streaming.send_message(message("stream")):
            events.append({"at": time.monotonic() - start, "kind": event.WhichOneof("payload")})
        seen["stream"] = events

        # GetTask.
        got = await unary.get_task(GetTaskRequest(id=sent.task.id))
        seen["get"] = {"id_matches": got.id == sent.task.id, "state": state(got)}
        try:
            await unary.get_task(GetTaskRequest(id="no-such-task"))
            seen["get_unknown"] = "found"
        except Exception as error:  # the agent's own NOT_FOUND, through Warden
            seen["get_unknown"] = f"{type(error).__name__}: {error}"

        # SubscribeToTask to a task that waits, then CancelTask: the subscription sees it end.
        [waiting] = [e async for e in unary.send_message(message("wait", immediately=True))]
        task_id = waiting.task.id
        subscription = streaming.subscribe(SubscribeToTaskRequest(id=task_id))
        first = await anext(subscription)
        canceled = await unary.cancel_task(CancelTaskRequest(id=task_id))
        rest = [e.WhichOneof("payload") async for e in subscription]
        seen["subscribe"] = {"first": first.WhichOneof("payload"), "after_cancel": rest}
        seen["cancel"] = state(canceled)
    print(json.dumps(seen))


async def refused(target, cert, key, ca):
    config = ClientConfig(
        streaming=False,
        grpc_channel_factory=channel_factory(cert, key, ca),
        supported_protocol_bindings=["GRPC"],
    )
    client = ClientFactory(config).create(minimal_agent_card(target, ["GRPC"]))

    async def send():
        [_ async for _ in client.send_message(message("hello"))]

    try:
        # A refusal must end the call: a hang is reported as one, not waited out.
        await asyncio.wait_for(send(), timeout=20)
        said = "not refused"
    except asyncio.TimeoutError:
        said = "hung: no answer in 20 s"
    except Exception as error:  # the SDK's own error types
        said = f"{type(error).__name__}: {error}"
    print(json.dumps({"refused": said}))


mode, args = sys.argv[1], sys.argv[2:]
asyncio.run({"follow": follow, "refused": refused}[mode](*args))
