/* Table functions: a row generator, a splitter and a key=value parser. Each call keeps its
 * arguments in its state (the arena they arrive in is reset between calls) and appends rows
 * until the batch is full. */
#include "wasmudf.h"

/* ------------------------------------------------------------------ series ------------- */
/* generate_series(start, stop, step): inclusive of stop, counting down for a negative step,
 * no rows when the range is empty in the step's direction. */

typedef struct { int64_t next, stop, step; bool done; } series_state;

static void series_open(series_state *s, int64_t start, int64_t stop, int64_t step) {
    if (step == 0) { wasmudf_fail("series: step must not be 0"); return; }
    s->next = start;
    s->stop = stop;
    s->step = step;
    s->done = step > 0 ? start > stop : start < stop;
}

static bool series_next(series_state *s, wasmudf_rows *out) {
    while (!s->done && !wasmudf_rows_full(out)) {
        wasmudf_put_int64(out, 0, s->next);
        wasmudf_emit(out);
        /* The distance left, in unsigned arithmetic: next + step may overflow int64. */
        uint64_t left = s->step > 0 ? (uint64_t)s->stop - (uint64_t)s->next : (uint64_t)s->next - (uint64_t)s->stop;
        uint64_t stride = s->step > 0 ? (uint64_t)s->step : 0 - (uint64_t)s->step;
        if (left < stride) s->done = true;
        else s->next = (int64_t)((uint64_t)s->next + (uint64_t)s->step);
    }
    return !s->done;
}
WASMUDF_TABLE(series, "start, start + step, ... up to stop inclusive (like generate_series)", series_state,
              "value int64", int64, int64, int64)

/* ------------------------------------------------------------------ copies ------------- */

/* A copy of an argument in state memory; false (and the call failed) when out of memory. */
static bool keep(wasmudf_str s, char **copy) {
    *copy = wasmudf_state_alloc(s.len ? s.len : 1);
    if (!*copy) { wasmudf_fail("out of memory for a call's arguments"); return false; }
    __builtin_memcpy(*copy, s.ptr, s.len);
    return true;
}

/* ------------------------------------------------------------------ split_rows --------- */
/* The parts of `text` between occurrences of `sep`, numbered from 1; empty parts kept. */

typedef struct { char *text, *sep; uint32_t len, sep_len, at; int32_t ordinal; bool done; } split_state;

static void split_rows_open(split_state *s, wasmudf_str text, wasmudf_str sep) {
    if (sep.len == 0) { wasmudf_fail("split_rows: the separator must not be empty"); return; }
    if (!keep(text, &s->text) || !keep(sep, &s->sep)) return;
    s->len = text.len;
    s->sep_len = sep.len;
}

static uint32_t find(const split_state *s, uint32_t from) {
    for (uint32_t i = from; i + s->sep_len <= s->len; i++)
        if (__builtin_memcmp(s->text + i, s->sep, s->sep_len) == 0) return i;
    return s->len; /* not found: the last part runs to the end */
}

static bool split_rows_next(split_state *s, wasmudf_rows *out) {
    while (!s->done && !wasmudf_rows_full(out)) {
        uint32_t end = find(s, s->at);
        wasmudf_put_int32(out, 0, ++s->ordinal);
        wasmudf_put_utf8(out, 1, wasmudf_str_of(s->text + s->at, end - s->at));
        wasmudf_emit(out);
        if (end == s->len) s->done = true;
        else s->at = end + s->sep_len;
    }
    return !s->done;
}
WASMUDF_TABLE(split_rows, "the parts of text between separators, numbered from 1 (empty parts kept)", split_state,
              "ordinal int32, part utf8", utf8, utf8)
void split_rows_close(split_state *s) {
    wasmudf_state_free(s->text);
    wasmudf_state_free(s->sep);
}

/* ------------------------------------------------------------------ parse_kv ----------- */
/* "a = 1; b=2" → (a, 1), (b, 2): pairs split at ';', each at its first '=', ASCII whitespace
 * trimmed around keys and values; a pair without '=' is skipped. */

typedef struct { char *text; uint32_t len, at; bool done; } kv_state;

static bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

static wasmudf_str trimmed(const char *p, uint32_t n) {
    while (n && is_space(*p)) { p++; n--; }
    while (n && is_space(p[n - 1])) n--;
    return wasmudf_str_of(p, n);
}

static void parse_kv_open(kv_state *s, wasmudf_str text) {
    if (keep(text, &s->text)) s->len = text.len;
}

static bool parse_kv_next(kv_state *s, wasmudf_rows *out) {
    while (!s->done && !wasmudf_rows_full(out)) {
        uint32_t end = s->at;
        while (end < s->len && s->text[end] != ';') end++;
        uint32_t eq = s->at;
        while (eq < end && s->text[eq] != '=') eq++;
        if (eq < end) {
            wasmudf_put_utf8(out, 0, trimmed(s->text + s->at, eq - s->at));
            wasmudf_put_utf8(out, 1, trimmed(s->text + eq + 1, end - eq - 1));
            wasmudf_emit(out);
        }
        if (end >= s->len) s->done = true;
        else s->at = end + 1;
    }
    return !s->done;
}
WASMUDF_TABLE(parse_kv, "key=value pairs separated by semicolons, trimmed; pairs without = skipped", kv_state,
              "key utf8, value utf8", utf8)
void parse_kv_close(kv_state *s) { wasmudf_state_free(s->text); }
