/* Aggregate UDFs: geometric mean, exact median, mode, weighted average, common prefix,
 * and a HyperLogLog distinct count. */
#include "wasmudf.h"

/* ------------------------------------------------------------------ log and exp --------- */
/* Freestanding wasm32 has no libm. Both are accurate to a few ulp over the doubles we use. */

static uint64_t bits_of(double x) { uint64_t u; __builtin_memcpy(&u, &x, 8); return u; }
static double double_of(uint64_t u) { double x; __builtin_memcpy(&x, &u, 8); return x; }

/* Natural log of a positive, finite x. */
static double ln(double x) {
    const double ln2 = 0.69314718055994530942;
    int e = 0;
    if (x < 2.2250738585072014e-308) { x *= 18014398509481984.0; e = -54; } /* subnormal: scale by 2^54 */
    uint64_t u = bits_of(x);
    e += (int)((u >> 52) & 0x7FF) - 1023;
    double m = double_of((u & 0x000FFFFFFFFFFFFFull) | 0x3FF0000000000000ull); /* in [1, 2) */
    if (m > 1.4142135623730951) { m /= 2; e++; }
    /* ln(m) = 2 atanh(s) = 2 (s + s^3/3 + s^5/5 + ...), s = (m - 1) / (m + 1), |s| < 0.172:
       twelve terms in Horner form (the next, s^25/25, is below 1e-20), one division. */
    double s = (m - 1) / (m + 1), z = s * s, p = 1.0 / 23;
    p = p * z + 1.0 / 21; p = p * z + 1.0 / 19; p = p * z + 1.0 / 17; p = p * z + 1.0 / 15;
    p = p * z + 1.0 / 13; p = p * z + 1.0 / 11; p = p * z + 1.0 / 9; p = p * z + 1.0 / 7;
    p = p * z + 1.0 / 5; p = p * z + 1.0 / 3; p = p * z + 1.0;
    return 2 * s * p + e * ln2;
}

static double exp_(double y) {
    const double ln2 = 0.69314718055994530942;
    if (y > 709.78) return __builtin_inf();
    if (y < -745.2) return 0;
    double k = __builtin_floor(y / ln2 + 0.5);
    double r = y - k * ln2, term = 1, sum = 1;
    for (int i = 1; i < 24; i++) { term *= r / i; sum += term; }
    int n = (int)k;
    /* Multiply by 2^n in two steps so neither factor overflows or underflows early. */
    int half = n / 2;
    sum *= double_of((uint64_t)(half + 1023) << 52);
    return sum * double_of((uint64_t)(n - half + 1023) << 52);
}

/* ------------------------------------------------------------------ geomean ------------ */

typedef struct { double log_sum; int64_t count; int64_t non_positive; } geomean_state;

static void geo_mean_step(geomean_state *s, double x) {
    if (x > 0 && x <= 1.7976931348623157e308) s->log_sum += ln(x);
    else s->non_positive++;
    s->count++;
}
static void geo_mean_inverse(geomean_state *s, double x) {
    if (x > 0 && x <= 1.7976931348623157e308) s->log_sum -= ln(x);
    else s->non_positive--;
    s->count--;
}
static double geo_mean_final(geomean_state *s) {
    if (s->count == 0 || s->non_positive) { wasmudf_set_null(); return 0; }
    return exp_(s->log_sum / (double)s->count);
}
static void geo_mean_merge(geomean_state *s, geomean_state *o) {
    s->log_sum += o->log_sum;
    s->count += o->count;
    s->non_positive += o->non_positive;
}
WASMUDF_WINDOW_AGGREGATE(geo_mean, float64,
                         "geometric mean; NULL for no rows or when a value is not positive and finite",
                         geomean_state, float64)
WASMUDF_AGGREGATE_MERGE(geo_mean)
WASMUDF_AGGREGATE_FLAT_STATE(geo_mean)

/* ------------------------------------------------------------------ weighted_avg ------- */

typedef struct { double weighted; double weights; int64_t count; } wavg_state;

