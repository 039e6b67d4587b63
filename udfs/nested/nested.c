/* Nested data: lists in and out, a list of structs, and an aggregate that makes a list. */
#include "wasmudf.h"

/* In-place heapsorts: ascending doubles (NaN after every number) and int64s. */
#define HEAPSORT(NAME, T, LESS)                                                               \
    static void NAME##_sift(T *v, uint32_t root, uint32_t n) {                                \
        for (;;) {                                                                            \
            uint32_t child = 2 * root + 1;                                                    \
            if (child >= n) return;                                                           \
            if (child + 1 < n && LESS(v[child], v[child + 1])) child++;                       \
            if (!LESS(v[root], v[child])) return;                                             \
            T t = v[root]; v[root] = v[child]; v[child] = t;                                  \
            root = child;                                                                     \
        }                                                                                     \
    }                                                                                         \
    static void NAME(T *v, uint32_t n) {                                                      \
        for (uint32_t i = n / 2; i-- > 0;) NAME##_sift(v, i, n);                              \
        for (uint32_t end = n; end-- > 1;) {                                                  \
            T t = v[0]; v[0] = v[end]; v[end] = t;                                            \
            NAME##_sift(v, 0, end);                                                           \
        }                                                                                     \
    }
#define DOUBLE_LESS(a, b) ((a) != (a) ? 0 : (b) != (b) ? 1 : (a) < (b))
#define INT_LESS(a, b) ((a) < (b))
HEAPSORT(sort_doubles, double, DOUBLE_LESS)
HEAPSORT(sort_int64s, int64_t, INT_LESS)

/* The non-NULL elements of a list, copied into the arena (0 and failed when out of memory). */
#define NON_NULL(NAME, T, TOKEN)                                                              \
    static T *NAME(wasmudf_list xs, uint32_t *n) {                                            \
        T *out = (T *)(uintptr_t)wasmudf_alloc(xs.len * sizeof(T) + 1, 8);                    \
        *n = 0;                                                                               \
        if (!out) {                                                                           \
            wasmudf_fail("out of memory");                                                    \
            return 0;                                                                         \
        }                                                                                     \
        for (uint32_t i = 0; i < xs.len; i++)                                                 \
            if (wasmudf_list_valid(xs, i)) out[(*n)++] = wasmudf_list_get(TOKEN, xs, i);      \
        return out;                                                                           \
    }
NON_NULL(non_null_doubles, double, float64)
NON_NULL(non_null_int64s, int64_t, int64)

