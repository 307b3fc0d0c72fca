/* kvtool's simulation kernels in C, compiled when kvtool is installed (no JIT, nothing to
 * compile at run time). Called through ctypes by kvtool.native, which holds the
 * Python side of every signature; ctypes releases the GIL for the length of a call.
 *
 * - kv_run_requests: Engine.run's loop (kvtool/simulate/engine.py) for one tier and one
 *   replica, every policy, any concurrency. Its results equal the Python engine's bit for bit:
 *   the same victims in the same order, and the same float operations in the same order
 *   (compiled with -ffp-contract=off, so no multiply-add is fused). The state layout is
 *   documented in kvtool/simulate/compiled_engine.py; each function names the Python code it mirrors.
 * - kv_first_use_ids: a stream renumbered in order of first use.
 * - kv_stack_maxima: the one-pass LRU curve's kernel (kvtool/simulate/sweep.py).
 * - kv_ideal_hits: the infinite cache's hits per request (simulate's ideal).
 * - kv_families: the prefix families of --sample, from the block tree.
 * - kv_draw: which units a --sample salt keeps, and their random groups.
 * - kv_reuse: each reference's previous one, and the gaps between a block's uses (--sample).
 * - kv_first_through: the first request through each node of the block tree.
 * - kv_sequential_ttft: TTFT one request at a time (the one-pass curve's points).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>

typedef int64_t i64;
typedef int32_t i32;

/* policy codes: compiled_engine.POLICY_CODES; LFU_LISTS is LFU one request at a time */
enum { LRU, FIFO, LFU, ARC, S3FIFO, TTL, INFINITE_CACHE, BELADY, LFU_LISTS };
/* node fields */
enum { NEXT, PREV, WHERE, FREQ, PINS, SEEN, NODE_FIELDS };
#define IN_HEAP FREQ /* LFU and Belady: whether the heap holds b's current key */
/* lists (WHERE values) */
enum { NONE, MAIN, SECOND, GHOST, GHOST2, HELD, N_LISTS };
/* rows of lists[3][N_LISTS]; LFU_LISTS's count lists: heap[f][HEAD|TAIL|UP|DOWN] */
enum { HEAD, TAIL, LEN };
enum { UP = 2, DOWN = 3 };
/* ints */
enum {
    RESIDENT, PINNED, EVICTIONS, UNCACHED, CACHED, WITH_HIT, WARM_EVICTIONS, WARM_UNCACHED,
    CLOCK, HEAP_LEN, RUN_LEN, MARK, LOW, N_INTS
};
/* floats */
enum { PREV_ARRIVAL, LAST_START, ARC_P, N_FLOATS };
#define KEY_SHIFT ((i64)1 << 40) /* a rank's head above, its counter below */

typedef struct {
    int policy;
    i64 capacity;
    i64 n_req;
    i32 *node;
    i64 *rank;
    double *stamp;
    i64 *lists;
    i64 *heap;
    double *run_end;
    i64 *run_idx;
    i64 *ints;
    double *floats;
    const i64 *offsets;
    const i64 *stream;
} State;

#define ND(b, f) s->node[(i64)(b) * NODE_FIELDS + (f)]
#define LS(row, lst) s->lists[(row) * N_LISTS + (lst)]
#define HP(k, c) s->heap[(i64)(k) * 2 + (c)]
#define CT(f, c) s->heap[(i64)(f) * 4 + (c)]

static inline i64 min64(i64 a, i64 b) { return a < b ? a : b; }
static inline i64 max64(i64 a, i64 b) { return a > b ? a : b; }
/* Python's max/min of two floats: the first argument unless the second is strictly beyond */
static inline double maxf(double a, double b) { return b > a ? b : a; }
static inline double minf(double a, double b) { return b < a ? b : a; }

/* -- linked lists (OrderedDicts: first key = HEAD) ------------------------------------- */
/* od[b] = None for a b in no list: b becomes the newest of lst */
static inline void list_append(State *s, int lst, i64 b) {
    i64 t = LS(TAIL, lst);
    ND(b, PREV) = (i32)t;
    ND(b, NEXT) = -1;
    if (t >= 0)
        ND(t, NEXT) = (i32)b;
    else
        LS(HEAD, lst) = b;
    LS(TAIL, lst) = b;
    LS(LEN, lst) += 1;
    ND(b, WHERE) = lst;
}

