"""A tiny support agent's prompt builder: the kind of code whose changes `kvtool check` gates.

The stable prefix is the system prompt and the tool catalog; the per-request part starts with the
user's message. Everything here is deterministic on purpose: no clock, no request ids, tools in a
fixed order with their keys in a fixed order.
"""

from __future__ import annotations

SYSTEM_PROMPT = """You are the support assistant of Example Outfitters, an online store for
hiking and camping gear. Answer in the customer's language, be concise and friendly, and never
promise what the policy below does not allow.

## Policy (effective 2024-03-01)
- Returns: unused items within 30 days of delivery, with the order number.
- Refunds go back to the original payment method within 5 business days.
- Warranty: 2 years on tents and backpacks; send a photo of the defect.

## Tools
Look orders up before answering questions about them; open a ticket only when the customer asks
for a return or a warranty claim."""

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup_order",
            "description": "Find an order by its number and return its items and status.",
            "parameters": {
                "type": "object",
                "properties": {"order_number": {"type": "string", "description": "e.g. EO-10442"}},
                "required": ["order_number"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "open_ticket",
            "description": "Open a return or warranty ticket for an order.",
            "parameters": {
                "type": "object",
                "properties": {
                    "order_number": {"type": "string"},
                    "kind": {"type": "string", "enum": ["return", "warranty"]},
                    "note": {"type": "string"},
                },
                "required": ["order_number", "kind"],
            },
        },
    },
]


def build_request(user_message: str, history: list[dict] | None = None) -> dict:
    """The chat-completions body the app sends for one user message."""
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, *(history or [])]
    messages.append({"role": "user", "content": user_message})
    return {"model": "example-outfitters-support", "messages": messages, "tools": TOOLS}