static void weighted_mean_step(wavg_state *s, double value, double weight) {
    s->weighted += value * weight;
    s->weights += weight;
    s->count++;
}
static void weighted_mean_inverse(wavg_state *s, double value, double weight) {
    s->weighted -= value * weight;
    s->weights -= weight;
    s->count--;
}
static double weighted_mean_final(wavg_state *s) {
    if (s->count == 0 || s->weights == 0) { wasmudf_set_null(); return 0; }
    return s->weighted / s->weights;
}
static void weighted_mean_merge(wavg_state *s, wavg_state *o) {
    s->weighted += o->weighted;
    s->weights += o->weights;
    s->count += o->count;
}
WASMUDF_WINDOW_AGGREGATE(weighted_mean, float64,
                         "sum(value * weight) / sum(weight); NULL when the weights sum to 0",
                         wavg_state, float64, float64)
WASMUDF_AGGREGATE_MERGE(weighted_mean)
WASMUDF_AGGREGATE_FLAT_STATE(weighted_mean)

/* ------------------------------------------------------------------ median ------------- */
/* Exact: keeps every value and selects the middle one(s) at the end. */

typedef struct { double *values; uint32_t count, capacity; } median_state;

static void median_exact_step(median_state *s, double x) {
    if (x != x) return; /* NaN has no place in an order */
    if (s->count == s->capacity) {
        uint32_t wanted = s->capacity ? s->capacity * 2 : 16;
        if (wanted > 0x7FFFFFF0u / sizeof(double)) { wasmudf_fail("median_exact: too many values"); return; }
        double *grown = wasmudf_state_realloc(s->values, wanted * sizeof(double));
        if (!grown) { wasmudf_fail("median_exact: out of memory"); return; }
        s->values = grown;
        s->capacity = wasmudf_state_size(grown) / sizeof(double);
    }
    s->values[s->count++] = x;
}

static void swap_d(double *a, double *b) { double t = *a; *a = *b; *b = t; }

/* Put the k-th smallest of v[0..n) at v[k] (quickselect, median-of-three pivots). */
static double select_kth(double *v, uint32_t n, uint32_t k) {
    uint32_t lo = 0, hi = n - 1;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (v[mid] < v[lo]) swap_d(&v[mid], &v[lo]);
        if (v[hi] < v[lo]) swap_d(&v[hi], &v[lo]);
        if (v[hi] < v[mid]) swap_d(&v[hi], &v[mid]);
        double pivot = v[mid];
        uint32_t i = lo, j = hi;
        while (i <= j) {
            while (v[i] < pivot) i++;
            while (pivot < v[j]) j--;
            if (i <= j) { swap_d(&v[i], &v[j]); i++; if (j == 0) break; j--; }
        }
        if (k <= j) hi = j;
        else if (k >= i) lo = i;
        else break;
    }
    return v[k];
}

static double median_exact_final(median_state *s) {
    uint32_t n = s->count;
    if (n == 0) { wasmudf_set_null(); return 0; }
    double upper = select_kth(s->values, n, n / 2);
    if (n % 2) return upper;
    /* The lower middle is the largest value left of n/2 after the selection. */
    double lower = s->values[0];
    for (uint32_t i = 1; i < n / 2; i++) if (s->values[i] > lower) lower = s->values[i];
    return lower + (upper - lower) / 2;
}

static void median_exact_merge(median_state *s, median_state *o) {
    for (uint32_t i = 0; i < o->count && !wasmudf__failed; i++) median_exact_step(s, o->values[i]);
}
WASMUDF_AGGREGATE(median_exact, float64, "exact median (mean of the two middle values for an even count); NaN skipped",
                  median_state, float64)
WASMUDF_AGGREGATE_MERGE(median_exact)

/* Moving between instances: the values themselves, 8 bytes each. */
static wasmudf_bytes median_exact_serialize(median_state *s) {
    return (wasmudf_bytes){(const uint8_t *)s->values, s->count * (uint32_t)sizeof(double)};
}
static void median_exact_deserialize(median_state *s, wasmudf_bytes b) {
    if (b.len % sizeof(double)) { wasmudf_fail("median_exact: a serialized state of the wrong size"); return; }
    for (uint32_t at = 0; at < b.len && !wasmudf__failed; at += sizeof(double)) {
        double x;
        __builtin_memcpy(&x, b.ptr + at, sizeof x);
        median_exact_step(s, x);
    }
}
WASMUDF_AGGREGATE_SERIALIZE(median_exact)
/* Optional hooks come after the declaration, which declares them weak. */
void median_exact_destroy(median_state *s) { wasmudf_state_free(s->values); }