/* del od[b] from the list that holds b */
static inline void list_unlink(State *s, i64 b) {
    int lst = ND(b, WHERE);
    i64 p = ND(b, PREV), n = ND(b, NEXT);
    if (p >= 0)
        ND(p, NEXT) = (i32)n;
    else
        LS(HEAD, lst) = n;
    if (n >= 0)
        ND(n, PREV) = (i32)p;
    else
        LS(TAIL, lst) = p;
    LS(LEN, lst) -= 1;
    ND(b, WHERE) = NONE;
}

/* the oldest block of lst that no running request pins, unlinked; -1 if none
   (Ordered.evict, ARC._pop_lru) */
static inline i64 pop_unpinned(State *s, int lst) {
    for (i64 b = LS(HEAD, lst); b >= 0; b = ND(b, NEXT)) {
        if (ND(b, PINS) == 0) {
            list_unlink(s, b);
            return b;
        }
    }
    return -1;
}

static inline void drop_oldest(State *s, int lst) { list_unlink(s, LS(HEAD, lst)); }

/* -- binary heaps on (key, block) -------------------------------------------------------- */
static inline i64 heap_push(State *s, i64 size, i64 key, i64 b) {
    i64 k = size;
    while (k > 0) {
        i64 parent = (k - 1) >> 1;
        if (HP(parent, 0) <= key) break;
        HP(k, 0) = HP(parent, 0);
        HP(k, 1) = HP(parent, 1);
        k = parent;
    }
    HP(k, 0) = key;
    HP(k, 1) = b;
    return size + 1;
}

/* remove the smallest entry (read heap[0] first); returns the new size */
static inline i64 heap_pop(State *s, i64 size) {
    size -= 1;
    i64 key = HP(size, 0), b = HP(size, 1), k = 0;
    for (;;) {
        i64 c = 2 * k + 1;
        if (c >= size) break;
        if (c + 1 < size && HP(c + 1, 0) < HP(c, 0)) c += 1;
        if (key <= HP(c, 0)) break;
        HP(k, 0) = HP(c, 0);
        HP(k, 1) = HP(c, 1);
        k = c;
    }
    HP(k, 0) = key;
    HP(k, 1) = b;
    return size;
}

/* Ranked.set_rank(b, head): a fresh unique key; the heap rebuilt from the live keys when stale
   entries outnumber them (ints[RESIDENT] already counts b) */
static void set_rank(State *s, i64 b, i64 head) {
    i64 *ints = s->ints;
    ints[CLOCK] += 1;
    i64 key = head * KEY_SHIFT + ints[CLOCK];
    s->rank[b] = key;
    ND(b, IN_HEAP) = 1;
    ints[HEAP_LEN] = heap_push(s, ints[HEAP_LEN], key, b);
    if (ints[HEAP_LEN] > 2 * ints[RESIDENT] + 64) {
        i64 size = 0;
        for (i64 k = 0; k < ints[HEAP_LEN]; k++) {
            i64 x = HP(k, 1);
            if (ND(x, WHERE) == MAIN && s->rank[x] == HP(k, 0)) {
                HP(size, 0) = HP(k, 0);
                HP(size, 1) = x;
                size++;
            }
        }
        ints[HEAP_LEN] = 0;
        for (i64 k = 0; k < size; k++) /* re-heapify by pushes (the live keys are unique) */
            ints[HEAP_LEN] = heap_push(s, ints[HEAP_LEN], HP(k, 0), HP(k, 1));
    }
}

/* the head of Belady's rank -next_use as a non-negative int: never again (inf) first, then the
   farthest next use */
static inline i64 belady_head(double next_use, i64 n_req) {
    if (isinf(next_use)) return 0;
    return n_req + 1 - (i64)next_use;
}

/* -- LFU_LISTS: a list per count ------------------------------------------------------------ */
/* b becomes the newest block of count f; below: a count with blocks smaller than f and none
   between them (-1: f is the smallest), where f's list joins when it was empty */
static inline void count_append(State *s, i64 b, i64 f, i64 below) {
    i64 t = CT(f, TAIL);
    ND(b, PREV) = (i32)t;
    ND(b, NEXT) = -1;
    CT(f, TAIL) = b;
    if (t >= 0) {
        ND(t, NEXT) = (i32)b;
        return;
    }
    CT(f, HEAD) = b;
    i64 up = below < 0 ? s->ints[LOW] : CT(below, UP);
    if (below < 0)
        s->ints[LOW] = f;
    else
        CT(below, UP) = f;
    CT(f, DOWN) = below;
    CT(f, UP) = up;
    if (up >= 0) CT(up, DOWN) = f;
}

