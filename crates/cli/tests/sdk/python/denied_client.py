"""What an a2a-sdk (Python) user sees when Warden refuses them.

Calls the agent at BASE (its gateway URL) with the client certificate CERT/KEY through the
SDK's own transports — the card resolver, JSON-RPC and HTTP+JSON — and prints, one JSON object,
the exception text each raised, which crates/cli/tests/gateway.rs checks for the caller and
the rule.

Usage: denied_client.py BASE CERT KEY
"""

import asyncio
import json
import sys

import httpx

from a2a.client.card_resolver import A2ACardResolver
from a2a.client.transports import JsonRpcTransport, RestTransport
from a2a.types.a2a_pb2 import AgentCard, Message, Part, SendMessageRequest, ROLE_USER


async def refusal(call):
    try:
        await call
    except Exception as error:  # the SDK's own error types
        return f"{type(error).__name__}: {error}"
    return "not refused"


async def main():
    base, cert, key = sys.argv[1].rstrip("/"), sys.argv[2], sys.argv[3]
    request = SendMessageRequest(
        message=Message(message_id="m1", role=ROLE_USER, parts=[Part(text="hi")])
    )
    async with httpx.AsyncClient(cert=(cert, key), verify=False, timeout=10) as client:
        card = AgentCard(name="refused")
        seen = {
            "card": await refusal(A2ACardResolver(client, base).get_agent_card()),
            "jsonrpc": await refusal(JsonRpcTransport(client, card, base + "/").send_message(request)),
            "rest": await refusal(RestTransport(client, card, base).send_message(request)),
        }
    print(json.dumps(seen))


asyncio.run(main())
