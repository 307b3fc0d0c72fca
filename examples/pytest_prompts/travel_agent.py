"""A tiny travel-booking assistant's prompt builder, tested with kvtool's ``prompt_cache`` fixture.

The stable prefix is the system prompt and the tool catalog; each request's own part starts with
the conversation. Nothing here reads a clock or makes up ids: the prefix is the same on every call.
"""

from __future__ import annotations

MODEL = "example-travel-assistant"

SYSTEM_PROMPT = """You are the booking assistant of Example Rail, a European train operator.
Help travellers find connections, book seats and change or cancel tickets. Answer in the
traveller's language; be brief and exact about times, platforms and prices.

## Rules
- Quote prices in euros, including the seat reservation.
- Changes are free until 24 hours before departure; later changes cost 15 euros.
- Never book without the traveller's explicit confirmation of the connection and the price."""

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "search_connections",
            "description": "Find train connections between two stations on a date.",
            "parameters": {
                "type": "object",
                "properties": {
                    "origin": {"type": "string"},
                    "destination": {"type": "string"},
                    "date": {"type": "string", "description": "YYYY-MM-DD"},
                },
                "required": ["origin", "destination", "date"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "book_seat",
            "description": "Book a seat on a connection the traveller confirmed.",
            "parameters": {
                "type": "object",
                "properties": {
                    "connection_id": {"type": "string"},
                    "seat_class": {"type": "string", "enum": ["first", "second"]},
                },
                "required": ["connection_id", "seat_class"],
            },
        },
    },
]


def build_messages(user_message: str, history: list[dict] | None = None) -> list[dict]:
    """The chat messages of one turn: the system prompt, the earlier turns, the new message."""
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        *(history or []),
        {"role": "user", "content": user_message},
    ]