/* b leaves the list of count f; an emptied count leaves the chain of counts */
static inline void count_unlink(State *s, i64 b, i64 f) {
    i64 p = ND(b, PREV), n = ND(b, NEXT);
    if (p >= 0)
        ND(p, NEXT) = (i32)n;
    else
        CT(f, HEAD) = n;
    if (n >= 0)
        ND(n, PREV) = (i32)p;
    else
        CT(f, TAIL) = p;
    if (CT(f, HEAD) < 0) {
        i64 down = CT(f, DOWN), up = CT(f, UP);
        if (down >= 0)
            CT(down, UP) = up;
        else
            s->ints[LOW] = up;
        if (up >= 0) CT(up, DOWN) = down;
    }
}

/* Ranked.evict on the count lists: the oldest unpinned block of the smallest count */
static i64 evict_counted(State *s) {
    for (i64 f = s->ints[LOW]; f >= 0; f = CT(f, UP)) {
        for (i64 b = CT(f, HEAD); b >= 0; b = ND(b, NEXT)) {
            if (ND(b, PINS) == 0) {
                count_unlink(s, b, f);
                ND(b, WHERE) = NONE;
                return b;
            }
        }
    }
    return -1;
}

/* -- the policies' hooks -------------------------------------------------------------------- */
static inline int resident(const State *s, i64 b) {
    int w = ND(b, WHERE);
    return w == MAIN || w == SECOND || w == HELD;
}

/* Policy.hit of each policy class */
static inline void hit(State *s, i64 b, double now, double next_use) {
    switch (s->policy) {
    case LRU:
    case TTL:
        if (s->policy == TTL) s->stamp[b] = now;
        if (ND(b, WHERE) == MAIN) { /* a HELD block joins the list when its pins end */
            list_unlink(s, b);
            list_append(s, MAIN, b);
        }
        break;
    case LFU:
        set_rank(s, b, s->rank[b] / KEY_SHIFT + 1);
        break;
    case LFU_LISTS: {
        i64 f = s->rank[b];
        s->rank[b] = f + 1;
        int alone = CT(f, HEAD) == b && CT(f, TAIL) == b;
        count_unlink(s, b, f);
        /* an emptied count's list would be where f + 1 joins: it joins above what was below f */
        count_append(s, b, f + 1, alone ? CT(f, DOWN) : f);
        break;
    }
    case BELADY:
        set_rank(s, b, belady_head(next_use, s->n_req));
        break;
    case ARC:
        list_unlink(s, b);
        list_append(s, SECOND, b);
        break;
    case S3FIFO:
        ND(b, FREQ) = (i32)min64(ND(b, FREQ) + 1, 3);
        break;
    }
}

/* Policy.insert of each policy class (b is not resident; there is room) */
static inline void insert(State *s, i64 b, double now, double next_use) {
    i64 *ints = s->ints;
    ints[RESIDENT] += 1;
    switch (s->policy) {
    case LRU:
    case TTL:
    case FIFO:
        if (s->policy == TTL) s->stamp[b] = now;
        if (s->policy != FIFO && ND(b, PINS) > 0)
            ND(b, WHERE) = HELD;
        else
            list_append(s, MAIN, b);
        break;
    case LFU:
        ND(b, WHERE) = MAIN;
        set_rank(s, b, 1);
        break;
    case LFU_LISTS:
        ND(b, WHERE) = MAIN;
        s->rank[b] = 1;
        count_append(s, b, 1, -1);
        break;
    case BELADY:
        ND(b, WHERE) = MAIN;
        set_rank(s, b, belady_head(next_use, s->n_req));
        break;
    case INFINITE_CACHE:
        ND(b, WHERE) = MAIN;
        break;
    case ARC: { /* ARC.insert */
        double c = (double)s->capacity;
        double *p = &s->floats[ARC_P];
        int w = ND(b, WHERE);
        if (w == GHOST) {
            *p = minf(c, *p + maxf((double)LS(LEN, GHOST2) / (double)LS(LEN, GHOST), 1.0));
            list_unlink(s, b);
            list_append(s, SECOND, b);
        } else if (w == GHOST2) {
            *p = maxf(0.0, *p - maxf((double)LS(LEN, GHOST) / (double)LS(LEN, GHOST2), 1.0));
            list_unlink(s, b);
            list_append(s, SECOND, b);
        } else {
            if (LS(LEN, MAIN) + LS(LEN, GHOST) >= s->capacity && LS(LEN, GHOST) > 0)
                drop_oldest(s, GHOST);
            i64 res = LS(LEN, MAIN) + LS(LEN, SECOND);
            if (res + LS(LEN, GHOST) + LS(LEN, GHOST2) >= 2 * s->capacity)
                drop_oldest(s, LS(LEN, GHOST2) > 0 ? GHOST2 : GHOST);
            list_append(s, MAIN, b);
        }
        break;
    }
    case S3FIFO: /* S3FIFO.insert */
        ND(b, FREQ) = 0;
        if (ND(b, WHERE) == GHOST) {
            list_unlink(s, b);
            list_append(s, SECOND, b);
        } else {
            list_append(s, MAIN, b);
        }
        break;
    }
}

