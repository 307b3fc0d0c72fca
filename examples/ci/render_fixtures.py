"""Render the support agent's prompts for a fixed set of inputs as `kvtool check` fixtures.

    python render_fixtures.py > fixtures/support.jsonl

One JSON object per line: a stable fixture id and the request body the app would send.
"""

from __future__ import annotations

import json
import sys

from support_agent import build_request

INPUTS = {
    "order-status": ("Where is my order EO-10442?", None),
    "return": ("I want to return the tent from order EO-10442, it is unused.", None),
    "follow-up": (
        "Thanks! Can I also get a refund to my card?",
        [
            {"role": "user", "content": "I want to return the tent from order EO-10442."},
            {"role": "assistant", "content": "I opened return ticket R-311 for the tent."},
        ],
    ),
}


def main() -> None:
    for fixture_id, (message, history) in INPUTS.items():
        record = {"id": fixture_id, "request": build_request(message, history)}
        sys.stdout.write(json.dumps(record, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
