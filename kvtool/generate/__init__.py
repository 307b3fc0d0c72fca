"""Synthetic OpenAI-format gateway logs with exactly known properties (``kvtool generate``).

``generate(kind, sessions, seed, out)`` writes one JSONL record per request (gzip when ``out`` ends
with ``.gz``) and ``<out>.truth.json`` with the ground truth the analyzers must recover
(``GenerationTruth``). Everything comes from ``random.Random`` streams seeded with the kind and
``seed`` (no global or numpy randomness): the same arguments give byte-identical files (gzip
included), whatever PYTHONHASHSEED.

Kinds (``KINDS``):

- ``agent``: one system prompt and one tool catalog shared by every request; each session is a user
  task followed by ``steps`` requests, request k holding k assistant tool calls and k tool
  observations, so each request extends the previous one by exactly two messages.
- ``chat``: one system prompt; sessions of 1-8 turns, turn k resending the k-1 earlier exchanges.
- ``rag``: one system prompt; each request is [system, user] where the user message starts with 1-3
  retrieved documents from a Zipf-popular corpus (most popular first) and ends with a question.
  Requests of a session do not extend each other.

Breakers (agent only, ``breakers=N``): N sessions per cause in ``BREAK_CAUSES`` get one injected
prefix break each (a model switch, tool churn, a schema edit, re-serialized JSON, a volatile date or
id in the system prompt, a system prompt edit, a history edit, a whitespace-only re-render). The
truth lists every request that does not extend its predecessor (the previous request of its
session), with the cause and the path of the first difference (``GenerationTruth.breaks``), by
construction. Session 0 and the sessions not chosen stay exactly as without breakers.
``breaker_mode`` (``BREAKER_MODES``) says how a breaker fires: ``once`` (the default), ``recurring``
(from its step on the request alternates between the broken and the clean form, A, B, A, B: every
call breaks, and a return to a form seen before can reuse only that older request) or ``stable``
(never: the same sessions with the field held clean, the baseline a break's cost is measured
against).

Records are written in non-decreasing timestamp order (sessions interleave). Each session builds its
message list incrementally (messages are shared dicts, never copied) and each record is serialized
once with orjson, so hundreds of MB take seconds.

Modules: ``vocabulary`` (word tables and templates), ``text`` (seeded text builders), ``tools``
(tool catalog and argument values), ``observations`` (tool results), ``agent`` / ``chat`` /
``rag`` (session builders), ``breakers`` (injected prefix breaks), ``turns`` (what a session
yields), ``output`` (records and truth writing), ``generator`` (``generate()`` itself). Nothing
here imports other kvtool packages.
"""

from kvtool.generate.breakers import BREAK_CAUSES, BREAKER_MODES
from kvtool.generate.generator import KINDS, generate
from kvtool.generate.output import GenerationTruth

__all__ = ["BREAKER_MODES", "BREAK_CAUSES", "KINDS", "GenerationTruth", "generate"]