/* Ranked.evict: the live, unpinned entry of the smallest key. A pinned block's entry is dropped
   rather than pushed back, and pushed again when its last pin ends (release): the same
   victims, without popping every pinned block at every eviction */
static i64 evict_ranked(State *s) {
    i64 *ints = s->ints;
    while (ints[HEAP_LEN] > 0) {
        i64 key = HP(0, 0), b = HP(0, 1);
        ints[HEAP_LEN] = heap_pop(s, ints[HEAP_LEN]);
        if (ND(b, WHERE) != MAIN || s->rank[b] != key) continue; /* stale */
        if (ND(b, PINS) > 0) {
            ND(b, IN_HEAP) = 0;
            continue;
        }
        ND(b, WHERE) = NONE;
        return b;
    }
    return -1;
}

/* S3FIFO.evict, rotation of pinned tails and all-pinned marks included */
static i64 evict_s3fifo(State *s, i64 small_target, i64 ghosts) {
    int small_pinned = 0, main_pinned = 0;
    i64 small_skips = 0, main_skips = 0;
    for (;;) {
        i64 n_small = LS(LEN, MAIN), n_main = LS(LEN, SECOND);
        if (n_small > 0 && !small_pinned
            && (n_small > small_target || n_main == 0 || main_pinned)) {
            i64 b = LS(HEAD, MAIN);
            list_unlink(s, b);
            if (ND(b, PINS) > 0) {
                list_append(s, MAIN, b);
                small_skips += 1;
                small_pinned = small_skips >= LS(LEN, MAIN);
                continue;
            }
            small_skips = 0;
            if (ND(b, FREQ) > 1) {
                list_append(s, SECOND, b);
                main_pinned = 0;
                main_skips = 0;
                continue;
            }
            list_append(s, GHOST, b);
            if (LS(LEN, GHOST) > ghosts) drop_oldest(s, GHOST);
            return b;
        }
        if (n_main > 0 && !main_pinned) {
            i64 b = LS(HEAD, SECOND);
            list_unlink(s, b);
            if (ND(b, PINS) > 0) {
                list_append(s, SECOND, b);
                main_skips += 1;
                main_pinned = main_skips >= LS(LEN, SECOND);
                continue;
            }
            main_skips = 0;
            if (ND(b, FREQ) > 0) {
                ND(b, FREQ) -= 1;
                list_append(s, SECOND, b);
                continue;
            }
            return b;
        }
        return -1;
    }
}

/* Policy.evict(pinned, now) of each policy class: the victim (now non-resident), or -1 when
   every resident block is pinned */
static i64 evict(State *s) {
    i64 v = -1;
    switch (s->policy) {
    case LRU:
    case FIFO:
    case TTL:
        v = pop_unpinned(s, MAIN);
        break;
    case LFU:
    case BELADY:
        v = evict_ranked(s);
        break;
    case LFU_LISTS:
        v = evict_counted(s);
        break;
    case ARC: { /* ARC.evict */
        i64 n_t1 = LS(LEN, MAIN);
        if (n_t1 > 0 && (double)n_t1 > s->floats[ARC_P]) {
            v = pop_unpinned(s, MAIN);
            if (v >= 0) {
                list_append(s, GHOST, v);
            } else {
                v = pop_unpinned(s, SECOND);
                if (v >= 0) list_append(s, GHOST2, v);
            }
        } else {
            v = pop_unpinned(s, SECOND);
            if (v >= 0) {
                list_append(s, GHOST2, v);
            } else {
                v = pop_unpinned(s, MAIN);
                if (v >= 0) list_append(s, GHOST, v);
            }
        }
        break;
    }
    case S3FIFO: {
        i64 small_target = max64(1, s->capacity / 10);
        v = evict_s3fifo(s, small_target, max64(1, s->capacity - small_target));
        break;
    }
    default: /* the infinite cache never evicts */
        v = -1;
    }
    if (v >= 0) s->ints[RESIDENT] -= 1;
    return v;
}

