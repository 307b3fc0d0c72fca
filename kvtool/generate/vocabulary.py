"""Word tables, sentence and code templates, and the fixed strings the synthetic text draws from.

Everything here is an immutable module constant (tuples, frozensets): the tables' contents and
order are part of the output, since the generators pick from them by index with a seeded
``random.Random``. Changing, adding or reordering an entry changes every generated file.

A template such as ``"%D %N %S."`` is compiled once into a ``Template``: each ``%X`` slot is a
table (``SLOTS``) that ``Template.fill`` picks one entry from, left to right, one draw per slot.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


def plural(noun: str) -> str:
    """The English plural of ``noun`` (also the third person singular of a verb)."""
    if noun.endswith(("s", "x", "z", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


NOUNS = _words(
    """account agent alert answer approach archive argument array batch benchmark branch buffer
    budget build bundle cache call channel chart check client cluster column command comment commit
    component config connection constraint container context contract counter customer dashboard
    dataset deadline default deployment detail device diagram document domain draft driver endpoint
    engine entry error estimate event example experiment export feature field file filter flag
    folder form format function gateway graph handler header history host image index input
    instance interface invoice item job key label latency layer layout library limit line link list
    loader log lookup manager map market meeting memory message method metric migration model module
    monitor network node note object offer option order output owner package page panel parameter
    parser partner path pattern payload payment permission pipeline plan platform plugin policy pool
    port prefix price problem process product profile project prompt property proposal provider
    query queue quota rate reader record region registry release report repository request resource
    response result review role route rule runner sample schedule schema scope screen script section
    segment sensor server service session setting shard signal snapshot source spec stage state step
    storage stream string summary supplier table tag target task team template tenant test thread
    threshold ticket timeout token tool topic trace transaction update upload user value vendor
    version view volume warning window worker workflow"""
)
NOUN_SET = frozenset(NOUNS)
PLURALS = tuple(plural(n) for n in NOUNS)
VERBS = _words(
    """accept add adjust allocate analyze apply archive assign avoid build cache calculate change
    check clean collect compare compile configure confirm connect contain convert copy create debug
    define delete deliver deploy describe detect disable document download drop enable encode
    ensure estimate evaluate expand export extend extract fetch filter fix flush format generate
    handle ignore import improve include index inspect install load lock log manage measure merge
    migrate monitor move normalize notify open optimize parse patch plan prepare process publish
    read rebuild record reduce refresh register reject release remove rename render repair replace
    report request reset resolve restart restore retry return review rewrite route run sample save
    scan schedule search send serialize skip sort split start store submit summarize support sync
    test track transform trigger update upgrade upload validate verify watch write"""
)
VERBS3 = tuple(plural(v) for v in VERBS)  # third person singular follows the plural rule
ADJS = _words(
    """active available basic broken careful clean clear common complete consistent critical
    current custom daily detailed different direct duplicate early empty entire existing expensive
    external fast final flexible frequent full general global heavy helpful hidden high important
    incorrect initial internal large late legacy limited local long low main manual minor missing
    modern monthly native new normal obvious old optional original partial previous primary private
    public quick rare recent regional related reliable remote required safe secondary separate
    serious shared short simple single slow small specific stable stale standard strict strong
    temporary typical unexpected unique unused upstream urgent useful valid weekly"""
)
ADVS = _words(
    """again also always carefully currently directly eventually first frequently immediately
    instead later manually now often only quickly rarely recently regularly still usually"""
)
DETS = ("the", "the", "the", "the", "this", "each", "our", "every", "that", "any", "your")
PDETS = ("the", "the", "these", "our", "your", "all", "those", "many", "some")
PREPS = _words(
    "in on for from with into after before during across within without under over about between "
    "through behind"
)
MODALS = ("should", "can", "must", "will", "may", "might", "could", "would")
CONJS = ("and", "but", "so", "because", "while", "although", "when")
LEADS = (
    "Usually", "Currently", "Eventually", "Recently", "Often", "Later", "Now", "Sometimes",
    "In practice", "By default",
)  # fmt: skip
NUMS = tuple(str(n) for n in range(2, 1000))
TYPES = ("str", "int", "float", "bool", "dict[str, Any]", "list[str]", "Path", "bytes")
DEFAULTS = ("None", "0", "False", "True", '""', "1024", "30", "0.5", "()")
EXCS = ("ValueError", "KeyError", "RuntimeError", "TypeError", "TimeoutError", "OSError")
MODULES = (
    "os", "re", "json", "time", "logging", "hashlib", "asyncio", "itertools", "functools",
    "pathlib", "typing", "dataclasses", "collections", "contextlib", "subprocess", "datetime",
)  # fmt: skip
CLASSES = tuple(n.capitalize() for n in NOUNS)

SLOTS: dict[str, tuple[str, ...]] = {
    # prose
    "D": DETS, "Q": PDETS, "A": ADJS, "N": NOUNS, "P": PLURALS, "V": VERBS, "S": VERBS3,
    "R": PREPS, "B": ADVS, "L": LEADS, "M": MODALS, "C": CONJS, "#": NUMS,
    # code
    "n": NOUNS, "v": VERBS, "K": CLASSES, "T": TYPES, "F": DEFAULTS, "E": EXCS, "m": MODULES,
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Template:
    """A compiled template: ``head``, then per slot one table entry followed by a literal.

    ``words`` is the template's word count (slots count as one word), used to size prose."""

    head: str
    parts: tuple[tuple[tuple[str, ...], str], ...]  # (slot table, literal after it)
    words: int

    @classmethod
    def compile(cls, template: str) -> Template:
        """``'%D %N %S.'`` -> its head, its (slot table, literal) parts and its word count."""
        head, *rest = template.split("%")
        parts = tuple((SLOTS[p[0]], p[1:]) for p in rest)
        return cls(head, parts, len(template.split()))

    def fill(self, choice: Callable[[Sequence[str]], str]) -> str:
        """The text with each slot replaced by ``choice(table)``, slots left to right."""
        return self.head + "".join([choice(table) + lit for table, lit in self.parts])


