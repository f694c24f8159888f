"""An a2a-sdk (Python) client of an agent behind Warden, as a user writes one: it fetches the
agent card from BASE and follows it — no URL patched — over one binding.

Usage: http_client.py BASE BINDING CERT KEY CA
  BASE     the agent's URL: at the gateway (https, mTLS) or at the caller's egress (http)
  BINDING  JSONRPC or HTTP+JSON: the only binding the client is allowed to pick from the card
  CERT KEY the client's SVID (from `warden ca issue`); `-` for none (plain http to an egress)
  CA       the trust bundle the gateway's certificate is checked against (`-` for none)

Calls SendMessage, SendStreamingMessage (noting when each event arrives), GetTask and
CancelTask (of a task that waits), and prints one JSON object of what it saw.

Names under `.localhost` resolve to loopback, as RFC 6761 asks and systemd-resolved does;
glibc without nss-myhostname does not, so this client does it itself (the agents' own host
names at the gateway are `{agent}.{namespace}.a2a.localhost`).
"""

import asyncio
import json
import socket
import ssl
import sys
import time

import httpx

from a2a.client import ClientConfig, ClientFactory
from a2a.client.card_resolver import A2ACardResolver
from a2a.types.a2a_pb2 import (
    CancelTaskRequest,
    GetTaskRequest,
    Message,
    Part,
    ROLE_USER,
    SendMessageRequest,
    TaskState,
)


_getaddrinfo = socket.getaddrinfo


def _loopback_for_localhost(host, *args, **kwargs):
    name = host.decode() if isinstance(host, bytes) else host
    if isinstance(name, str) and name.rstrip(".").endswith(".localhost"):
        host = "127.0.0.1"
    return _getaddrinfo(host, *args, **kwargs)


socket.getaddrinfo = _loopback_for_localhost


def tls(cert, key, ca):
    """Checks the gateway's chain against CA. SVIDs name a SPIFFE ID, not a host name, so
    the host name is not checked (the SPIFFE way is the URI SAN, which httpx cannot check)."""
    if ca == "-":
        return True
    context = ssl.create_default_context(cafile=ca)
    context.check_hostname = False
    if cert != "-":
        context.load_cert_chain(cert, key)
    return context


def message(text, immediately=False):
    request = SendMessageRequest(
        message=Message(
            message_id=f"m-{text}-{time.monotonic_ns()}", role=ROLE_USER, parts=[Part(text=text)]
        )
    )
    request.configuration.return_immediately = immediately
    return request


def state(task):
    return TaskState.Name(task.status.state)


async def follow(base, binding, cert, key, ca):
    seen = {}
    async with httpx.AsyncClient(verify=tls(cert, key, ca), timeout=20) as http:
        card = await A2ACardResolver(http, base).get_agent_card()
        seen["urls"] = {i.protocol_binding: i.url for i in card.supported_interfaces}
        config = dict(httpx_client=http, supported_protocol_bindings=[binding])
        unary = ClientFactory(ClientConfig(streaming=False, **config)).create(card)
        streaming = ClientFactory(ClientConfig(streaming=True, **config)).create(card)

        [sent] = [event async for event in unary.send_message(message("hello"))]
        seen["send"] = {
            "state": state(sent.task),
            "artifact": sent.task.artifacts[0].parts[0].text if sent.task.artifacts else None,
        }

        start, events = time.monotonic(), []
        async for event in streaming.send_message(message("stream")):
            events.append({"at": time.monotonic() - start, "kind": event.WhichOneof("payload")})
        seen["stream"] = events

        got = await unary.get_task(GetTaskRequest(id=sent.task.id))
        seen["get"] = {"id_matches": got.id == sent.task.id, "state": state(got)}

        [waiting] = [e async for e in unary.send_message(message("wait", immediately=True))]
        canceled = await unary.cancel_task(CancelTaskRequest(id=waiting.task.id))
        seen["cancel"] = state(canceled)
    print(json.dumps(seen))


asyncio.run(follow(*sys.argv[1:]))