/* Policy.remove: b leaves without a ghost (a stale heap key is skipped later) */
static inline void remove_block(State *s, i64 b) {
    s->ints[RESIDENT] -= 1;
    int p = s->policy;
    if (p == LFU_LISTS) {
        count_unlink(s, b, s->rank[b]);
        ND(b, WHERE) = NONE;
    } else if (p == LFU || p == BELADY || p == INFINITE_CACHE || ND(b, WHERE) == HELD) {
        ND(b, WHERE) = NONE;
    } else {
        list_unlink(s, b);
    }
}

/* -- the engine ------------------------------------------------------------------------------- */
/* Engine._release of request i's blocks, last to first: LRU and TTL count it as a use (HELD
   blocks whose last pin ends join the list's newest end: where every release moves them); the
   other policies' release does nothing */
static void release(State *s, i64 i, double now) {
    const i64 *stream = s->stream;
    int p = s->policy;
    for (i64 q = s->offsets[i + 1] - 1; q >= s->offsets[i]; q--) {
        i64 b = stream[q];
        ND(b, PINS) -= 1;
        if (ND(b, PINS) == 0) s->ints[PINNED] -= 1;
        if ((p == LRU || p == TTL) && resident(s, b)) {
            if (p == TTL) s->stamp[b] = now;
            if (ND(b, PINS) == 0) list_append(s, MAIN, b);
        } else if ((p == LFU || p == BELADY) && ND(b, PINS) == 0 && ND(b, WHERE) == MAIN
                   && ND(b, IN_HEAP) == 0) { /* unpinned: a candidate again */
            ND(b, IN_HEAP) = 1;
            s->ints[HEAP_LEN] = heap_push(s, s->ints[HEAP_LEN], s->rank[b], b);
        }
    }
}

/* pop the running request of the smallest (end, index) into *end, *idx */
static void pop_running(State *s, double *end, i64 *idx) {
    double *re = s->run_end;
    i64 *ri = s->run_idx;
    *end = re[0];
    *idx = ri[0];
    i64 size = s->ints[RUN_LEN] - 1;
    s->ints[RUN_LEN] = size;
    double e = re[size];
    i64 x = ri[size], k = 0;
    for (;;) {
        i64 c = 2 * k + 1;
        if (c >= size) break;
        if (c + 1 < size && (re[c + 1] < re[c] || (re[c + 1] == re[c] && ri[c + 1] < ri[c])))
            c += 1;
        if (e < re[c] || (e == re[c] && x < ri[c])) break;
        re[k] = re[c];
        ri[k] = ri[c];
        k = c;
    }
    re[k] = e;
    ri[k] = x;
}

static void push_running(State *s, double end, i64 idx) {
    double *re = s->run_end;
    i64 *ri = s->run_idx;
    i64 k = s->ints[RUN_LEN];
    s->ints[RUN_LEN] = k + 1;
    while (k > 0) {
        i64 parent = (k - 1) >> 1;
        double pe = re[parent];
        if (pe < end || (pe == end && ri[parent] < idx)) break;
        re[k] = pe;
        ri[k] = ri[parent];
        k = parent;
    }
    re[k] = end;
    ri[k] = idx;
}

/* sum(1 for b in set(mine) if b not in rep.pins) for mine = stream[lo:hi]; each call marks its
   blocks with a fresh number (ints[MARK]) to count each one once */
static i64 new_blocks(State *s, i64 lo, i64 hi) {
    i32 mark = (i32)(++s->ints[MARK]);
    i64 n = 0;
    for (i64 q = lo; q < hi; q++) {
        i64 b = s->stream[q];
        if (ND(b, SEEN) != mark) {
            ND(b, SEEN) = mark;
            if (ND(b, PINS) == 0) n++;
        }
    }
    return n;
}

static inline void release_next(State *s, double *start) {
    double end;
    i64 done;
    pop_running(s, &end, &done);
    release(s, done, end);
    if (start != NULL) *start = maxf(*start, end);
}

/* Engine.run's loop over requests first..last-1 (one tier of room blocks, the policy's
   capacity; concurrency 0: unlimited; next_use NULL unless Belady), continuing from the state
   arrays and leaving it there for the next call. The requests still running at the end are
   not released: nothing counted depends on it. */
