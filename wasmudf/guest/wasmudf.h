/*
 * wasmudf.h — write SQL functions for wasmudf in C (ABI version 1).
 *
 * A UDF is a plain per-row C function, declared once next to its code:
 *
 *     #include "wasmudf.h"
 *
 *     static int64_t add_i64(int64_t a, int64_t b) { return a + b; }
 *     WASMUDF_SCALAR(add_i64, int64, "a + b, wrapping on overflow", int64, int64)
 *
 * Build with `wasmudf build add.c -o add.wasm`. The SDK supplies the ABI exports
 * (wasmudf_abi_version, wasmudf_alloc, wasmudf_reset, wasmudf_error), the batch loop over
 * Arrow-style columns, NULL handling and the manifest entry.
 *
 * Types (SQL name → C type of a parameter or result):
 *     bool → bool, int32 → int32_t, int64 → int64_t, float32 → float, float64 → double,
 *     utf8 → wasmudf_str, binary → wasmudf_bytes   (pointer + length, not NUL-terminated),
 *     date → wasmudf_date (int32 days since 1970-01-01), timestamp and timestamptz →
 *     wasmudf_timestamp (int64 microseconds since 1970-01-01 00:00; timestamptz: UTC);
 *     wasmudf_days_from_civil / wasmudf_civil_from_days convert days and calendar dates
 *
 * Declarations:
 *     WASMUDF_SCALAR(name, ret, doc, types...)         NULL in → NULL out, never called
 *     WASMUDF_SCALAR_CALLED(name, ret, doc, types...)  called for every row; parameters
 *                                                      are wasmudf_nullable_<type>
 *     WASMUDF_SCALAR0(name, ret, doc)                  no parameters
 *     WASMUDF_AGGREGATE(name, ret, doc, State, types...)
 *         an aggregate over rows (NULL rows skipped). You write
 *             static void name_step(State *s, T1 a, ...);   fold one row in
 *             static RET name_final(State *s);              the result (wasmudf_set_null ok)
 *         and, only if you need them, non-static and *after* the declaration (which
 *         declares them weak, so the SDK finds them by name):
 *             void name_init(State *s);      after the SDK zeroes a new state
 *             void name_destroy(State *s);   free what the state allocated
 *     WASMUDF_WINDOW_AGGREGATE(name, ret, doc, State, types...)
 *         the same, usable as a window function: also write
 *             static void name_inverse(State *s, T1 a, ...);  take one row out again
 *         name_final must then leave the state usable (it is also the window's value).
 *     WASMUDF_AGGREGATE_MERGE(name)    after either: parallel engines may combine
 *                                      states with  static void name_merge(State *s, State *other)
 *                                      (`other` is destroyed and freed by the SDK).
 *     WASMUDF_AGGREGATE_FLAT_STATE(name)  after the MERGE line, for a State of plain data (no
 *                                      pointers): states move between instances as their bytes,
 *                                      so DuckDB combines them in parallel and bounds a group's memory.
 *     WASMUDF_AGGREGATE_SERIALIZE(name)   the same for a State that owns memory; you write
 *             static wasmudf_bytes name_serialize(State *s);  the state as bytes (they may
 *                                      point into the state, or come from wasmudf_str_alloc)
 *             static void name_deserialize(State *s, wasmudf_bytes b);  fill a new, zeroed
 *                                      state from them (wasmudf_fail when they make no sense)
 *     States and what they own live outside the arena: allocate with
 *     wasmudf_state_alloc(size) (zeroed) / wasmudf_state_realloc(p, size) / wasmudf_state_free(p);
 *     wasmudf_state_size(p) is a block's usable size, for growing arrays.
 *     WASMUDF_TABLE(name, doc, State, "col type, ...", types...)
 *         a table function: one call per row of arguments streams rows. You write
 *             static void name_open(State *s, T1 a, ...);      start (the SDK zeroes s first)
 *             static bool name_next(State *s, wasmudf_rows *out);
 *                 append rows while !wasmudf_rows_full(out): wasmudf_put_<type>(out, column,
 *                 value) or wasmudf_put_null(out, column) for each column, then
 *                 wasmudf_emit(out); return false once no rows are left
 *         and, if needed, non-static after the declaration: void name_close(State *s).
 *         A NULL argument gives no rows without calling it.
 * Inside a UDF:
 *     wasmudf_set_null();          this row's result is NULL (the returned value is ignored)
 *     wasmudf_fail("message");     fail the whole call with an error message
 *     wasmudf_str_alloc(len)       a writable buffer for a utf8/binary result, freed by the
 *                                  host after the call; return wasmudf_str_of(buf, len)
 *     wasmudf_cstr(s)              a NUL-terminated copy of a utf8 argument (for C APIs)
 *     wasmudf_str_from_cstr(cs)    a C string (anywhere) copied out as a utf8 result
 * `doc` is a plain string literal without quotes or backslashes.
 */
#ifndef WASMUDF_H
#define WASMUDF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define WASMUDF_ABI_VERSION 1
#define WASMUDF_EXPORT(name) __attribute__((export_name(name)))
#define WASMUDF_WEAK __attribute__((weak))

typedef struct { const char *ptr; uint32_t len; } wasmudf_str;
typedef int32_t wasmudf_date;      /* days since 1970-01-01 */
typedef int64_t wasmudf_timestamp; /* microseconds since 1970-01-01 00:00 (timestamptz: UTC) */
typedef struct { const uint8_t *ptr; uint32_t len; } wasmudf_bytes;

/* A column descriptor (ABI §3): eight little-endian u32 fields. */
typedef struct {
    uint32_t type, length, null_count, validity, offsets, values, values_len, reserved;
} wasmudf_column;

#define WASMUDF__NULLABLE(T, CT) typedef struct { bool is_null; CT value; } wasmudf_nullable_##T;
WASMUDF__NULLABLE(bool, bool)
WASMUDF__NULLABLE(int32, int32_t)
WASMUDF__NULLABLE(int64, int64_t)
WASMUDF__NULLABLE(float32, float)
WASMUDF__NULLABLE(float64, double)
WASMUDF__NULLABLE(utf8, wasmudf_str)
WASMUDF__NULLABLE(binary, wasmudf_bytes)
WASMUDF__NULLABLE(date, wasmudf_date)
WASMUDF__NULLABLE(timestamp, wasmudf_timestamp)
WASMUDF__NULLABLE(timestamptz, wasmudf_timestamp)

#define wasmudf__ctype_bool bool
#define wasmudf__ctype_int32 int32_t
#define wasmudf__ctype_int64 int64_t
#define wasmudf__ctype_float32 float
#define wasmudf__ctype_float64 double
#define wasmudf__ctype_utf8 wasmudf_str
#define wasmudf__ctype_binary wasmudf_bytes
#define wasmudf__ctype_date wasmudf_date
#define wasmudf__ctype_timestamp wasmudf_timestamp
#define wasmudf__ctype_timestamptz wasmudf_timestamp
#define WASMUDF_CTYPE(T) wasmudf__ctype_##T

/* <stdbool.h> makes `bool` a macro for `_Bool`, which reaches the token pastes below
 * expanded: every per-type name has a `_Bool` twin. */
#define wasmudf__ctype__Bool bool
#define wasmudf__name_bool "bool"
#define wasmudf__name__Bool "bool"
#define wasmudf__name_int32 "int32"
#define wasmudf__name_int64 "int64"
#define wasmudf__name_float32 "float32"
#define wasmudf__name_float64 "float64"
#define wasmudf__name_utf8 "utf8"
#define wasmudf__name_binary "binary"
#define wasmudf__name_date "date"
#define wasmudf__name_timestamp "timestamp"
#define wasmudf__name_timestamptz "timestamptz"
#define WASMUDF__TYPENAME(T) wasmudf__name_##T

