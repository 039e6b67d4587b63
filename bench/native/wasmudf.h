/*
 * A native stand-in for the SDK header, so the very same UDF sources in udfs/ compile with
 * gcc into a shared library the benchmarks call through ctypes: the physical limit a Wasm
 * build is measured against.
 *
 * For each WASMUDF_SCALAR(name, ...) it defines
 *     void native_name(const void *const *columns, const uint32_t *const *offsets, void *out, size_t n)
 * (column i: values, plus offsets for utf8/binary; out: n results of the return type), and
 * for each aggregate
 *     RET native_name(const void *const *columns, const uint32_t *const *offsets, size_t n)
 * folding all n rows into one state. NULLs are not modelled: benchmarks feed none.
 */
#ifndef WASMUDF_H
#define WASMUDF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <malloc.h>

typedef struct { const char *ptr; uint32_t len; } wasmudf_str;
typedef struct { const uint8_t *ptr; uint32_t len; } wasmudf_bytes;

#define WASMUDF__NULLABLE(T, CT) typedef struct { bool is_null; CT value; } wasmudf_nullable_##T;
WASMUDF__NULLABLE(bool, bool)
WASMUDF__NULLABLE(int32, int32_t)
WASMUDF__NULLABLE(int64, int64_t)
WASMUDF__NULLABLE(float32, float)
WASMUDF__NULLABLE(float64, double)
WASMUDF__NULLABLE(utf8, wasmudf_str)
WASMUDF__NULLABLE(binary, wasmudf_bytes)

#define wasmudf__ctype_bool bool
#define wasmudf__ctype__Bool bool
#define wasmudf__ctype_int32 int32_t
#define wasmudf__ctype_int64 int64_t
#define wasmudf__ctype_float32 float
#define wasmudf__ctype_float64 double
#define wasmudf__ctype_utf8 wasmudf_str
#define wasmudf__ctype_binary wasmudf_bytes
#define WASMUDF_CTYPE(T) wasmudf__ctype_##T

static bool wasmudf__failed;
static bool wasmudf__row_null;
static inline void wasmudf_set_null(void) { wasmudf__row_null = true; }
static inline void wasmudf_fail(const char *message) { (void)message; wasmudf__failed = true; }

/* Scratch that lives for one row, like the arena between the host's resets. */
static unsigned char *wasmudf__scratch;
static size_t wasmudf__scratch_cap, wasmudf__scratch_used;
static inline uintptr_t wasmudf_alloc(uint32_t size, uint32_t align) {
    size_t p = (wasmudf__scratch_used + align - 1) & ~(size_t)(align - 1);
    if (p + size > wasmudf__scratch_cap) {
        size_t cap = (p + size) * 2 + 4096;
        unsigned char *grown = realloc(wasmudf__scratch, cap);
        if (!grown) return 0;
        wasmudf__scratch = grown;
        wasmudf__scratch_cap = cap;
    }
    wasmudf__scratch_used = p + size;
    return (uintptr_t)(wasmudf__scratch + p);
}
static inline void wasmudf__reset(void) { wasmudf__scratch_used = 0; }
static inline char *wasmudf_str_alloc(uint32_t len) { return (char *)wasmudf_alloc(len, 1); }
static inline wasmudf_str wasmudf_str_of(const char *ptr, uint32_t len) { return (wasmudf_str){ptr, len}; }
static inline wasmudf_bytes wasmudf_bytes_of(const uint8_t *ptr, uint32_t len) { return (wasmudf_bytes){ptr, len}; }

static inline void *wasmudf_state_alloc(uint32_t size) { return calloc(1, size ? size : 1); }
static inline void wasmudf_state_free(void *p) { free(p); }
static inline void *wasmudf_state_realloc(void *p, uint32_t size) { return realloc(p, size); }
static inline uint32_t wasmudf_state_size(const void *p) { return p ? (uint32_t)malloc_usable_size((void *)p) : 0; }