void kv_run_requests(
    i64 first, i64 last, i64 policy, i64 room, i64 capacity, double ttl, i64 block_size,
    i64 concurrency, double prefill_tps, double decode_tps, i64 count_from, i64 n_req,
    const i64 *offsets, const i64 *stream, const i64 *n_tokens, const double *arrivals,
    const i64 *output_tokens, const double *next_use, i32 *node, i64 *rank, double *stamp,
    i64 *lists, i64 *heap, double *run_end, i64 *run_idx, i64 *ints, double *floats,
    double *ttft, i64 *cached_per_request) {
    State st = {
        .policy = (int)policy, .capacity = capacity, .n_req = n_req, .node = node,
        .rank = rank, .stamp = stamp, .lists = lists, .heap = heap, .run_end = run_end,
        .run_idx = run_idx, .ints = ints, .floats = floats, .offsets = offsets,
        .stream = stream,
    };
    State *s = &st;
    int is_ttl = policy == TTL;
    for (i64 i = first; i < last; i++) {
        if (i == count_from) { /* what the warm-up evicted is not counted */
            ints[WARM_EVICTIONS] = ints[EVICTIONS];
            ints[WARM_UNCACHED] = ints[UNCACHED];
        }
        double a = arrivals[i];
        double arrival = isnan(a) ? floats[PREV_ARRIVAL] : a;
        floats[PREV_ARRIVAL] = arrival;
        while (ints[RUN_LEN] > 0 && run_end[0] <= arrival) release_next(s, NULL);
        i64 lo = offsets[i], hi = offsets[i + 1], n = n_tokens[i];
        i64 cap = min64(hi - lo, max64(n - 1, 0) / block_size);
        double start = maxf(arrival, floats[LAST_START]);
        if (concurrency > 0) {
            while (ints[RUN_LEN] >= concurrency) release_next(s, &start);
            while (ints[RUN_LEN] > 0 && run_end[0] <= start) release_next(s, NULL);
        }
        /* admission control: a request waits until its blocks fit beside the pinned ones (new
           only matters while a request runs) */
        i64 fresh = ints[RUN_LEN] > 0 ? new_blocks(s, lo, hi) : 0;
        while (ints[RUN_LEN] > 0 && ints[PINNED] + fresh > room) {
            release_next(s, &start);
            fresh = new_blocks(s, lo, hi);
        }
        floats[LAST_START] = start;
        i64 hits = 0;
        for (i64 q = lo; q < lo + cap; q++) { /* Engine._where on the one tier */
            i64 b = stream[q];
            if (resident(s, b)) {
                if (!is_ttl || start - stamp[b] <= ttl) {
                    hits++;
                    continue;
                }
                remove_block(s, b);
            }
            break;
        }
        i64 cached = hits * block_size;
        if (i >= count_from) {
            ints[CACHED] += cached;
            if (hits > 0) ints[WITH_HIT] += 1;
        }
        cached_per_request[i] = cached;
        for (i64 q = lo; q < hi; q++) { /* pinned first */
            i64 b = stream[q];
            if (ND(b, PINS) == 0) {
                ints[PINNED] += 1;
                if ((policy == LRU || is_ttl) && ND(b, WHERE) == MAIN) {
                    list_unlink(s, b); /* out of the list while pinned: HELD */
                    ND(b, WHERE) = HELD;
                }
            }
            ND(b, PINS) += 1;
        }
        for (i64 q = hi - 1; q >= lo; q--) { /* touched last to first */
            i64 b = stream[q];
            double nu = next_use != NULL ? next_use[q] : INFINITY;
            if (resident(s, b) && (!is_ttl || start - stamp[b] <= ttl)) {
                hit(s, b, start, nu);
                continue;
            }
            if (resident(s, b)) remove_block(s, b);
            if (room <= 0) continue; /* Engine._put */
            /* b is not resident here, so _put's hit branch cannot apply */
            int placed = 1;
            while (ints[RESIDENT] >= capacity) {
                i64 victim = evict(s);
                if (victim < 0) {
                    ints[UNCACHED] += 1;
                    placed = 0;
                    break;
                }
                ints[EVICTIONS] += 1;
            }
            if (placed) insert(s, b, start, nu);
        }
        double prefill = (double)(n - cached) / prefill_tps; /* + lower-tier loads: none here */
        ttft[i] = start - arrival + prefill;
        push_running(s, start + prefill + (double)output_tokens[i] / decode_tps, i);
    }
}

