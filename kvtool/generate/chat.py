"""Chat sessions: one shared system prompt, then turns that resend every earlier exchange.

Turn k's request is [system, user 1, assistant 1, ..., user k], so each request extends the
previous one by exactly two messages; the completion tokens are those of the reply that the next
turn's request carries as its assistant message.
"""

from __future__ import annotations

from collections.abc import Iterator

from kvtool.generate.text import Text
from kvtool.generate.turns import Turn
from kvtool.generate.vocabulary import COMPANIES


def chat_system_prompt(t: Text) -> str:
    """The system prompt of one chat file (80-200 words)."""
    company = t.choice(COMPANIES)
    head = (
        f"You are the assistant of {company}. Be accurate, concise and friendly; answer in the "
        "language of the user; say so when you do not know."
    )
    return head + " " + t.paragraph(t.randint(80, 200) - len(head.split()))


def _reply(t: Text, words: int) -> str:
    """An assistant answer of about ``words`` words: prose, sometimes a list or a code block."""
    r = t.random()
    if r < 0.2 and words > 60:
        code = "\n".join(t.code_lines(words // 3))
        return f"{t.paragraph(words // 3)}\n\n```python\n{code}\n```\n\n{t.sentence()}"
    if r < 0.45 and words > 50:
        items = "\n".join(f"- {s}" for s in t.sentences(words // 2))
        return f"{t.paragraph(words // 3)}\n\n{items}"
    return t.paragraphs(words)


def chat_session(t: Text, system: dict, turns: int, t0: int) -> Iterator[Turn]:
    """One ``Turn`` per user turn of one chat session starting at ``t0`` (ms)."""
    c, randint = t.choice, t.randint
    history: list[dict] = [system]
    ts = t0
    for turn in range(turns):
        if turn == 0:
            text = f"{t.paragraph(randint(8, 50))} {t.question()}"
        else:
            lead = c(("Thanks.", "That did not work:", "Follow-up:", "Ok, and", "Hmm,", ""))
            text = f"{lead} {t.question()}".strip()
            if t.random() < 0.15:
                text += " " + t.foreign()
        history.append({"role": "user", "content": text})
        words = randint(30, 200)
        reply = _reply(t, words)
        completion = max(20, len(reply.split()) * 4 // 3)
        yield Turn(ts, history.copy(), completion)
        history.append({"role": "assistant", "content": reply})
        ts += randint(15000, 180000)