def _compile_all(*templates: str) -> tuple[Template, ...]:
    return tuple(Template.compile(t) for t in templates)


SENTENCES = _compile_all(
    "%D %A %N %S %D %N %R %D %N.",
    "%D %N %S %D %A %N.",
    "We %M %V %D %N %R %D %A %N.",
    "If %D %N %S %D %N, %D %N %M %V %D %A %N.",
    "%D %N %R %D %N is %A, %C %D %N is %B %A.",
    "You %M %V %D %A %N before %D %N %S %D %N.",
    "This %S %D %N %B, which %S %D %A %N %R %D %N.",
    "Most %P %V %D %A %N %R %D %N.",
    "There are %# %A %P %R %D %N.",
    "Please %V %D %N and %V %D %A %N.",
    "%D %N is %A because %Q %P are %A.",
    "%L, %D %N %S %D %N %R %D %A %N.",
    "Every %N %S at most %# %P per %N.",
    "%D %A %N %M %V %D %N %C %Q %P %V %B.",
    "Our %P %V %D %A %N %B %R %D %N.",
    "It %S %D %N only when %D %N is %A.",
)
QUESTIONS = _compile_all(
    "How %M I %V %D %A %N %R %D %N?",
    "What is the best way to %V %D %N %R %D %A %N?",
    "Why does %D %N %V %D %N when %D %N %S %Q %P?",
    "Can you explain how %D %N %S %Q %P?",
    "Is it %A to %V %D %N %R %D %N?",
    "Which %N %M we %V first if %D %N is %A?",
    "How many %P %M %D %A %N %V %R %D %N?",
    "What happens to %Q %P when %D %N %S %D %A %N?",
    "Should I %V %D %N or %V %D %A %N instead?",
)
# Code: blocks of statements (nested lines carry their relative indent), indented by the caller.
CODE_BLOCKS = tuple(
    _compile_all(*block)
    for block in (
        ('%n = self.%n.get("%n", %F)',),
        ("if %n is None:", '    raise %E(f"%N %S %D %N: {%n}")'),
        ("for %n in self.%n:", "    %n.append(%v_%n(%n, %n=%F))"),
        ("# %D %N %S %D %A %N",),
        ('logger.debug("%v %n", extra={"%n": %n})',),
        ("%n: %T = %v_%n(%n)",),
        ("with self._%n_lock:", "    self._%n[%n] = %n"),
        ("%n = [%n for %n in %n if %n.%n]",),
        ('assert %n >= %F, "%A %N"',),
        ("try:", "    %n = %m.%v(%n)", "except %E as exc:", '    raise %E("%v %n") from exc'),
        ("if not %n:", "    return %F"),
        ("%n += len(%n)",),
        ("self.%n = %n",),
    )
)
CODE_LINES = tuple(line for block in CODE_BLOCKS for line in block)
FUNC_DEFS = _compile_all(
    "def %v_%n(%n: %T, %n: %T = %F) -> %T:",
    "async def %v_%n(%n: %T, *, %n: %T = %F) -> %T:",
)
METHOD_DEFS = _compile_all(
    "def %v_%n(self, %n: %T) -> %T:",
    "async def %v(self, %n: %T, *, timeout: float = %F) -> %T:",
    "def _%v(self) -> None:",
    "def __init__(self, %n: %T, %n: %T = %F) -> None:",
)
CLASS_DEFS = _compile_all("class %K%K:", "class %K%K(%K%K):")
CODE_HEAD = _compile_all(
    "import %m",
    "from %m import %K",
    "from .%n import %K%K, %v_%n",
    "from ..%n import %n",
)
NOTES = _compile_all(
    "Let me %V %D %N first.",
    "I will check %D %N next.",
    "The %N looks %A; next I will %V %D %N.",
    "Now I'll %V %D %A %N.",
    "That explains the %A %N. Let me %V %D %N.",
    "Running the %P again to confirm.",
)