/* The stream with ids renumbered 0, 1, ... in order of first use into out; new_id: n_ids
   entries, all -1 on entry. Returns the number of distinct ids. */
i64 kv_first_use_ids(const i64 *stream, i64 n, i64 *new_id, i64 *out) {
    i64 k = 0;
    for (i64 q = 0; q < n; q++) {
        i64 b = stream[q];
        if (new_id[b] < 0) new_id[b] = k++;
        out[q] = new_id[b];
    }
    return k;
}

/* sweep._stack_maxima: out gets the prefix maxima of stack distances (maxima != 0), or the
   distances themselves (maxima == 0), of each request's first caps[i] blocks (INT64_MAX for a
   block not seen before, and for every block after it); tree: len(dense) + 2 zeros; last:
   n_unique entries, all -1. Returns the largest request in blocks. */
i64 kv_stack_maxima(
    i64 n_req, const i64 *offsets, const i64 *dense, i64 n_dense, const i64 *caps, i64 maxima,
    i64 *out, i64 *out_offsets, i32 *tree, i32 *last) {
    i64 size = n_dense + 1;
    i64 stamp = 0, active = 0, w = 0, largest = 0;
    for (i64 i = 0; i < n_req; i++) {
        i64 lo = offsets[i], hi = offsets[i + 1];
        largest = max64(largest, hi - lo);
        i64 cap = caps[i], running = -1, j = 0;
        while (j < cap) {
            i64 at = last[dense[lo + j]];
            if (at < 0) {
                for (; j < cap; j++) out[w++] = INT64_MAX;
                break;
            }
            i64 below = 0;
            for (i64 k = at; k > 0; k -= k & -k) below += tree[k];
            running = maxima ? max64(running, active - below) : active - below;
            out[w++] = running;
            j++;
        }
        out_offsets[i + 1] = w;
        for (i64 q = hi - 1; q >= lo; q--) {
            i64 b = dense[q], at = last[b];
            if (at >= 0) {
                for (i64 k = at; k < size; k += k & -k) tree[k] -= 1;
            } else {
                active++;
            }
            stamp++;
            for (i64 k = stamp; k < size; k += k & -k) tree[k] += 1;
            last[b] = (i32)stamp;
        }
    }
    return largest;
}

/* engine.sequential_ttft: each request's TTFT when requests run one at a time, queueing behind
   the previous one, plus the prefill of its uncached tokens (the same float operations in the
   same order as the Python loop). */
void kv_sequential_ttft(
    i64 n_req, const double *arrivals, const i64 *n_tokens, const i64 *cached,
    const i64 *output_tokens, double prefill_tps, double decode_tps, double *out) {
    double free = -INFINITY, prev = 0.0;
    for (i64 i = 0; i < n_req; i++) {
        double arrival = isnan(arrivals[i]) ? prev : arrivals[i];
        prev = arrival;
        double start = maxf(arrival, free);
        double prefill = (double)(n_tokens[i] - cached[i]) / prefill_tps;
        out[i] = start - arrival + prefill;
        free = start + prefill + (double)output_tokens[i] / decode_tps;
    }
}

/* The units of --sample (kvtool/simulate/sample.py, families). counts[v] enters as 0 and leaves
   as the requests through node v; first[v] enters as n_req and leaves as the first request
   through v. key[i] is request i's unit: the first request through the shallowest node of its
   path that at most cap requests go through (its family: the same whatever the tree's numbering),
   or -1 - i where its last node has more (the trunk) or it has no node. fam: one per node,
   scratch. order: the nodes, each parent before its children (depth_order). */
void kv_families(
    i64 n_nodes, const i64 *parent, const i64 *order, i64 cap, i64 n_req, const i64 *end,
    i64 *counts, i64 *first, i64 *fam, i64 *key) {
    for (i64 i = n_req - 1; i >= 0; i--) {
        i64 v = end[i];
        if (v >= 0) {
            counts[v]++;
            first[v] = i;
        }
    }
    for (i64 q = n_nodes - 1; q >= 0; q--) { /* deepest first: counts and firsts flow up */
        i64 v = order[q], p = parent[v];
        if (p >= 0) {
            counts[p] += counts[v];
            if (first[v] < first[p]) first[p] = first[v];
        }
    }
    for (i64 q = 0; q < n_nodes; q++) { /* shallowest first: families flow down */
        i64 v = order[q], p = parent[v];
        if (counts[v] > cap)
            fam[v] = -1;
        else
            fam[v] = (p < 0 || counts[p] > cap) ? first[v] : fam[p];
    }
    for (i64 i = 0; i < n_req; i++) {
        i64 k = end[i] >= 0 ? fam[end[i]] : -1;
        key[i] = k >= 0 ? k : -1 - i;
    }
}