/* ---------------------------------------------------------------- the arena ------------ */
/* Blocks live until wasmudf_reset. Memory comes in chunks from memory.grow; reset rewinds to
 * the first chunk and keeps the others for reuse, so steady state grows nothing. */

extern unsigned char __heap_base;

#define WASMUDF__MAX_CHUNKS 64
#define WASMUDF__PAGE 65536u

typedef struct { uint32_t start, end; } wasmudf__chunk;

WASMUDF_WEAK wasmudf__chunk wasmudf__chunks[WASMUDF__MAX_CHUNKS];
WASMUDF_WEAK uint32_t wasmudf__nchunks;
WASMUDF_WEAK uint32_t wasmudf__current;
WASMUDF_WEAK uint32_t wasmudf__cursor;
WASMUDF_WEAK char wasmudf__message[512];
WASMUDF_WEAK bool wasmudf__failed;
WASMUDF_WEAK bool wasmudf__row_null;

/* Fresh pages from memory.grow for at least `size` bytes, or {0,0}. */
WASMUDF_WEAK wasmudf__chunk wasmudf__grow(uint32_t size) {
    uint32_t pages = (size + WASMUDF__PAGE - 1) / WASMUDF__PAGE;
    if (pages < 16) pages = 16;
    size_t old = __builtin_wasm_memory_grow(0, pages);
    if (old == (size_t)-1) {
        pages = (size + WASMUDF__PAGE - 1) / WASMUDF__PAGE; /* retry with just enough */
        old = __builtin_wasm_memory_grow(0, pages);
        if (old == (size_t)-1) return (wasmudf__chunk){0, 0};
    }
    return (wasmudf__chunk){(uint32_t)old * WASMUDF__PAGE, (uint32_t)(old + pages) * WASMUDF__PAGE};
}

WASMUDF_WEAK void wasmudf__set_message(const char *msg) {
    uint32_t i = 0;
    for (; msg[i] && i < sizeof wasmudf__message - 1; i++) wasmudf__message[i] = msg[i];
    wasmudf__message[i] = 0;
}

/* The arena's first chunk is the memory the module starts with, past its data; it must be
 * claimed before anything else (aggregate states) grows memory. */
WASMUDF_WEAK void wasmudf__arena_init(void) {
    if (wasmudf__nchunks) return;
    uint32_t start = (uint32_t)(uintptr_t)&__heap_base;
    uint32_t end = (uint32_t)__builtin_wasm_memory_size(0) * WASMUDF__PAGE;
    wasmudf__chunks[0] = (wasmudf__chunk){start, end};
    wasmudf__nchunks = 1;
    wasmudf__current = 0;
    wasmudf__cursor = start;
}

WASMUDF_WEAK WASMUDF_EXPORT("wasmudf_alloc") uint32_t wasmudf_alloc(uint32_t size, uint32_t align) {
    if (align == 0 || (align & (align - 1)) || align > 16) {
        wasmudf__set_message("wasmudf_alloc: align must be a power of two, at most 16");
        return 0;
    }
    wasmudf__arena_init();
    for (;;) {
        wasmudf__chunk c = wasmudf__chunks[wasmudf__current];
        uint32_t p = (wasmudf__cursor + align - 1) & ~(align - 1);
        if (p >= wasmudf__cursor && p <= c.end && size <= c.end - p) {
            wasmudf__cursor = p + size;
            return p ? p : 16; /* address 0 is never handed out (size 0 at the very start) */
        }
        if (wasmudf__current + 1 < wasmudf__nchunks) {
            wasmudf__current++;
            wasmudf__cursor = wasmudf__chunks[wasmudf__current].start;
            continue;
        }
        if (wasmudf__nchunks == WASMUDF__MAX_CHUNKS || size > 0xFFFFFFFFu - 16) {
            wasmudf__set_message("wasmudf_alloc: arena exhausted");
            return 0;
        }
        wasmudf__chunk fresh = wasmudf__grow(size + align);
        if (fresh.end == 0) {
            wasmudf__set_message("wasmudf_alloc: out of memory (memory.grow refused)");
            return 0;
        }
        /* Pages right after the current chunk extend it rather than starting a new one. */
        if (fresh.start == c.end && wasmudf__current == wasmudf__nchunks - 1) {
            wasmudf__chunks[wasmudf__current].end = fresh.end;
        } else {
            wasmudf__chunks[wasmudf__nchunks++] = fresh;
            wasmudf__current = wasmudf__nchunks - 1;
            wasmudf__cursor = fresh.start;
        }
    }
}

WASMUDF_WEAK WASMUDF_EXPORT("wasmudf_reset") void wasmudf_reset(void) {
    wasmudf__current = 0;
    wasmudf__cursor = wasmudf__nchunks ? wasmudf__chunks[0].start : 0;
}

WASMUDF_WEAK WASMUDF_EXPORT("wasmudf_abi_version") uint32_t wasmudf_abi_version(void) {
    return WASMUDF_ABI_VERSION;
}

WASMUDF_WEAK WASMUDF_EXPORT("wasmudf_error") uint32_t wasmudf_error(void) {
    return (uint32_t)(uintptr_t)wasmudf__message;
}

/* --------------------------------------------------------------- for UDF authors ------- */

static inline void wasmudf_set_null(void) { wasmudf__row_null = true; }

static inline void wasmudf_fail(const char *message) {
    wasmudf__set_message(message);
    wasmudf__failed = true;
}

/* A writable buffer in the arena, or NULL (and the call fails) when memory runs out. */
static inline char *wasmudf_str_alloc(uint32_t len) {
    uint32_t p = wasmudf_alloc(len, 1);
    if (!p) wasmudf__failed = true;
    return (char *)(uintptr_t)p;
}

static inline wasmudf_str wasmudf_str_of(const char *ptr, uint32_t len) {
    return (wasmudf_str){ptr, len};
}

static inline wasmudf_bytes wasmudf_bytes_of(const uint8_t *ptr, uint32_t len) {
    return (wasmudf_bytes){ptr, len};
}

/* A NUL-terminated copy of a utf8 argument, for C code that expects a C string (an
   embedded NUL ends it there); in the arena, freed after the call. NULL when out of memory. */
static inline char *wasmudf_cstr(wasmudf_str s) {
    char *copy = wasmudf_str_alloc(s.len + 1);
    if (!copy) return 0;
    __builtin_memcpy(copy, s.ptr, s.len);
    copy[s.len] = 0;
    return copy;
}

/* A C string as a utf8 result: copied into result memory, so the string itself may live
   anywhere (a static buffer, the stack). The host checks the bytes are UTF-8. */
static inline wasmudf_str wasmudf_str_from_cstr(const char *s) {
    uint32_t len = 0;
    while (s[len]) len++;
    char *out = wasmudf_str_alloc(len);
    if (!out) return wasmudf_str_of("", 0);
    __builtin_memcpy(out, s, len);
    return wasmudf_str_of(out, len);
}

/* ------------------------------------------------------------ reading columns ---------- */

#define WASMUDF__PTR(T, addr) ((T *)(uintptr_t)(addr))

