"""Eviction policies: the registry, the shared contract on random operation sequences (every
registered policy), hand-computed victims for each policy, and Belady's MIN against a
brute-force optimum and every online policy."""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from pathlib import Path

import pytest

from kvtool.errors import OptionError
from kvtool.simulate.policies import INF, POLICIES, Policy, make_policy
from kvtool.simulate.policies.arc import ARC
from kvtool.simulate.policies.belady import Belady
from kvtool.simulate.policies.lfu import LFU
from kvtool.simulate.policies.s3fifo import S3FIFO

NAMES = tuple(POLICIES)
ONLINE = tuple(name for name, info in POLICIES.items() if not info.bound)
DOC = Path(__file__).resolve().parents[1] / "docs" / "simulate.md"


def next_uses(trace: Sequence[int]) -> list[float]:
    """``out[t]``: the index of the next reference to ``trace[t]`` after ``t`` (inf if none)."""
    out: list[float] = [INF] * len(trace)
    last: dict[int, int] = {}
    for t in range(len(trace) - 1, -1, -1):
        out[t] = last.get(trace[t], INF)
        last[trace[t]] = t
    return out


def drive(p: Policy, trace: Sequence[int]) -> tuple[int, list[int | None]]:
    """Run ``trace`` through ``p`` as the engine would (one reference per second, nothing
    pinned); return (misses, victims in order)."""
    misses, victims = 0, []
    for t, (b, nu) in enumerate(zip(trace, next_uses(trace), strict=True)):
        if b in p and p.valid(b, t):
            p.hit(b, t, nu)
            continue
        misses += 1
        if b in p:
            p.remove(b)
        while len(p) >= p.capacity:
            victim = p.evict(set(), t)
            assert victim is not None
            victims.append(victim)
        p.insert(b, t, nu)
    return misses, victims


def letters(s: str) -> list[int]:
    return [ord(c) for c in s]


def check_internal(p: Policy) -> None:
    """Structural invariants of the policies that keep several lists."""
    if isinstance(p, ARC):
        lists = [set(p.t1), set(p.t2), set(p.b1), set(p.b2)]
        assert sum(map(len, lists)) == len(set().union(*lists))  # pairwise disjoint
        assert len(p.t1) + len(p.b1) <= p.capacity
        assert sum(map(len, lists)) <= 2 * p.capacity
        assert 0.0 <= p.p <= p.capacity
    elif isinstance(p, S3FIFO):
        assert not set(p.small) & set(p.main)
        assert set(p.small) | set(p.main) == set(p.freq)
        assert not set(p.ghost) & set(p.freq)
        assert len(p.ghost) <= p.ghosts
        assert all(0 <= f <= 3 for f in p.freq.values())
    elif isinstance(p, LFU | Belady):
        assert len(p.heap) <= 2 * len(p) + 65


def test_registry() -> None:
    known = ("lru", "fifo", "lfu", "s3fifo", "arc", "ttl", "belady", "belady_bypass", "infinite")
    assert set(known) <= set(NAMES)
    assert [info.bound for info in POLICIES.values()] == sorted(
        info.bound for info in POLICIES.values()
    )
    for name, info in POLICIES.items():
        p = make_policy(name, 4, ttl=2.0, unknown_option=1.0)
        assert p.name == info.name == name and type(p) is info.cls and len(p) == 0
        assert info.help and "\n" not in info.help
        # one module per policy, named after it
        assert info.cls.__module__ == f"kvtool.simulate.policies.{name}"
    with pytest.raises(OptionError, match="'nope' is not one of") as err:
        make_policy("nope", 4)
    assert err.value.param == "policy"


def test_docs_table_lists_the_registry() -> None:
    """docs/simulate.md's policy table is the registry: names in order, one-line help each."""
    text = DOC.read_text()
    start = text.index("\n## Policies")
    rows = re.findall(r"^\| `(\w+)` \| (.+) \|$", text[start:].split("\n## ", 2)[1], re.M)
    assert rows == [(name, info.help) for name, info in POLICIES.items()]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("capacity", [1, 2, 3, 10])