#define native__get_bool(c, o, r) (((const uint8_t *)(c))[r] != 0)
#define native__get__Bool native__get_bool
#define native__get_int32(c, o, r) (((const int32_t *)(c))[r])
#define native__get_int64(c, o, r) (((const int64_t *)(c))[r])
#define native__get_float32(c, o, r) (((const float *)(c))[r])
#define native__get_float64(c, o, r) (((const double *)(c))[r])
#define native__get_utf8(c, o, r) ((wasmudf_str){(const char *)(c) + (o)[r], (o)[(r) + 1] - (o)[r]})
#define native__get_binary(c, o, r) ((wasmudf_bytes){(const uint8_t *)(c) + (o)[r], (o)[(r) + 1] - (o)[r]})

#define WASMUDF__CAT(a, b) WASMUDF__CAT2(a, b)
#define WASMUDF__CAT2(a, b) a##b
#define WASMUDF__NARGS(...) WASMUDF__NARGS_(__VA_ARGS__, 8, 7, 6, 5, 4, 3, 2, 1, 0)
#define WASMUDF__NARGS_(a1, a2, a3, a4, a5, a6, a7, a8, n, ...) n
#define WASMUDF__MAP(M, SEP, ...) WASMUDF__CAT(WASMUDF__MAP, WASMUDF__NARGS(__VA_ARGS__))(M, SEP, __VA_ARGS__)
#define WASMUDF__MAP1(M, S, a) M(0, a)
#define WASMUDF__MAP2(M, S, a, b) M(0, a) S() M(1, b)
#define WASMUDF__MAP3(M, S, a, b, c) WASMUDF__MAP2(M, S, a, b) S() M(2, c)
#define WASMUDF__MAP4(M, S, a, b, c, d) WASMUDF__MAP3(M, S, a, b, c) S() M(3, d)
#define WASMUDF__COMMA() ,
#define WASMUDF__ARG(i, T) native__get_##T(columns[i], offsets[i], r)

#define WASMUDF_SCALAR(NAME, RET, DOC, ...)                                                   \
    void native_##NAME(const void *const *columns, const uint32_t *const *offsets, void *out, size_t n) { \
        WASMUDF_CTYPE(RET) *o = out;                                                          \
        for (size_t r = 0; r < n; r++) {                                                      \
            wasmudf__reset();                                                                 \
            o[r] = NAME(WASMUDF__MAP(WASMUDF__ARG, WASMUDF__COMMA, __VA_ARGS__));            \
        }                                                                                     \
    }
#define WASMUDF_SCALAR_CALLED(NAME, RET, DOC, ...)
#define WASMUDF_SCALAR0(NAME, RET, DOC)
#define WASMUDF_CAPABILITY(CAP)

#define WASMUDF_AGGREGATE(NAME, RET, DOC, STATE, ...)                                         \
    void NAME##_init(STATE *s) __attribute__((weak));                                         \
    void NAME##_destroy(STATE *s) __attribute__((weak));                                      \
    WASMUDF_CTYPE(RET) native_##NAME(const void *const *columns, const uint32_t *const *offsets, size_t n) { \
        STATE s;                                                                              \
        memset(&s, 0, sizeof s);                                                              \
        if (NAME##_init) NAME##_init(&s);                                                     \
        for (size_t r = 0; r < n; r++) NAME##_step(&s, WASMUDF__MAP(WASMUDF__ARG, WASMUDF__COMMA, __VA_ARGS__)); \
        WASMUDF_CTYPE(RET) v = NAME##_final(&s);                                              \
        if (NAME##_destroy) NAME##_destroy(&s);                                               \
        return v;                                                                             \
    }
#define WASMUDF_WINDOW_AGGREGATE WASMUDF_AGGREGATE
#define WASMUDF_AGGREGATE_MERGE(NAME)
/* States never leave the one native call: nothing to serialize. */
#define WASMUDF_AGGREGATE_FLAT_STATE(NAME)
#define WASMUDF_AGGREGATE_SERIALIZE(NAME)

#endif