static inline bool wasmudf__valid(const wasmudf_column *c, uint32_t i) {
    return !c->validity || ((WASMUDF__PTR(const uint8_t, c->validity)[i >> 3] >> (i & 7)) & 1);
}
static inline bool wasmudf__get_bool(const wasmudf_column *c, uint32_t i) {
    return WASMUDF__PTR(const uint8_t, c->values)[i] != 0;
}
static inline int32_t wasmudf__get_int32(const wasmudf_column *c, uint32_t i) {
    return WASMUDF__PTR(const int32_t, c->values)[i];
}
static inline int64_t wasmudf__get_int64(const wasmudf_column *c, uint32_t i) {
    return WASMUDF__PTR(const int64_t, c->values)[i];
}
static inline float wasmudf__get_float32(const wasmudf_column *c, uint32_t i) {
    return WASMUDF__PTR(const float, c->values)[i];
}
static inline double wasmudf__get_float64(const wasmudf_column *c, uint32_t i) {
    return WASMUDF__PTR(const double, c->values)[i];
}
static inline wasmudf_date wasmudf__get_date(const wasmudf_column *c, uint32_t i) {
    return WASMUDF__PTR(const int32_t, c->values)[i];
}
static inline wasmudf_timestamp wasmudf__get_timestamp(const wasmudf_column *c, uint32_t i) {
    return WASMUDF__PTR(const int64_t, c->values)[i];
}
#define wasmudf__get_timestamptz wasmudf__get_timestamp
static inline wasmudf_str wasmudf__get_utf8(const wasmudf_column *c, uint32_t i) {
    const uint32_t *o = WASMUDF__PTR(const uint32_t, c->offsets);
    return (wasmudf_str){WASMUDF__PTR(const char, c->values) + o[i], o[i + 1] - o[i]};
}
static inline wasmudf_bytes wasmudf__get_binary(const wasmudf_column *c, uint32_t i) {
    const uint32_t *o = WASMUDF__PTR(const uint32_t, c->offsets);
    return (wasmudf_bytes){WASMUDF__PTR(const uint8_t, c->values) + o[i], o[i + 1] - o[i]};
}
#define WASMUDF__GET_NULLABLE(T)                                                              \
    static inline wasmudf_nullable_##T wasmudf__getn_##T(const wasmudf_column *c, uint32_t i) { \
        wasmudf_nullable_##T v = {0};                                                         \
        v.is_null = !wasmudf__valid(c, i);                                                    \
        if (!v.is_null) v.value = wasmudf__get_##T(c, i);                                     \
        return v;                                                                             \
    }
WASMUDF__GET_NULLABLE(bool)
#define wasmudf__get__Bool wasmudf__get_bool
#define wasmudf__getn__Bool wasmudf__getn_bool
WASMUDF__GET_NULLABLE(int32)
WASMUDF__GET_NULLABLE(int64)
WASMUDF__GET_NULLABLE(float32)
WASMUDF__GET_NULLABLE(float64)
WASMUDF__GET_NULLABLE(utf8)
WASMUDF__GET_NULLABLE(binary)
WASMUDF__GET_NULLABLE(date)
WASMUDF__GET_NULLABLE(timestamp)
WASMUDF__GET_NULLABLE(timestamptz)

/* ------------------------------------------------------------ decimals and lists ------ */
/* decimal(p,s) and list(T) are type tokens like int64: WASMUDF_SCALAR(round_cents,
 * decimal(38,2), "...", decimal(38,6)). They work because `decimal` and `list` are pasted
 * onto a prefix (wasmudf__name_##T) and the result is a function-like macro below; so never
 * #define `decimal` or `list` yourself. T in list(T) is a flat type (not a list). */

/* A decimal is its unscaled value, value × 10^s (docs/abi.md §3.2): 12.50 in decimal(18,2)
 * is 1250. The host checks a result against p. */
typedef __int128 wasmudf_decimal;
WASMUDF__NULLABLE(decimal_, wasmudf_decimal)
#define wasmudf__name_decimal(p, s) "decimal(" #p "," #s ")"
#define wasmudf__ctype_decimal(p, s) wasmudf_decimal
#define wasmudf__get_decimal(p, s) wasmudf__get_decimal_
#define wasmudf__getn_decimal(p, s) wasmudf__getn_decimal_
#define wasmudf__set_decimal(p, s) wasmudf__set_decimal_
#define wasmudf__varlen_decimal(p, s) 0
#define wasmudf__pack_decimal(p, s) wasmudf__pack_none
static inline wasmudf_decimal wasmudf__get_decimal_(const wasmudf_column *c, uint32_t i) {
    wasmudf_decimal v;
    __builtin_memcpy(&v, WASMUDF__PTR(const uint8_t, c->values) + (size_t)i * 16, 16);
    return v;
}
WASMUDF__GET_NULLABLE(decimal_)

/* A list argument is a view of its elements in the child column; read them with
 * wasmudf_list_get(T, l, i) and wasmudf_list_valid(l, i). A list result is made with
 * wasmudf_list_of(items, n): n values of the element's C type (wasmudf_str for utf8), copied
 * out when the batch ends (so arena memory from wasmudf_alloc is fine; a result's elements
 * are never NULL). */
typedef struct {
    const wasmudf_column *child; /* arguments: the elements' column, from `start` */
    uint32_t start, len;
    const void *items; /* results: the elements */
} wasmudf_list;
WASMUDF__NULLABLE(list_, wasmudf_list)
static inline wasmudf_list wasmudf_list_of(const void *items, uint32_t len) {
    return (wasmudf_list){0, 0, len, items};
}
static inline bool wasmudf_list_valid(wasmudf_list l, uint32_t i) { return wasmudf__valid(l.child, l.start + i); }
#define wasmudf_list_get(T, l, i) wasmudf__get_##T((l).child, (l).start + (i))
#define wasmudf__name_list(T) "list<" wasmudf__name_##T ">" /* not WASMUDF__TYPENAME: no macro expands inside itself */
#define wasmudf__ctype_list(T) wasmudf_list
#define wasmudf__get_list(T) wasmudf__get_list_
#define wasmudf__getn_list(T) wasmudf__getn_list_
#define wasmudf__set_list(T) wasmudf__set_list_
#define wasmudf__varlen_list(T) 1
#define wasmudf__pack_list(T) wasmudf__pack_list_##T
static inline wasmudf_list wasmudf__get_list_(const wasmudf_column *c, uint32_t r) {
    const uint32_t *o = WASMUDF__PTR(const uint32_t, c->offsets);
    return (wasmudf_list){WASMUDF__PTR(const wasmudf_column, c->values), o[r], o[r + 1] - o[r], 0};
}
WASMUDF__GET_NULLABLE(list_)

/* ------------------------------------------------------------ calendar dates ----------- */
/* Days since 1970-01-01 and proleptic Gregorian (year, month 1-12, day 1-31), both ways, for
 * any int32 day (Howard Hinnant's days_from_civil / civil_from_days). */

static inline int32_t wasmudf_days_from_civil(int32_t y, int32_t m, int32_t d) {
    int64_t yy = (int64_t)y - (m <= 2);
    int64_t era = (yy >= 0 ? yy : yy - 399) / 400;
    int64_t yoe = yy - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return (int32_t)(era * 146097 + doe - 719468);
}

static inline void wasmudf_civil_from_days(int32_t days, int32_t *y, int32_t *m, int32_t *d) {
    int64_t z = (int64_t)days + 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    *d = (int32_t)(doy - (153 * mp + 2) / 5 + 1);
    *m = (int32_t)(mp < 10 ? mp + 3 : mp - 9);
    *y = (int32_t)(yoe + era * 400 + (*m <= 2));
}

