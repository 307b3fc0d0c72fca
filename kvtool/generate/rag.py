"""RAG sessions: [system, user] requests whose user message starts with retrieved documents.

The corpus (at least 20 documents) has Zipf-like popularity (weight ``1 / (rank + 1) ** 1.1``);
each question retrieves 1-3 distinct documents, most popular first, then asks. Requests of a
session do not extend each other; only the system message is shared by every request.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass

from kvtool.generate.text import Text
from kvtool.generate.turns import Turn
from kvtool.generate.vocabulary import COMPANIES


@dataclass(frozen=True)
class RagCorpus:
    """The system prompt and documents of one RAG file.

    ``docs[i]`` is ``'[doc-N] Title\\nbody'`` with N = i + 1, in popularity order;
    ``cumulative[i]`` is the sum of the popularity weights of ``docs[:i + 1]``."""

    system_prompt: str
    docs: list[str]
    cumulative: list[float]


def rag_corpus(t: Text, sessions: int) -> RagCorpus:
    """The corpus of a file of ``sessions`` sessions: max(20, sessions // 2) documents."""
    company = t.choice(COMPANIES)
    system = (
        f"You are the documentation assistant of {company}. Answer the question using only the "
        "context documents; cite them as [doc-N]. If the context does not contain the answer, "
        "say that you could not find it. " + t.paragraph(t.randint(30, 80))
    )
    docs = []
    for i in range(max(20, sessions // 2)):
        docs.append(f"[doc-{i + 1}] {t.title()}\n{t.paragraphs(t.randint(200, 700))}")
    weights = [1.0 / (r + 1) ** 1.1 for r in range(len(docs))]
    cum, total = [], 0.0
    for w in weights:
        total += w
        cum.append(total)
    return RagCorpus(system, docs, cum)


def rag_session(
    t: Text, system: dict, corpus: RagCorpus, questions: int, t0: int
) -> Iterator[Turn]:
    """One ``Turn`` per question of one RAG session starting at ``t0`` (ms)."""
    docs, cum = corpus.docs, corpus.cumulative
    ts = t0
    total = cum[-1]
    for _ in range(questions):
        k = min(t.randint(1, 3), len(docs))
        picked: set[int] = set()
        while len(picked) < k:
            picked.add(min(bisect.bisect_right(cum, t.random() * total), len(docs) - 1))
        context = "\n\n".join(docs[i] for i in sorted(picked))  # most popular (rank 0) first
        user = {"role": "user", "content": f"Context:\n{context}\n\nQuestion: {t.question()}"}
        yield Turn(ts, [system, user], t.randint(40, 400))
        ts += t.randint(20000, 300000)