def test_contract_random(name: str, capacity: int) -> None:
    rng = random.Random(f"{name}/{capacity}")
    p = make_policy(name, capacity, ttl=3.0)
    universe = range(2 * capacity + 3)
    shadow: set[int] = set()
    now = 0.0

    def random_pinned() -> set[int]:
        q = rng.choice((0.0, 0.3, 0.8, 1.0))
        pinned = {b for b in shadow if rng.random() < q}
        return pinned | {rng.choice(universe)}  # a non-resident id in pinned is harmless

    def evict(pinned: set[int]) -> int | None:
        victim = p.evict(pinned, now)
        if victim is None:
            assert shadow <= pinned, "None while an unpinned block is resident"
        else:
            assert victim in shadow and victim not in pinned
            shadow.remove(victim)
        return victim

    for _ in range(1200):
        now += rng.random()
        r = rng.random()
        if r < 0.6:  # a reference
            b = rng.choice(universe)
            nu = rng.choice((INF, float(rng.randrange(1000))))
            if b in shadow and p.valid(b, now):
                p.hit(b, now, nu)
            else:
                if b in shadow:
                    p.remove(b)
                    shadow.remove(b)
                if p.bypasses and not p.admit(b, now, nu, random_pinned(), rng.randrange(3)):
                    continue  # declined: nothing changes
                if len(shadow) >= p.capacity and evict(random_pinned()) is None:
                    continue
                p.insert(b, now, nu)
                shadow.add(b)
        elif r < 0.75 and shadow:
            b = rng.choice(sorted(shadow))
            p.remove(b)
            shadow.remove(b)
        elif r < 0.9 and name != "infinite":  # Infinite never evicts: it is never full
            evict(random_pinned())
        else:
            assert p.evict(set(shadow), now) is None
        assert len(p) == len(shadow)
        assert all((b in p) == (b in shadow) for b in universe)
        check_internal(p)


# --- hand-computed victims -------------------------------------------------------------------

ABCAD = letters("ABCAD")
A, B, C, D, E = letters("ABCDE")


@pytest.mark.parametrize(("name", "victim"), [("lru", B), ("fifo", A), ("lfu", B)])
def test_abcad(name: str, victim: int) -> None:
    # capacity 3, A B C A D: LRU order B C A -> B; FIFO order A B C -> A;
    # LFU: A freq 2, B and C freq 1, B accessed earlier -> B
    assert drive(make_policy(name, 3), ABCAD) == (4, [victim])


def test_ttl_expiry_and_infinite() -> None:
    # TTL 2 s, one reference per second: A B A C A -> A is reused within 2 s (misses A B C)
    p = make_policy("ttl", 10, ttl=2.0)
    assert drive(p, letters("ABACA")) == (3, [])
    # A B C A: A was last used 3 s earlier -> expired, a miss, nothing evicted
    assert drive(make_policy("ttl", 10, ttl=2.0), letters("ABCA")) == (4, [])
    assert drive(make_policy("infinite", 1), letters("ABCDABCD")) == (4, [])


def test_lfu_pinned_and_ties() -> None:
    p = LFU(3)
    for t, b in enumerate(letters("ABCAB")):
        (p.hit if b in p else p.insert)(b, t)
    # A:2 (last t=3), B:2 (t=4), C:1 -> C, then A (older of the ties), unless pinned
    assert p.evict({C}, 5) == A
    assert p.evict({B, C}, 5) is None
    assert p.evict(set(), 5) == C
    assert len(p) == 1 and B in p
    p.remove(B)
    assert len(p) == 0 and p.evict(set(), 6) is None


def test_belady_hand() -> None:
    # capacity 3, A B C A D B A C: at D (t=4) next uses A->6, B->5, C->7: evict C; then at
    # C (t=7) residents A (inf), B (inf), D (inf): the oldest access among ties is D (t=4)
    misses, victims = drive(Belady(3), letters("ABCADBAC"))
    assert (misses, victims) == (5, [C, D])
    assert drive(make_policy("lru", 3), letters("ABCADBAC"))[1][0] == B
    p = Belady(2)
    p.insert(A, 0, 5)
    p.insert(B, 0, INF)
    assert p.evict({B}, 1) == A
    p.hit(B, 1, 2)
    assert p.evict({B}, 2) is None and p.evict(set(), 2) == B


