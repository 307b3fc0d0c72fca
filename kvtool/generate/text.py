"""Seeded builders of synthetic text: prose, questions, identifiers, paths and Python-like code.

``Text`` wraps one ``random.Random``; every draw goes through it, in a fixed order per call, so the
same seed yields the same text. The exact sequence of draws of each method is part of the output:
reordering draws, or adding one, changes every generated file.
"""

from __future__ import annotations

import random

from kvtool.generate.vocabulary import (
    ADJS,
    CLASS_DEFS,
    CODE_BLOCKS,
    CODE_HEAD,
    EXTS,
    FOREIGN,
    FUNC_DEFS,
    METHOD_DEFS,
    NOUNS,
    PLURALS,
    QUESTIONS,
    SENTENCES,
    TOPS,
    VERBS,
    Template,
)


class Text:
    """Seeded text builders; all randomness comes from the one ``rng`` given."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.choice = rng.choice
        self.randint = rng.randint
        self.random = rng.random

    def fill(self, template: Template) -> str:
        return template.fill(self.choice)

    def sentence(self, pool: tuple[Template, ...] = SENTENCES) -> str:
        s = self.choice(pool).fill(self.choice)
        return s[0].upper() + s[1:]

    def question(self) -> str:
        return self.sentence(QUESTIONS)

    def sentences(self, words: int, pool: tuple[Template, ...] = SENTENCES) -> list[str]:
        """Sentences until at least ``words`` words."""
        out: list[str] = []
        n = 0
        choice = self.choice
        while n < words:
            t = choice(pool)
            s = t.fill(choice)
            out.append(s[0].upper() + s[1:])
            n += t.words
        return out

    def paragraph(self, words: int) -> str:
        return " ".join(self.sentences(words))

    def paragraphs(self, words: int) -> str:
        """Prose of at least ``words`` words in paragraphs of 40-120 words."""
        out: list[str] = []
        while words > 0:
            n = min(words, self.randint(40, 120))
            out.append(self.paragraph(n))
            words -= n
        return "\n\n".join(out)

    def ident(self) -> str:
        return f"{self.choice(VERBS)}_{self.choice(NOUNS)}"

    def title(self) -> str:
        c = self.choice
        return f"{c(ADJS).capitalize()} {c(NOUNS).capitalize()} {c(PLURALS).capitalize()}"

    def path(self) -> str:
        c = self.choice
        return f"{c(TOPS)}/{c(NOUNS)}/{c(NOUNS)}_{c(NOUNS)}.{c(EXTS)}"

    def hexid(self, bits: int = 96) -> str:
        return f"{self.rng.getrandbits(bits):0{bits // 4}x}"

    def foreign(self) -> str:
        return self.choice(FOREIGN)

    def code_lines(self, words: int) -> list[str]:
        """Python-looking source of about ``words`` words (6 characters each): imports, then
        functions and classes with methods."""
        c, randint, random_ = self.choice, self.randint, self.random
        lines = [c(CODE_HEAD).fill(c) for _ in range(randint(1, 4))]
        limit = 6 * words

        def body(indent: str) -> None:
            for _ in range(randint(1, 4)):
                lines.extend([indent + t.fill(c) for t in c(CODE_BLOCKS)])
            lines.append(f"{indent}return {c(NOUNS)}")

        while sum(map(len, lines)) + len(lines) < limit:
            lines.append("")
            if random_() < 0.35:
                lines.append(c(CLASS_DEFS).fill(c))
                if random_() < 0.5:
                    lines.append(f'    """{self.sentence()}"""')
                for k in range(randint(1, 2)):
                    if k:
                        lines.append("")
                    lines.append("    " + c(METHOD_DEFS).fill(c))
                    body("        ")
            else:
                lines.append(c(FUNC_DEFS).fill(c))
                body("    ")
        return lines