/* Which units a --sample salt keeps, and in which random group: h = splitmix64(key + salt) (as
   kvtool.traffic.tree.mix64); kept when h <= last; group min(h / width, groups - 1), -1 when
   not kept. */
void kv_draw(
    i64 n, const i64 *keys, uint64_t salt, uint64_t last, uint64_t width, i64 groups,
    i64 *out) {
    for (i64 i = 0; i < n; i++) {
        uint64_t z = (uint64_t)keys[i] + salt;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
        z ^= z >> 31;
        if (z > last) {
            out[i] = -1;
        } else {
            uint64_t g = z / width;
            out[i] = g < (uint64_t)groups ? (i64)g : groups - 1;
        }
    }
}

/* Reuse in a stream of requests (request i's blocks: stream[offsets[i]:offsets[i + 1]], made at
   times[i], never decreasing, of a trace of n_time requests): previous[j], reference j's block's
   previous reference (-1 for none); gaps, for each block, the requests strictly between two
   consecutive requests that use it, before its first and after its last (so the windows that
   miss it: Xiang's footprint, kvtool/simulate/sample.py). Returns the number of gaps (at most
   the references plus the blocks). last, last_t: one per block id, -1 on entry. */
i64 kv_reuse(
    i64 n_req, const i64 *offsets, const i64 *stream, const i64 *times, i64 n_time, i64 n_ids,
    i64 *last, i64 *last_t, i64 *previous, i64 *gaps) {
    i64 g = 0;
    for (i64 i = 0; i < n_req; i++) {
        i64 t = times[i];
        for (i64 j = offsets[i]; j < offsets[i + 1]; j++) {
            i64 b = stream[j], p = last[b];
            previous[j] = p;
            if (p < 0)
                gaps[g++] = t;
            else if (last_t[b] != t)
                gaps[g++] = t - last_t[b] - 1;
            last[b] = j;
            last_t[b] = t;
        }
    }
    for (i64 b = 0; b < n_ids; b++)
        if (last[b] >= 0) gaps[g++] = n_time - 1 - last_t[b];
    return g;
}

/* The first request through each node: on entry first[v] is the first request ending at v
   (n_req where none ends there), on exit the first ending anywhere below v or at it. Deepest
   nodes first, so a node is final before its parent takes it. order: the nodes by depth. */
void kv_first_through(i64 n_nodes, const i64 *parent, const i64 *order, i64 *first) {
    for (i64 q = n_nodes - 1; q >= 0; q--) {
        i64 v = order[q], p = parent[v];
        if (p >= 0 && first[v] < first[p]) first[p] = first[v];
    }
}

/* The infinite cache, one request at a time (the ideal): request i hits its leading blocks, up
   to caps[i], that an earlier request's stream holds: hits_any[i] counts those in any part of
   it (its prompt's blocks, the first prompt[i] of its stream, then its output blocks),
   hits_prompt[i] those among prompt blocks alone. seen: one zero byte per block id. */
void kv_ideal_hits(
    i64 n_req, const i64 *offsets, const i64 *stream, const i64 *prompt, const i64 *caps,
    uint8_t *seen, i64 *hits_any, i64 *hits_prompt) {
    for (i64 i = 0; i < n_req; i++) {
        i64 lo = offsets[i], hi = offsets[i + 1], cap = caps[i], j = 0;
        while (j < cap && (seen[stream[lo + j]] & 2)) j++;
        hits_any[i] = j;
        j = 0;
        while (j < cap && (seen[stream[lo + j]] & 1)) j++;
        hits_prompt[i] = j;
        for (i64 q = lo; q < hi; q++) seen[stream[q]] |= q < lo + prompt[i] ? 3 : 2;
    }
}

static struct PyModuleDef kernels_module = {
    PyModuleDef_HEAD_INIT, "_kernels",
    "kvtool's C kernels; called through ctypes by kvtool.simulate.native.", -1, NULL,
};

PyMODINIT_FUNC PyInit__kernels(void) { return PyModule_Create(&kernels_module); }
