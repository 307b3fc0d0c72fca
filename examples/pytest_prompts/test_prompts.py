"""The assistant's prompts keep their cached prefix: each render is compared with its committed
baseline in __prompt_baselines__/ (run pytest with --kvtool-update-baselines to accept a change)."""

from __future__ import annotations

from travel_agent import MODEL, TOOLS, build_messages

QUESTION = "Is there a morning train from Vienna to Munich on 2025-05-10?"
ANSWER = "Yes: RJX 62 leaves Vienna at 07:30 and arrives in Munich at 11:28."


def test_first_turn(prompt_cache):
    messages = build_messages(QUESTION)
    prompt_cache.check("first-turn", messages, tools=TOOLS, model=MODEL)


def test_follow_up(prompt_cache):
    history = [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": ANSWER}]
    messages = build_messages("Book it in second class, please.", history)
    prompt_cache.check("follow-up", messages, tools=TOOLS, model=MODEL)