/* Monday = 0 ... Sunday = 6 (1970-01-01 was a Thursday). */
static inline int32_t wasmudf_weekday(int32_t days) {
    int32_t r = (int32_t)(((int64_t)days + 3) % 7);
    return r < 0 ? r + 7 : r;
}

/* ------------------------------------------------------------ writing results ---------- */
/* Fixed-width results go straight into the host's buffer; variable-length ones are gathered
 * first and packed into one values block at the end of the batch. */

typedef struct { const void *ptr; uint32_t len; } wasmudf__span;

#define WASMUDF__FIXED_SETTER(T)                                                           \
    static inline void wasmudf__set_##T(wasmudf_column *o, wasmudf__span *s, uint32_t i,   \
                                        WASMUDF_CTYPE(T) v) {                               \
        (void)s;                                                                           \
        WASMUDF__PTR(WASMUDF_CTYPE(T), o->values)[i] = v;                                  \
    }
WASMUDF__FIXED_SETTER(int32)
WASMUDF__FIXED_SETTER(int64)
WASMUDF__FIXED_SETTER(float32)
WASMUDF__FIXED_SETTER(float64)
WASMUDF__FIXED_SETTER(date)
WASMUDF__FIXED_SETTER(timestamp)
WASMUDF__FIXED_SETTER(timestamptz)
static inline void wasmudf__set_bool(wasmudf_column *o, wasmudf__span *s, uint32_t i, bool v) {
    (void)s;
    WASMUDF__PTR(uint8_t, o->values)[i] = v ? 1 : 0;
}
static inline void wasmudf__set_utf8(wasmudf_column *o, wasmudf__span *s, uint32_t i, wasmudf_str v) {
    (void)o;
    s[i] = (wasmudf__span){v.ptr, v.len};
}
static inline void wasmudf__set_binary(wasmudf_column *o, wasmudf__span *s, uint32_t i, wasmudf_bytes v) {
    (void)o;
    s[i] = (wasmudf__span){v.ptr, v.len};
}

#define wasmudf__varlen_bool 0
#define wasmudf__varlen__Bool 0
#define wasmudf__set__Bool wasmudf__set_bool
#define wasmudf__varlen_int32 0
#define wasmudf__varlen_int64 0
#define wasmudf__varlen_float32 0
#define wasmudf__varlen_float64 0
#define wasmudf__varlen_utf8 1
#define wasmudf__varlen_binary 1
#define wasmudf__varlen_date 0
#define wasmudf__varlen_timestamp 0
#define wasmudf__varlen_timestamptz 0
#define WASMUDF__VARLEN(T) wasmudf__varlen_##T

static inline void wasmudf__set_null_at(wasmudf_column *o, wasmudf__span *s, uint32_t i) {
    WASMUDF__PTR(uint8_t, o->validity)[i >> 3] &= (uint8_t)~(1u << (i & 7));
    o->null_count++;
    if (s) s[i] = (wasmudf__span){0, 0};
}

/* Pack the first n gathered spans into one block and fill the host's offsets buffer. */
WASMUDF_WEAK int32_t wasmudf__pack_n(wasmudf_column *o, wasmudf__span *s, uint32_t n) {
    uint32_t total = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (s[i].len > 0xFFFFFFFFu - total) { wasmudf__set_message("result over 4 GiB"); return 1; }
        total += s[i].len;
    }
    uint8_t *dst = WASMUDF__PTR(uint8_t, wasmudf_alloc(total, 1));
    if (!dst) return 1;
    uint32_t *off = WASMUDF__PTR(uint32_t, o->offsets);
    uint32_t pos = 0;
    off[0] = 0;
    for (uint32_t i = 0; i < n; i++) {
        __builtin_memcpy(dst + pos, s[i].ptr, s[i].len);
        pos += s[i].len;
        off[i + 1] = pos;
    }
    o->values = (uint32_t)(uintptr_t)dst;
    o->values_len = total;
    return 0;
}

static inline int32_t wasmudf__pack(wasmudf_column *o, wasmudf__span *s) { return wasmudf__pack_n(o, s, o->length); }
static inline int32_t wasmudf__pack_none(wasmudf_column *o, wasmudf__span *s) { (void)o; (void)s; return 0; }
#define wasmudf__pack_bool wasmudf__pack_none
#define wasmudf__pack__Bool wasmudf__pack_none
#define wasmudf__pack_int32 wasmudf__pack_none
#define wasmudf__pack_int64 wasmudf__pack_none
#define wasmudf__pack_float32 wasmudf__pack_none
#define wasmudf__pack_float64 wasmudf__pack_none
#define wasmudf__pack_date wasmudf__pack_none
#define wasmudf__pack_timestamp wasmudf__pack_none
#define wasmudf__pack_timestamptz wasmudf__pack_none
#define wasmudf__pack_utf8 wasmudf__pack
#define wasmudf__pack_binary wasmudf__pack
/* What a batch does with its gathered results at the end: nothing for fixed widths, one
 * values block for utf8 and binary, a child column for a list. */
#define WASMUDF__PACK(T) wasmudf__pack_##T

static inline void wasmudf__set_decimal_(wasmudf_column *o, wasmudf__span *s, uint32_t i, wasmudf_decimal v) {
    (void)s;
    __builtin_memcpy(WASMUDF__PTR(uint8_t, o->values) + (size_t)i * 16, &v, 16);
}
static inline void wasmudf__set_list_(wasmudf_column *o, wasmudf__span *s, uint32_t i, wasmudf_list v) {
    (void)o;
    s[i] = (wasmudf__span){v.items, v.len};
}

/* The element count of n gathered list rows, into the offsets the host prepared; 1 when it
 * overflows. */
WASMUDF_WEAK int32_t wasmudf__list_offsets(wasmudf_column *o, const wasmudf__span *s, uint32_t *total) {
    uint32_t *off = WASMUDF__PTR(uint32_t, o->offsets), t = 0;
    off[0] = 0;
    for (uint32_t i = 0; i < o->length; i++) {
        if (s[i].len > 0x7FFFFFFFu - t) { wasmudf__set_message("list result over 2^31 elements"); return 1; }
        t += s[i].len;
        off[i + 1] = t;
    }
    *total = t;
    return 0;
}

/* A list result whose elements have a fixed width: one values block for the child column. */
#define WASMUDF__LIST_PACKER(T, WIDTH)                                                        \
    WASMUDF_WEAK int32_t wasmudf__pack_list_##T(wasmudf_column *o, wasmudf__span *s) {       \
        uint32_t total;                                                                       \
        if (wasmudf__list_offsets(o, s, &total)) return 1;                                    \
        if (total > 0xFFFFFFF0u / (WIDTH)) { wasmudf__set_message("list result over 4 GiB"); return 1; } \
        uint8_t *dst = WASMUDF__PTR(uint8_t, wasmudf_alloc(total * (WIDTH), 16));              \
        if (!dst) return 1;                                                                   \
        for (uint32_t i = 0, at = 0; i < o->length; at += s[i].len * (WIDTH), i++)            \
            if (s[i].len) __builtin_memcpy(dst + at, s[i].ptr, s[i].len * (WIDTH));           \
        wasmudf_column *c = WASMUDF__PTR(wasmudf_column, o->values);                          \
        c->length = total;                                                                    \
        c->null_count = 0;                                                                    \
        c->validity = 0;                                                                      \
        c->values = (uint32_t)(uintptr_t)dst;                                                 \
        c->values_len = total * (WIDTH);                                                      \
        return 0;                                                                             \
    }