# Short non-English lines and emoji sprinkled into observations (written for this generator).
FOREIGN = (
    "注意：缓存配置已更新，请重新启动服务。",
    "错误：无法连接到数据库，正在重试（第 3 次）",
    "说明：该字段已弃用，请改用新的参数。",
    "テストはすべて成功しました ✅",
    "設定ファイルが見つかりません。パスを確認してください。",
    "キャッシュの有効期限は五分です。",
    "Résumé : la requête a échoué après trois tentatives.",
    "Größe der Datei überschreitet das Limit für Übertragungen.",
    "¿Está seguro de que desea continuar con la migración?",
    "Atenção: o serviço será reiniciado às 18h, não há ação necessária.",
    "캐시가 비어 있습니다. 다시 시도하세요.",
    "Zażółć gęślą jaźń — test kodowania znaków zakończony.",
    "🚀 deploy finished in 42s",
    "⚠️ deprecated option, será eliminada en la próxima versión",
    "✨ all checks green 🎉",
    "🔥 hot path detected → consider caching 💡",
)
PEOPLE = (
    "José Álvarez", "Zoë Lindqvist", "Łukasz Nowak", "François Dubois", "Søren Holm",
    "Chen Wei", "Sato Yuki", "Priya Raman", "Amara Okafor", "Mateo Rossi", "Hana Kim",
    "Ingrid Bäcklund",
)  # fmt: skip
COMPANIES = (
    "Northwind Labs", "Bluefin Analytics", "Cobalt Freight", "Larkspur Health", "Tidewater Energy",
    "Quillon Systems", "Marigold Retail", "Granite Ledger",
)  # fmt: skip
AGENT_NAMES = ("Atlas", "Forge", "Pilot", "Kestrel", "Orbit", "Tern", "Juniper", "Sable")
EXTS = ("py", "py", "py", "ts", "go", "rs", "yaml", "md", "toml", "json")
TOPS = ("src", "src", "lib", "app", "tests", "pkg", "services", "tools")