/* ------------------------------------------------------------------ mode --------------- */
/* The most frequent value, the smallest one on a tie; an open-addressing count table. */

typedef struct { int64_t key; uint32_t count; uint32_t used; } mode_slot;
typedef struct { mode_slot *slots; uint32_t capacity, size; } mode_state;

static uint32_t hash64(int64_t key) {
    uint64_t z = (uint64_t)key + 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return (uint32_t)(z ^ (z >> 31));
}

static mode_slot *mode_find(mode_slot *slots, uint32_t capacity, int64_t key) {
    uint32_t i = hash64(key) & (capacity - 1);
    while (slots[i].used && slots[i].key != key) i = (i + 1) & (capacity - 1);
    return &slots[i];
}

static int mode_add(mode_state *s, int64_t key, uint32_t count) {
    if ((s->size + 1) * 4 > s->capacity * 3) {
        uint32_t capacity = s->capacity ? s->capacity * 2 : 64;
        mode_slot *grown = wasmudf_state_alloc(capacity * sizeof(mode_slot));
        if (!grown) { wasmudf_fail("most_frequent: out of memory"); return 1; }
        for (uint32_t i = 0; i < s->capacity; i++)
            if (s->slots[i].used) *mode_find(grown, capacity, s->slots[i].key) = s->slots[i];
        wasmudf_state_free(s->slots);
        s->slots = grown;
        s->capacity = capacity;
    }
    mode_slot *slot = mode_find(s->slots, s->capacity, key);
    if (!slot->used) { slot->used = 1; slot->key = key; s->size++; }
    slot->count += count;
    return 0;
}

static void most_frequent_step(mode_state *s, int64_t x) { mode_add(s, x, 1); }

static int64_t most_frequent_final(mode_state *s) {
    mode_slot *best = 0;
    for (uint32_t i = 0; i < s->capacity; i++) {
        mode_slot *c = &s->slots[i];
        if (c->used && (!best || c->count > best->count || (c->count == best->count && c->key < best->key)))
            best = c;
    }
    if (!best) { wasmudf_set_null(); return 0; }
    return best->key;
}

static void most_frequent_merge(mode_state *s, mode_state *o) {
    for (uint32_t i = 0; i < o->capacity; i++)
        if (o->slots[i].used && mode_add(s, o->slots[i].key, o->slots[i].count)) return;
}
WASMUDF_AGGREGATE(most_frequent, int64, "most frequent value; the smallest of equally frequent ones", mode_state, int64)
WASMUDF_AGGREGATE_MERGE(most_frequent)

/* Moving between instances: (value, count) pairs, 12 bytes each. */
static wasmudf_bytes most_frequent_serialize(mode_state *s) {
    uint8_t *out = (uint8_t *)wasmudf_str_alloc(s->size * 12);
    if (!out) return (wasmudf_bytes){0, 0}; /* wasmudf_str_alloc failed the call */
    uint32_t at = 0;
    for (uint32_t i = 0; i < s->capacity; i++) {
        if (!s->slots[i].used) continue;
        __builtin_memcpy(out + at, &s->slots[i].key, 8);
        __builtin_memcpy(out + at + 8, &s->slots[i].count, 4);
        at += 12;
    }
    return (wasmudf_bytes){out, at};
}
static void most_frequent_deserialize(mode_state *s, wasmudf_bytes b) {
    if (b.len % 12) { wasmudf_fail("most_frequent: a serialized state of the wrong size"); return; }
    for (uint32_t at = 0; at < b.len; at += 12) {
        int64_t key;
        uint32_t count;
        __builtin_memcpy(&key, b.ptr + at, 8);
        __builtin_memcpy(&count, b.ptr + at + 8, 4);
        if (mode_add(s, key, count)) return;
    }
}
WASMUDF_AGGREGATE_SERIALIZE(most_frequent)
void most_frequent_destroy(mode_state *s) { wasmudf_state_free(s->slots); }

/* ------------------------------------------------------------------ common_prefix ------ */
/* The longest prefix shared by every string, cut back to whole UTF-8 characters. */

typedef struct { char *prefix; uint32_t len; bool seen; } prefix_state;