WASMUDF__LIST_PACKER(bool, 1)
WASMUDF__LIST_PACKER(int32, 4)
WASMUDF__LIST_PACKER(int64, 8)
WASMUDF__LIST_PACKER(float32, 4)
WASMUDF__LIST_PACKER(float64, 8)
WASMUDF__LIST_PACKER(date, 4)
WASMUDF__LIST_PACKER(timestamp, 8)
WASMUDF__LIST_PACKER(timestamptz, 8)

/* A list<utf8> or list<binary> result: the child column gets offsets and one values block. */
WASMUDF_WEAK int32_t wasmudf__pack_list_strings(wasmudf_column *o, wasmudf__span *s) {
    uint32_t total;
    if (wasmudf__list_offsets(o, s, &total)) return 1;
    wasmudf_column *c = WASMUDF__PTR(wasmudf_column, o->values);
    wasmudf__span *items = WASMUDF__PTR(wasmudf__span, wasmudf_alloc(total * sizeof(wasmudf__span), 4));
    if (total && !items) return 1;
    for (uint32_t i = 0, at = 0; i < o->length; at += s[i].len, i++)
        if (s[i].len) __builtin_memcpy(items + at, s[i].ptr, s[i].len * sizeof(wasmudf__span));
    uint32_t *off = WASMUDF__PTR(uint32_t, wasmudf_alloc((total + 1) * 4, 4));
    if (!off) return 1;
    c->length = total;
    c->null_count = 0;
    c->validity = 0;
    c->offsets = (uint32_t)(uintptr_t)off;
    return wasmudf__pack_n(c, items, total);
}
#define wasmudf__pack_list_utf8 wasmudf__pack_list_strings
#define wasmudf__pack_list_binary wasmudf__pack_list_strings

/* ------------------------------------------------------------ the declarations --------- */

#define WASMUDF__CAT(a, b) WASMUDF__CAT2(a, b)
#define WASMUDF__CAT2(a, b) a##b
#define WASMUDF__NARGS(...) WASMUDF__NARGS_(__VA_ARGS__, 8, 7, 6, 5, 4, 3, 2, 1, 0)
#define WASMUDF__NARGS_(a1, a2, a3, a4, a5, a6, a7, a8, n, ...) n

/* Apply M(index, type) to each type, separated by SEP. */
#define WASMUDF__MAP(M, SEP, ...) WASMUDF__CAT(WASMUDF__MAP, WASMUDF__NARGS(__VA_ARGS__))(M, SEP, __VA_ARGS__)
#define WASMUDF__MAP1(M, S, a) M(0, a)
#define WASMUDF__MAP2(M, S, a, b) M(0, a) S() M(1, b)
#define WASMUDF__MAP3(M, S, a, b, c) WASMUDF__MAP2(M, S, a, b) S() M(2, c)
#define WASMUDF__MAP4(M, S, a, b, c, d) WASMUDF__MAP3(M, S, a, b, c) S() M(3, d)
#define WASMUDF__MAP5(M, S, a, b, c, d, e) WASMUDF__MAP4(M, S, a, b, c, d) S() M(4, e)
#define WASMUDF__MAP6(M, S, a, b, c, d, e, f) WASMUDF__MAP5(M, S, a, b, c, d, e) S() M(5, f)
#define WASMUDF__MAP7(M, S, a, b, c, d, e, f, g) WASMUDF__MAP6(M, S, a, b, c, d, e, f) S() M(6, g)
#define WASMUDF__MAP8(M, S, a, b, c, d, e, f, g, h) WASMUDF__MAP7(M, S, a, b, c, d, e, f, g) S() M(7, h)
#define WASMUDF__COMMA() ,
#define WASMUDF__NOTHING()
#define WASMUDF__JSON_COMMA() ","

#define WASMUDF__ARG_STRICT(i, T) wasmudf__get_##T(&a[i], r)
#define WASMUDF__ARG_CALLED(i, T) wasmudf__getn_##T(&a[i], r)
#define WASMUDF__TYPE_JSON(i, T) "\"" WASMUDF__TYPENAME(T) "\""

/* The manifest fragment: `wasmudf build` collects these from the data segment. */
#define WASMUDF__FRAGMENT(NAME, JSON)                                                         \
    __attribute__((used)) static const char wasmudf__fragment_##NAME[] =                      \
        "WASMUDF-MANIFEST-FRAGMENT:" JSON;