static double median_of(wasmudf_list xs) {
    uint32_t n;
    double *v = non_null_doubles(xs, &n);
    if (!v || n == 0) {
        wasmudf_set_null();
        return 0;
    }
    sort_doubles(v, n);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

WASMUDF_SCALAR(median_of, float64, "median of the non-NULL elements; NULL when there are none", list(float64))

static wasmudf_list top_k(wasmudf_list xs, int32_t k) {
    uint32_t n;
    int64_t *v = non_null_int64s(xs, &n);
    if (!v || k <= 0) return wasmudf_list_of(v, 0);
    sort_int64s(v, n);
    uint32_t take = (uint32_t)k < n ? (uint32_t)k : n;
    for (uint32_t i = 0; i < take / 2; i++) { /* the largest first */
        int64_t t = v[n - 1 - i]; v[n - 1 - i] = v[n - take + i]; v[n - take + i] = t;
    }
    return wasmudf_list_of(v + n - take, take);
}

WASMUDF_SCALAR(top_k, list(int64), "the k largest non-NULL elements, largest first", list(int64), int32)

static bool ascii_space(char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

static wasmudf_list split_words(wasmudf_str s) {
    wasmudf_str *words = (wasmudf_str *)(uintptr_t)wasmudf_alloc((s.len / 2 + 1) * sizeof(wasmudf_str), 4);
    uint32_t n = 0;
    if (!words) {
        wasmudf_fail("out of memory");
        return wasmudf_list_of(0, 0);
    }
    for (uint32_t i = 0; i < s.len;) {
        while (i < s.len && ascii_space(s.ptr[i])) i++;
        uint32_t start = i;
        while (i < s.len && !ascii_space(s.ptr[i])) i++;
        if (i > start) words[n++] = wasmudf_str_of(s.ptr + start, i - start);
    }
    return wasmudf_list_of(words, n);
}

WASMUDF_SCALAR(split_words, list(utf8), "split at runs of ASCII whitespace", utf8)

/* bbox: a list of points in, a struct of four bounds out, a whole batch at a time. A point
 * counts when it and both its coordinates are non-NULL. */
static int32_t bbox(const wasmudf_column *args, uint32_t nargs, wasmudf_column *out) {
    if (nargs != 1) return 1;
    const wasmudf_column *lists = &args[0];
    const wasmudf_column *points = WASMUDF__PTR(const wasmudf_column, lists->values);
    const wasmudf_column *lat = wasmudf_field(points, 0), *lon = wasmudf_field(points, 1);
    const uint32_t *offsets = WASMUDF__PTR(const uint32_t, lists->offsets);
    wasmudf_column *bounds[4];
    for (int f = 0; f < 4; f++) bounds[f] = wasmudf_field(out, f);
    out->null_count = 0;
    for (uint32_t r = 0; r < out->length; r++) {
        double b[4] = {0, 0, 0, 0}; /* min_lat, min_lon, max_lat, max_lon */
        uint32_t seen = 0;
        if (wasmudf_valid(lists, r))
            for (uint32_t p = offsets[r]; p < offsets[r + 1]; p++) {
                if (!wasmudf_valid(points, p) || !wasmudf_valid(lat, p) || !wasmudf_valid(lon, p)) continue;
                double y = wasmudf_get(float64, lat, p), x = wasmudf_get(float64, lon, p);
                if (!seen++) { b[0] = b[2] = y; b[1] = b[3] = x; continue; }
                if (y < b[0]) b[0] = y;
                if (x < b[1]) b[1] = x;
                if (y > b[2]) b[2] = y;
                if (x > b[3]) b[3] = x;
            }
        if (!seen) wasmudf_set_null_at(out, r);
        for (int f = 0; f < 4; f++) wasmudf_set(float64, bounds[f], r, b[f]);
    }
    return 0;
}

WASMUDF_SCALAR_BATCH(bbox, "struct<min_lat: float64, min_lon: float64, max_lat: float64, max_lon: float64>",
                     "bounds of the non-NULL points; NULL when there are none",
                     "\"list<struct<lat: float64, lon: float64>>\"")

/* distinct_sorted: the values seen, kept as a growing array sorted and deduplicated on
 * demand (finalize, merge, serialize). */
typedef struct {
    int64_t *v;
    uint32_t n, cap;
} seen_set;

static void grow(seen_set *s, uint32_t need) {
    if (need <= s->cap) return;
    uint32_t cap = s->cap ? s->cap : 16;
    while (cap < need && cap < 0x10000000u) cap *= 2;
    if (cap < need) {
        wasmudf_fail("distinct_sorted: too many values");
        return;
    }
    int64_t *v = (int64_t *)wasmudf_state_alloc(cap * sizeof(int64_t));
    if (!v) {
        wasmudf_fail("distinct_sorted: out of memory");
        return;
    }
    if (s->n) __builtin_memcpy(v, s->v, s->n * sizeof(int64_t));
    if (s->v) wasmudf_state_free(s->v);
    s->v = v;
    s->cap = cap;
}

static void compact(seen_set *s) {
    sort_int64s(s->v, s->n);
    uint32_t k = 0;
    for (uint32_t i = 0; i < s->n; i++)
        if (k == 0 || s->v[k - 1] != s->v[i]) s->v[k++] = s->v[i];
    s->n = k;
}

static void distinct_sorted_step(seen_set *s, int64_t x) {
    if (s->n == s->cap) {
        compact(s); /* duplicates go first: a group of few distinct values stays small */
        if (s->n * 2 > s->cap || s->cap == 0) grow(s, s->n + 1);
    }
    if (s->n < s->cap) s->v[s->n++] = x;
}

static wasmudf_list distinct_sorted_final(seen_set *s) {
    compact(s);
    return wasmudf_list_of(s->v, s->n);
}

static void distinct_sorted_merge(seen_set *s, seen_set *t) {
    grow(s, s->n + t->n);
    if (s->n + t->n > s->cap) return;
    if (t->n) __builtin_memcpy(s->v + s->n, t->v, t->n * sizeof(int64_t));
    s->n += t->n;
    compact(s);
}

/* Serialized: the sorted distinct values, little-endian int64s. */
static wasmudf_bytes distinct_sorted_serialize(seen_set *s) {
    compact(s);
    return wasmudf_bytes_of((const uint8_t *)s->v, s->n * sizeof(int64_t));
}

static void distinct_sorted_deserialize(seen_set *s, wasmudf_bytes b) {
    if (b.len % sizeof(int64_t)) {
        wasmudf_fail("distinct_sorted: a serialized state is a whole number of int64s");
        return;
    }
    uint32_t n = b.len / sizeof(int64_t);
    grow(s, n);
    if (n > s->cap) return;
    if (n) __builtin_memcpy(s->v, b.ptr, b.len);
    s->n = n;
}

WASMUDF_AGGREGATE(distinct_sorted, list(int64), "the distinct non-NULL values, ascending", seen_set, int64)
WASMUDF_AGGREGATE_MERGE(distinct_sorted)
WASMUDF_AGGREGATE_SERIALIZE(distinct_sorted)
/* Optional hooks come after the declaration, which declares them weak. */
void distinct_sorted_destroy(seen_set *s) {
    if (s->v) wasmudf_state_free(s->v);
}