static void common_prefix_step(prefix_state *s, wasmudf_str x) {
    if (!s->seen) {
        s->prefix = wasmudf_state_alloc(x.len ? x.len : 1);
        if (!s->prefix) { wasmudf_fail("common_prefix: out of memory"); return; }
        __builtin_memcpy(s->prefix, x.ptr, x.len);
        s->len = x.len;
        s->seen = true;
        return;
    }
    uint32_t n = 0;
    while (n < s->len && n < x.len && s->prefix[n] == x.ptr[n]) n++;
    /* Do not end inside a character: back off over continuation bytes (10xxxxxx). */
    if (n < s->len) while (n > 0 && ((unsigned char)s->prefix[n] & 0xC0) == 0x80) n--;
    s->len = n;
}

static wasmudf_str common_prefix_final(prefix_state *s) {
    if (!s->seen) { wasmudf_set_null(); return wasmudf_str_of(0, 0); }
    return wasmudf_str_of(s->prefix, s->len);
}

static void common_prefix_merge(prefix_state *s, prefix_state *o) {
    if (o->seen) common_prefix_step(s, wasmudf_str_of(o->prefix, o->len));
}
WASMUDF_AGGREGATE(common_prefix, utf8, "longest common prefix of the strings, in whole characters",
                  prefix_state, utf8)
WASMUDF_AGGREGATE_MERGE(common_prefix)

/* Moving between instances: nothing for a state that saw no row, else a 1 and the prefix. */
static wasmudf_bytes common_prefix_serialize(prefix_state *s) {
    if (!s->seen) return (wasmudf_bytes){0, 0};
    uint8_t *out = (uint8_t *)wasmudf_str_alloc(s->len + 1);
    if (!out) return (wasmudf_bytes){0, 0};
    out[0] = 1;
    __builtin_memcpy(out + 1, s->prefix, s->len);
    return (wasmudf_bytes){out, s->len + 1};
}
static void common_prefix_deserialize(prefix_state *s, wasmudf_bytes b) {
    if (!b.len) return;
    if (b.ptr[0] != 1) { wasmudf_fail("common_prefix: a serialized state that is not one"); return; }
    common_prefix_step(s, wasmudf_str_of((const char *)b.ptr + 1, b.len - 1));
}
WASMUDF_AGGREGATE_SERIALIZE(common_prefix)
void common_prefix_destroy(prefix_state *s) { wasmudf_state_free(s->prefix); }

/* ------------------------------------------------------------------ hll_distinct ------- */
/* HyperLogLog with 2^12 registers: standard error 1.04 / sqrt(4096) = 1.6%; linear counting
 * below 2.5 m. Exact enough for dashboards, one 4 KiB state whatever the input size. */

#define HLL_P 12
#define HLL_M (1u << HLL_P)

typedef struct { uint8_t registers[HLL_M]; } hll_state;

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void hll_distinct_step(hll_state *s, int64_t x) {
    uint64_t h = mix64((uint64_t)x + 0x9E3779B97F4A7C15ull);
    uint32_t index = (uint32_t)(h >> (64 - HLL_P));
    uint64_t rest = h << HLL_P;
    uint8_t rank = rest ? (uint8_t)(__builtin_clzll(rest) + 1) : (uint8_t)(64 - HLL_P + 1);
    if (rank > s->registers[index]) s->registers[index] = rank;
}

static int64_t hll_distinct_final(hll_state *s) {
    double sum = 0;
    uint32_t zeros = 0;
    for (uint32_t i = 0; i < HLL_M; i++) {
        sum += double_of((uint64_t)(1023 - s->registers[i]) << 52); /* 2^-register */
        zeros += s->registers[i] == 0;
    }
    double m = HLL_M, estimate = (0.7213 / (1 + 1.079 / m)) * m * m / sum;
    if (estimate <= 2.5 * m && zeros) estimate = m * ln(m / zeros);
    return (int64_t)(estimate + 0.5);
}

static void hll_distinct_merge(hll_state *s, hll_state *o) {
    for (uint32_t i = 0; i < HLL_M; i++)
        if (o->registers[i] > s->registers[i]) s->registers[i] = o->registers[i];
}
WASMUDF_AGGREGATE(hll_distinct, int64, "approximate count of distinct values (HyperLogLog, 1.6% standard error)",
                  hll_state, int64)
WASMUDF_AGGREGATE_MERGE(hll_distinct)
WASMUDF_AGGREGATE_FLAT_STATE(hll_distinct)