#define WASMUDF__SCALAR_IMPL(NAME, RET, DOC, NULLS, NARGS, CALL, PARAMS_JSON)                 \
    WASMUDF__FRAGMENT(NAME, "{\"name\":\"" #NAME "\",\"kind\":\"scalar\",\"params\":["     \
                            PARAMS_JSON "],\"returns\":\"" WASMUDF__TYPENAME(RET) "\",\"nulls\":\"" NULLS      \
                            "\",\"doc\":\"" DOC "\"}")                                        \
    WASMUDF_EXPORT(#NAME) int32_t wasmudf__scalar_##NAME(uint32_t args, uint32_t nargs,      \
                                                          uint32_t out) {                     \
        const wasmudf_column *a = WASMUDF__PTR(const wasmudf_column, args);                   \
        wasmudf_column *o = WASMUDF__PTR(wasmudf_column, out);                                \
        uint32_t n = o->length;                                                               \
        (void)a;                                                                              \
        if (nargs != NARGS) { wasmudf__set_message(#NAME ": wrong number of arguments");     \
                              return 1; }                                                     \
        wasmudf__span *spans = 0;                                                             \
        if (WASMUDF__VARLEN(RET)) {                                                           \
            spans = WASMUDF__PTR(wasmudf__span, wasmudf_alloc(n * sizeof *spans, 4));         \
            if (!spans) return 1;                                                             \
        }                                                                                     \
        wasmudf__failed = false;                                                              \
        o->null_count = 0;                                                                    \
        for (uint32_t r = 0; r < n; r++) {                                                    \
            wasmudf__row_null = false;                                                        \
            WASMUDF_CTYPE(RET) v = CALL;                                                      \
            if (wasmudf__failed) return 1;                                                    \
            if (wasmudf__row_null) wasmudf__set_null_at(o, spans, r);                         \
            else wasmudf__set_##RET(o, spans, r, v);                                          \
        }                                                                                     \
        return WASMUDF__PACK(RET)(o, spans);                                                  \
    }

#define WASMUDF_SCALAR(NAME, RET, DOC, ...)                                                   \
    WASMUDF__SCALAR_IMPL(NAME, RET, DOC, "strict", WASMUDF__NARGS(__VA_ARGS__),               \
                         NAME(WASMUDF__MAP(WASMUDF__ARG_STRICT, WASMUDF__COMMA, __VA_ARGS__)), \
                         WASMUDF__MAP(WASMUDF__TYPE_JSON, WASMUDF__JSON_COMMA, __VA_ARGS__))

#define WASMUDF_SCALAR_CALLED(NAME, RET, DOC, ...)                                            \
    WASMUDF__SCALAR_IMPL(NAME, RET, DOC, "called", WASMUDF__NARGS(__VA_ARGS__),               \
                         NAME(WASMUDF__MAP(WASMUDF__ARG_CALLED, WASMUDF__COMMA, __VA_ARGS__)), \
                         WASMUDF__MAP(WASMUDF__TYPE_JSON, WASMUDF__JSON_COMMA, __VA_ARGS__))

#define WASMUDF_SCALAR0(NAME, RET, DOC) WASMUDF__SCALAR_IMPL(NAME, RET, DOC, "strict", 0, NAME(), "")

/* Ask for a host capability ("log", "config_get", "secret_get"). */
#define WASMUDF_CAPABILITY(CAP)                                                               \
    __attribute__((used)) static const char WASMUDF__CAT(wasmudf__cap_, __LINE__)[] =         \
        "WASMUDF-MANIFEST-FRAGMENT:{\"capability\":\"" CAP "\"}";

__attribute__((import_module("wasmudf"), import_name("log"))) void wasmudf_log_raw(int32_t level, const char *ptr, uint32_t len);

/* ------------------------------------------------------------ aggregate states --------- */
/* States outlive wasmudf_reset, so they get their own allocator: power-of-two size classes
 * with free lists, over pages from memory.grow. A block's 8-byte header holds its class. */

#define WASMUDF__CLASSES 28 /* 16 B .. 2 GiB */

WASMUDF_WEAK uint32_t wasmudf__free_list[WASMUDF__CLASSES];
WASMUDF_WEAK uint32_t wasmudf__state_cursor;
WASMUDF_WEAK uint32_t wasmudf__state_end;

static inline uint32_t wasmudf__class_of(uint32_t size) {
    uint32_t k = 0;
    while (k < WASMUDF__CLASSES && (16u << k) < size) k++;
    return k;
}

WASMUDF_WEAK void *wasmudf_state_alloc(uint32_t size) {
    if (size > 0x7FFFFFF0u) return 0;
    uint32_t k = wasmudf__class_of(size + 8);
    if (k >= WASMUDF__CLASSES) return 0;
    uint32_t block = wasmudf__free_list[k];
    uint32_t bytes = 16u << k;
    if (block) {
        wasmudf__free_list[k] = *WASMUDF__PTR(uint32_t, block + 8);
    } else {
        if (wasmudf__state_end - wasmudf__state_cursor < bytes) {
            wasmudf__arena_init(); /* so the arena never takes pages states live in */
            wasmudf__chunk fresh = wasmudf__grow(bytes);
            if (fresh.end == 0) return 0;
            wasmudf__state_cursor = fresh.start;
            wasmudf__state_end = fresh.end;
        }
        block = wasmudf__state_cursor;
        wasmudf__state_cursor += bytes;
    }
    *WASMUDF__PTR(uint32_t, block) = k;
    __builtin_memset(WASMUDF__PTR(void, block + 8), 0, bytes - 8);
    return WASMUDF__PTR(void, block + 8);
}

WASMUDF_WEAK void wasmudf_state_free(void *p) {
    if (!p) return;
    uint32_t block = (uint32_t)(uintptr_t)p - 8;
    uint32_t k = *WASMUDF__PTR(uint32_t, block);
    *(uint32_t *)p = wasmudf__free_list[k];
    wasmudf__free_list[k] = block;
}

/* The usable bytes of a block from wasmudf_state_alloc (at least what was asked for): grow
 * arrays to this capacity rather than to exact powers of two, which would waste half. */
WASMUDF_WEAK uint32_t wasmudf_state_size(const void *p) {
    if (!p) return 0;
    return (16u << *WASMUDF__PTR(const uint32_t, (uint32_t)(uintptr_t)p - 8)) - 8;
}

/* Like realloc: the first min(old, size) bytes are kept, the rest zeroed; NULL on failure
 * (and `p` is untouched). */
WASMUDF_WEAK void *wasmudf_state_realloc(void *p, uint32_t size) {
    if (!p) return wasmudf_state_alloc(size);
    uint32_t k = *WASMUDF__PTR(uint32_t, (uint32_t)(uintptr_t)p - 8);
    uint32_t capacity = (16u << k) - 8;
    if (size <= capacity) return p;
    void *q = wasmudf_state_alloc(size);
    if (!q) return 0;
    __builtin_memcpy(q, p, capacity);
    wasmudf_state_free(p);
    return q;
}

/* ------------------------------------------------------------ the C library ----------- */
/* C sources are built against wasi-libc (string.h, ctype.h, stdlib.h, math.h, stdio.h's
 * snprintf, ...): pure functions that need no import. Two of its pieces are replaced here,
 * weakly, so the user's code and libc's both get these instead: the allocator (over the
 * state allocator above, so the arena stays the SDK's own) and a failed assert(), which
 * fails the call with its message rather than writing to stderr (an import) and aborting. */

WASMUDF_WEAK void *malloc(size_t size) { return size > 0x7FFFFFF0u ? 0 : wasmudf_state_alloc((uint32_t)size); }
WASMUDF_WEAK void free(void *p) { wasmudf_state_free(p); }
WASMUDF_WEAK void *calloc(size_t n, size_t size) {
    if (size && n > 0x7FFFFFF0u / size) return 0;
    return malloc(n * size); /* the state allocator zeroes */
}
WASMUDF_WEAK void *realloc(void *p, size_t size) {
    return size > 0x7FFFFFF0u ? 0 : wasmudf_state_realloc(p, (uint32_t)size);
}
WASMUDF_WEAK _Noreturn void __assert_fail(const char *expr, const char *file, int line, const char *func) {
    (void)file; (void)line; (void)func;
    wasmudf__set_message("assertion failed: ");
    uint32_t at = 18, i = 0;
    while (expr[i] && at < sizeof wasmudf__message - 1) wasmudf__message[at++] = expr[i++];
    wasmudf__message[at] = 0;
    __builtin_trap(); /* the host reports the trap with this message */
}

/* ------------------------------------------------------------ whole batches ----------- */
/* For the shapes the type tokens do not reach (a struct, a list of structs): NAME is
 * `int32_t NAME(const wasmudf_column *args, uint32_t nargs, wasmudf_column *out)` over the
 * whole batch, RET and PARAMS the manifest's type names as strings, as in
 * WASMUDF_SCALAR_BATCH(bbox, "struct<...>", "doc", "\"list<float64>\""). A struct column's
 * fields are wasmudf_field(c, i); a result struct's fields are prepared by the host like
 * any result column (validity all set, values ready for `length` rows). */
#define WASMUDF_SCALAR_BATCH(NAME, RET, DOC, PARAMS)                                          \
    WASMUDF__FRAGMENT(NAME, "{\"name\":\"" #NAME "\",\"kind\":\"scalar\",\"params\":["     \
                            PARAMS "],\"returns\":\"" RET "\",\"doc\":\"" DOC "\"}")          \
    WASMUDF_EXPORT(#NAME) int32_t wasmudf__scalar_##NAME(uint32_t args, uint32_t nargs,      \
                                                          uint32_t out) {                     \
        wasmudf__failed = false;                                                              \
        int32_t status = NAME(WASMUDF__PTR(const wasmudf_column, args), nargs,                \
                              WASMUDF__PTR(wasmudf_column, out));                             \
        return status ? status : wasmudf__failed ? 1 : 0;                                     \
    }

static inline wasmudf_column *wasmudf_field(const wasmudf_column *c, uint32_t i) {
    return WASMUDF__PTR(wasmudf_column, c->values) + i;
}
static inline bool wasmudf_valid(const wasmudf_column *c, uint32_t r) { return wasmudf__valid(c, r); }
static inline void wasmudf_set_null_at(wasmudf_column *o, uint32_t r) { wasmudf__set_null_at(o, 0, r); }
#define wasmudf_get(T, c, r) wasmudf__get_##T((c), (r))
#define wasmudf_set(T, c, r, v) wasmudf__set_##T((c), 0, (r), (v))

/* ------------------------------------------------------------ aggregates --------------- */

#define WASMUDF__ARG_VALID(i, T) wasmudf__valid(&a[i], r)
#define WASMUDF__AND() &&

/* The batch loop shared by __update and __inverse: FN(state, row values...) per valid row. */
#define WASMUDF__AGG_FOLD(NAME, SUFFIX, FN, STATE, ...)                                       \
    WASMUDF_EXPORT(#NAME "__" #SUFFIX) int32_t wasmudf__##SUFFIX##_##NAME(                      \
        uint32_t state, uint32_t args, uint32_t nargs) {                                      \
        STATE *s = WASMUDF__PTR(STATE, state);                                                \
        const wasmudf_column *a = WASMUDF__PTR(const wasmudf_column, args);                   \
        if (nargs != WASMUDF__NARGS(__VA_ARGS__)) {                                           \
            wasmudf__set_message(#NAME ": wrong number of arguments");                        \
            return 1;                                                                         \
        }                                                                                     \
        uint32_t n = a[0].length;                                                             \
        wasmudf__failed = false;                                                              \
        for (uint32_t r = 0; r < n; r++) {                                                    \
            if (!(WASMUDF__MAP(WASMUDF__ARG_VALID, WASMUDF__AND, __VA_ARGS__))) continue;    \
            FN(s, WASMUDF__MAP(WASMUDF__ARG_STRICT, WASMUDF__COMMA, __VA_ARGS__));           \
            if (wasmudf__failed) return 1;                                                    \
        }                                                                                     \
        return 0;                                                                             \
    }

/* Write FN(s) as row 0 of `out`; the state is released afterwards when RELEASE. */
#define WASMUDF__AGG_RESULT(NAME, SUFFIX, FN, RET, STATE, RELEASE)                            \
    WASMUDF_EXPORT(#NAME "__" #SUFFIX) int32_t wasmudf__##SUFFIX##_##NAME(uint32_t state,    \
                                                                      uint32_t out) {        \
        STATE *s = WASMUDF__PTR(STATE, state);                                                \
        wasmudf_column *o = WASMUDF__PTR(wasmudf_column, out);                                \
        wasmudf__span span[1] = {{0, 0}};                                                     \
        wasmudf__failed = false;                                                              \
        wasmudf__row_null = false;                                                            \
        o->null_count = 0;                                                                    \
        WASMUDF_CTYPE(RET) v = FN(s);                                                         \
        int32_t status = wasmudf__failed ? 1 : 0;                                             \
        if (!status) {                                                                        \
            if (wasmudf__row_null) wasmudf__set_null_at(o, span, 0);                          \
            else wasmudf__set_##RET(o, span, 0, v);                                           \
            /* Pack before the state goes: a result may point into it. */                     \
            status = WASMUDF__PACK(RET)(o, span);                                             \
        }                                                                                     \
        if (RELEASE) wasmudf__release_##NAME(s);                                              \
        return status;                                                                        \
    }

#define WASMUDF__AGG_IMPL(NAME, RET, DOC, STATE, WINDOW, ...)                                 \
    WASMUDF__FRAGMENT(NAME, "{\"name\":\"" #NAME "\",\"kind\":\"aggregate\",\"params\":["  \
                            WASMUDF__MAP(WASMUDF__TYPE_JSON, WASMUDF__JSON_COMMA, __VA_ARGS__) \
                            "],\"returns\":\"" WASMUDF__TYPENAME(RET) "\",\"window\":" WINDOW \
                            ",\"doc\":\"" DOC "\"}")                                          \
    typedef STATE wasmudf__state_##NAME;                                                      \
    void NAME##_init(STATE *s) WASMUDF_WEAK;                                                  \
    void NAME##_destroy(STATE *s) WASMUDF_WEAK;                                               \
    static void wasmudf__release_##NAME(STATE *s) {                                           \
        if (NAME##_destroy) NAME##_destroy(s);                                                \
        wasmudf_state_free(s);                                                                \
    }                                                                                         \
    WASMUDF_EXPORT(#NAME "__init") uint32_t wasmudf__init_##NAME(void) {                     \
        STATE *s = (STATE *)wasmudf_state_alloc(sizeof(STATE));                               \
        if (!s) {                                                                             \
            wasmudf__set_message(#NAME ": out of memory for a new state");                    \
            return 0;                                                                         \
        }                                                                                     \
        wasmudf__failed = false;                                                              \
        if (NAME##_init) NAME##_init(s);                                                      \
        if (wasmudf__failed) {                                                                \
            wasmudf__release_##NAME(s);                                                       \
            return 0;                                                                         \
        }                                                                                     \
        return (uint32_t)(uintptr_t)s;                                                        \
    }                                                                                         \
    WASMUDF__AGG_FOLD(NAME, update, NAME##_step, STATE, __VA_ARGS__)                          \
    WASMUDF__AGG_RESULT(NAME, finalize, NAME##_final, RET, STATE, 1)

#define WASMUDF_AGGREGATE(NAME, RET, DOC, STATE, ...)                                         \
    WASMUDF__AGG_IMPL(NAME, RET, DOC, STATE, "false", __VA_ARGS__)

#define WASMUDF_WINDOW_AGGREGATE(NAME, RET, DOC, STATE, ...)                                  \
    WASMUDF__AGG_IMPL(NAME, RET, DOC, STATE, "true", __VA_ARGS__)                             \
    WASMUDF__AGG_FOLD(NAME, inverse, NAME##_inverse, STATE, __VA_ARGS__)                      \
    WASMUDF__AGG_RESULT(NAME, value, NAME##_final, RET, STATE, 0)

#define WASMUDF_AGGREGATE_MERGE(NAME)                                                         \
    WASMUDF_EXPORT(#NAME "__merge") int32_t wasmudf__merge_##NAME(uint32_t state,            \
                                                                   uint32_t other) {          \
        wasmudf__state_##NAME *s = WASMUDF__PTR(wasmudf__state_##NAME, state);                \
        wasmudf__state_##NAME *t = WASMUDF__PTR(wasmudf__state_##NAME, other);                \
        wasmudf__failed = false;                                                              \
        NAME##_merge(s, t);                                                                   \
        wasmudf__release_##NAME(t);                                                           \
        return wasmudf__failed ? 1 : 0;                                                       \
    }

/* ------------------------------------------------------------ table functions --------- */

/* The rows one `next` call appends to: columns as the host prepared them, up to `capacity`
 * rows; the row being written is number `count`. */
typedef struct {
    wasmudf_column *cols;
    uint32_t ncols, capacity, count;
    wasmudf__span *spans; /* capacity per column, for utf8/binary values */
} wasmudf_rows;

static inline bool wasmudf_rows_full(const wasmudf_rows *t) { return t->count >= t->capacity; }

/* The row being written is complete: the next wasmudf_put_* calls fill the one after it. */
static inline void wasmudf_emit(wasmudf_rows *t) {
    if (t->count < t->capacity) t->count++;
}

#define wasmudf__code_bool 1
#define wasmudf__code_int32 2
#define wasmudf__code_int64 3
#define wasmudf__code_float32 4
#define wasmudf__code_float64 5
#define wasmudf__code_utf8 6
#define wasmudf__code_binary 7
#define wasmudf__code_date 8
#define wasmudf__code_timestamp 9
#define wasmudf__code_timestamptz 10

static inline bool wasmudf__column_is(wasmudf_rows *t, uint32_t col, uint32_t code) {
    if (col < t->ncols && t->cols[col].type == code && t->count < t->capacity) return true;
    wasmudf_fail("wasmudf_put: no such column of that type, or the batch is full");
    return false;
}

#define WASMUDF__PUT(T)                                                                        \
    static inline void wasmudf_put_##T(wasmudf_rows *t, uint32_t col, WASMUDF_CTYPE(T) v) {    \
        if (wasmudf__column_is(t, col, wasmudf__code_##T))                                    \
            wasmudf__set_##T(&t->cols[col], t->spans + (size_t)col * t->capacity, t->count, v); \
    }
WASMUDF__PUT(bool)
WASMUDF__PUT(int32)
WASMUDF__PUT(int64)
WASMUDF__PUT(float32)
WASMUDF__PUT(float64)
WASMUDF__PUT(utf8)
WASMUDF__PUT(binary)
WASMUDF__PUT(date)
WASMUDF__PUT(timestamp)
WASMUDF__PUT(timestamptz)

static inline void wasmudf_put_null(wasmudf_rows *t, uint32_t col) {
    if (col < t->ncols && t->count < t->capacity)
        wasmudf__set_null_at(&t->cols[col], t->spans + (size_t)col * t->capacity, t->count);
}

#define WASMUDF_TABLE(NAME, DOC, STATE, COLUMNS, ...)                                         \
    WASMUDF__FRAGMENT(NAME, "{\"name\":\"" #NAME "\",\"kind\":\"table\",\"params\":["      \
                            WASMUDF__MAP(WASMUDF__TYPE_JSON, WASMUDF__JSON_COMMA, __VA_ARGS__) \
                            "],\"columns\":\"" COLUMNS "\",\"doc\":\"" DOC "\"}")           \
    typedef struct { STATE user; bool finished; } wasmudf__table_##NAME;                      \
    void NAME##_close(STATE *s) WASMUDF_WEAK;                                                 \
    WASMUDF_EXPORT(#NAME "__open") uint32_t wasmudf__open_##NAME(uint32_t args, uint32_t nargs) { \
        const wasmudf_column *a = WASMUDF__PTR(const wasmudf_column, args);                   \
        const uint32_t r = 0;                                                                 \
        if (nargs != WASMUDF__NARGS(__VA_ARGS__)) {                                           \
            wasmudf__set_message(#NAME ": wrong number of arguments");                        \
            return 0;                                                                         \
        }                                                                                     \
        wasmudf__table_##NAME *w = (wasmudf__table_##NAME *)wasmudf_state_alloc(sizeof *w);   \
        if (!w) {                                                                             \
            wasmudf__set_message(#NAME ": out of memory for a call");                         \
            return 0;                                                                         \
        }                                                                                     \
        wasmudf__failed = false;                                                              \
        NAME##_open(&w->user, WASMUDF__MAP(WASMUDF__ARG_STRICT, WASMUDF__COMMA, __VA_ARGS__)); \
        if (wasmudf__failed) {                                                                \
            if (NAME##_close) NAME##_close(&w->user);                                         \
            wasmudf_state_free(w);                                                            \
            return 0;                                                                         \
        }                                                                                     \
        return (uint32_t)(uintptr_t)w;                                                        \
    }                                                                                         \
    WASMUDF_EXPORT(#NAME "__next") int32_t wasmudf__next_##NAME(uint32_t state, uint32_t outs, \
                                                                 uint32_t ncols) {            \
        wasmudf__table_##NAME *w = WASMUDF__PTR(wasmudf__table_##NAME, state);                \
        if (w->finished || !ncols) return 0;                                                  \
        wasmudf_rows t = {WASMUDF__PTR(wasmudf_column, outs), ncols, 0, 0, 0};                \
        t.capacity = t.cols[0].length;                                                        \
        uint32_t bytes = ncols * t.capacity * (uint32_t)sizeof(wasmudf__span);                \
        t.spans = WASMUDF__PTR(wasmudf__span, wasmudf_alloc(bytes, 4));                       \
        if (!t.spans) return -1;                                                              \
        __builtin_memset(t.spans, 0, bytes);                                                  \
        for (uint32_t c = 0; c < ncols; c++) t.cols[c].null_count = 0;                        \
        wasmudf__failed = false;                                                              \
        bool more;                                                                            \
        do more = NAME##_next(&w->user, &t); /* 0 rows would mean the end to the host */      \
        while (more && !t.count && !wasmudf__failed);                                         \
        if (wasmudf__failed) return -1;                                                       \
        if (!more) w->finished = true;                                                        \
        for (uint32_t c = 0; c < ncols; c++)                                                  \
            if ((t.cols[c].type == 6 || t.cols[c].type == 7) &&                               \
                wasmudf__pack_n(&t.cols[c], t.spans + (size_t)c * t.capacity, t.count))       \
                return -1;                                                                    \
        return (int32_t)t.count;                                                              \
    }                                                                                         \
    WASMUDF_EXPORT(#NAME "__close") void wasmudf__close_##NAME(uint32_t state) {             \
        wasmudf__table_##NAME *w = WASMUDF__PTR(wasmudf__table_##NAME, state);                \
        if (NAME##_close) NAME##_close(&w->user);                                             \
        wasmudf_state_free(w);                                                                \
    }

/* __serialize(state, out): the state's bytes as one binary row, the state released (ABI §5);
 * __deserialize(bytes, len): a new state from them, 0 on failure. */
#define WASMUDF_AGGREGATE_SERIALIZE(NAME)                                                     \
    WASMUDF__AGG_RESULT(NAME, serialize, NAME##_serialize, binary, wasmudf__state_##NAME, 1)  \
    WASMUDF_EXPORT(#NAME "__deserialize") uint32_t wasmudf__deserialize_##NAME(uint32_t ptr, \
                                                                             uint32_t len) { \
        wasmudf__state_##NAME *s =                                                            \
            (wasmudf__state_##NAME *)wasmudf_state_alloc(sizeof(wasmudf__state_##NAME));      \
        if (!s) {                                                                             \
            wasmudf__set_message(#NAME ": out of memory for a state");                        \
            return 0;                                                                         \
        }                                                                                     \
        wasmudf__failed = false;                                                              \
        NAME##_deserialize(s, (wasmudf_bytes){WASMUDF__PTR(const uint8_t, ptr), len});        \
        if (wasmudf__failed) {                                                                \
            wasmudf__release_##NAME(s);                                                       \
            return 0;                                                                         \
        }                                                                                     \
        return (uint32_t)(uintptr_t)s;                                                        \
    }

/* A State of plain data: its bytes are the serialized form. */
#define WASMUDF_AGGREGATE_FLAT_STATE(NAME)                                                    \
    static wasmudf_bytes NAME##_serialize(wasmudf__state_##NAME *s) {                         \
        return (wasmudf_bytes){(const uint8_t *)s, sizeof *s};                                \
    }                                                                                         \
    static void NAME##_deserialize(wasmudf__state_##NAME *s, wasmudf_bytes b) {               \
        if (b.len != sizeof *s) {                                                             \
            wasmudf_fail(#NAME ": a serialized state of the wrong size");                     \
            return;                                                                           \
        }                                                                                     \
        __builtin_memcpy(s, b.ptr, sizeof *s);                                                \
    }                                                                                         \
    WASMUDF_AGGREGATE_SERIALIZE(NAME)

#endif /* WASMUDF_H */