def test_s3fifo_hand() -> None:
    # capacity 3: S target 1, M target 2, G keeps 2 ids. Queues listed oldest (tail) first.
    p = S3FIFO(3)
    assert (p.small_target, p.ghosts) == (1, 2)
    for b in (A, B, C):
        p.insert(b, 0)  # S=[A B C], all freq 0
    p.hit(A, 1)
    p.hit(A, 1)
    p.hit(B, 1)  # A freq 2, B freq 1
    # evict: |S|=3>1: A freq 2>1 -> M=[A]; |S|=2>1: B freq 1 -> G=[B], evicted
    assert p.evict(set(), 2) == B
    assert (list(p.small), list(p.main), list(p.ghost)) == ([C], [A], [B])
    p.insert(D, 2)  # S=[C D]
    # B again (a ghost): evict first: |S|=2>1: C freq 0 -> G=[B C], evicted
    assert p.evict(set(), 3) == C
    p.insert(B, 3)  # in G: -> M=[A B], G=[C]
    assert (list(p.small), list(p.main), list(p.ghost)) == ([D], [A, B], [C])
    # E: |S|=1 not >1 -> M: A freq 2 -> 1, back to head, M=[B A]; B freq 0 -> evicted
    assert p.evict(set(), 4) == B
    assert p.freq[A] == 1 and list(p.main) == [A]
    p.insert(E, 4)  # S=[D E]
    # C again (a ghost): |S|=2>1: D freq 0 -> G=[C D], evicted; C -> M=[A C], G=[D]
    assert p.evict(set(), 5) == D
    p.insert(C, 5)
    assert (list(p.small), list(p.main), list(p.ghost)) == ([E], [A, C], [D])
    # pinned A, E: M tail A rotates (freq kept) -> M=[C A]; C freq 0 -> evicted
    assert p.evict({A, E}, 6) == C
    assert p.freq[A] == 1
    # now M=[A], S=[E], both pinned: each queue is rotated once, then None
    assert p.evict({A, E}, 7) is None
    assert len(p) == 2 and p.freq[A] == 1 and p.freq[E] == 0
    assert p.evict({A}, 8) == E  # S no longer over target, M all pinned -> S
    assert list(p.ghost) == [D, E]


def test_arc_hand() -> None:
    # capacity 2, p=0; lists LRU first
    p = ARC(2)
    p.insert(A, 0)
    p.insert(B, 0)  # T1=[A B]
    p.hit(A, 1)  # T1=[B] T2=[A]
    assert p.evict(set(), 2) == B  # |T1|=1 > p=0: T1's LRU B -> B1=[B]
    p.insert(C, 2)  # T1=[C]
    assert p.evict(set(), 3) == C  # |T1|=1 > 0 -> B1=[B C]
    p.insert(B, 3)  # ghost hit in B1: p += max(|B2|/|B1| = 0/2, 1) -> 1; T2=[A B], B1=[C]
    assert p.p == 1.0
    assert (list(p.t1), list(p.t2), list(p.b1), list(p.b2)) == ([], [A, B], [C], [])
    assert p.evict(set(), 4) == A  # |T1|=0 not > 1 -> T2's LRU A -> B2=[A]
    p.insert(D, 4)  # T1=[D]; |T1|+|B1| = 2 <= 2, total 4 <= 4: no trim
    assert p.evict(set(), 5) == B  # |T1|=1 not > 1 -> T2's B -> B2=[A B]
    p.insert(E, 5)  # |T1|+|B1| = 2 >= c: drop B1's LRU C; T1=[D E]
    assert (list(p.t1), list(p.t2), list(p.b1), list(p.b2)) == ([D, E], [], [], [A, B])
    assert p.evict(set(), 6) == D  # |T1|=2 > 1 -> B1=[D]
    p.insert(A, 6)  # ghost hit in B2: p -= max(|B1|/|B2| = 1/2, 1) -> 0; T2=[A], B2=[B]
    assert p.p == 0.0
    assert (list(p.t1), list(p.t2), list(p.b1), list(p.b2)) == ([E], [A], [D], [B])
    # pinned: T1 chosen (|T1|=1 > 0) but E is pinned -> fall back to T2's A
    assert p.evict({E}, 7) == A
    assert p.evict({E}, 7) is None
    assert list(p.b2) == [B, A] and len(p) == 1


# --- Belady is the optimum -------------------------------------------------------------------


def brute_min(trace: Sequence[int], k: int) -> int:
    """Misses of MIN, straight from the definition: on a miss with a full cache, drop the page
    whose next reference (scanning the rest of the trace) is farthest, never-again first."""
    cache: set[int] = set()
    misses = 0
    for t, b in enumerate(trace):
        if b in cache:
            continue
        misses += 1
        if len(cache) >= k:
            rest = trace[t + 1 :]

            def distance(x: int, rest: Sequence[int] = rest) -> float:
                return rest.index(x) if x in rest else math.inf

            cache.remove(max(cache, key=distance))
        cache.add(b)
    return misses


@pytest.mark.parametrize("seed", range(6))
def test_belady_optimal(seed: int) -> None:
    rng = random.Random(seed)
    for k in (1, 2, 3, 5):
        pages = rng.randrange(k + 1, 3 * k + 4)
        # a skewed page-reference string, so that frequency and recency both matter
        weights = [1.0 / (i + 1) for i in range(pages)]
        trace = rng.choices(range(pages), weights, k=250)
        opt, _ = drive(Belady(k), trace)
        assert opt == brute_min(trace, k)
        for name in ONLINE:
            assert opt <= drive(make_policy(name, k), trace)[0], name
