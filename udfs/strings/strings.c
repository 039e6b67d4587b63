/* String UDFs in C: the Levenshtein distance, as the benchmarks compare with a native build. */
#include "wasmudf.h"

/* Decode UTF-8 into code points (an invalid byte counts as one code point of its own). */
static uint32_t decode(wasmudf_str s, uint32_t *out) {
    uint32_t n = 0;
    for (uint32_t i = 0; i < s.len; n++) {
        unsigned char c = (unsigned char)s.ptr[i];
        if (c < 0x80) { /* ASCII, the common case, without the multi-byte arithmetic */
            out[n] = c;
            i++;
            continue;
        }
        uint32_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
        if (i + len > s.len) len = 1;
        uint32_t cp = len == 1 ? c : (uint32_t)(c & (0x7F >> len));
        for (uint32_t k = 1; k < len; k++) cp = (cp << 6) | ((unsigned char)s.ptr[i + k] & 0x3F);
        out[n] = cp;
        i += len;
    }
    return n;
}

/* Code points a string may have to be decoded on the stack: short strings, the common case,
 * then take no arena memory, which would otherwise grow by each row's buffers until the
 * host resets it (cache misses on every row of a long batch). */
#define LEV_STACK 64

static uint32_t *code_points(wasmudf_str s, uint32_t *stack) {
    return s.len <= LEV_STACK ? stack : (uint32_t *)(uintptr_t)wasmudf_alloc((s.len + 1) * 4, 4);
}

/* Edit distance (insertions, deletions, substitutions) between two strings, in code points;
 * one row of the dynamic-programming table, so memory is O(len(b)). */
static int64_t lev_distance(wasmudf_str a_text, wasmudf_str b_text) {
    uint32_t a_stack[LEV_STACK], b_stack[LEV_STACK], row_stack[LEV_STACK + 1];
    uint32_t *a = code_points(a_text, a_stack), *b = code_points(b_text, b_stack);
    uint32_t *row = b_text.len <= LEV_STACK ? row_stack : (uint32_t *)(uintptr_t)wasmudf_alloc((b_text.len + 1) * 4, 4);
    if (!a || !b || !row) { wasmudf_fail("lev_distance: out of memory"); return 0; }
    uint32_t n = decode(a_text, a), m = decode(b_text, b);
    for (uint32_t j = 0; j <= m; j++) row[j] = j;
    for (uint32_t i = 0; i < n; i++) {
        /* The cell to the left and a[i] stay in locals: Cranelift, unlike gcc, would load
           them again on every step. */
        uint32_t ai = a[i], diagonal = row[0], left = i + 1;
        row[0] = left;
        for (uint32_t j = 0; j < m; j++) {
            uint32_t above = row[j + 1];
            uint32_t best = (above < left ? above : left) + 1;
            uint32_t swap = diagonal + (ai != b[j]);
            left = best < swap ? best : swap;
            row[j + 1] = left;
            diagonal = above;
        }
    }
    return row[m];
}
WASMUDF_SCALAR(lev_distance, int64, "Levenshtein distance between two strings, in code points", utf8, utf8)

/* FizzBuzz, the same function as fizzbuzz_zig, fizzbuzz_rs and the AssemblyScript fizzbuzz. */
static wasmudf_str fizzbuzz_c(int64_t n) {
    if (n % 15 == 0) return wasmudf_str_of("FizzBuzz", 8);
    if (n % 3 == 0) return wasmudf_str_of("Fizz", 4);
    if (n % 5 == 0) return wasmudf_str_of("Buzz", 4);
    char digits[20];
    uint32_t len = 0;
    uint64_t u = n < 0 ? (uint64_t)0 - (uint64_t)n : (uint64_t)n; /* INT64_MIN too */
    do { digits[len++] = (char)('0' + u % 10); u /= 10; } while (u);
    char *out = wasmudf_str_alloc(len + (n < 0));
    if (!out) return wasmudf_str_of(0, 0);
    uint32_t pos = 0;
    if (n < 0) out[pos++] = '-';
    while (len) out[pos++] = digits[--len];
    return wasmudf_str_of(out, pos);
}
WASMUDF_SCALAR(fizzbuzz_c, utf8, "Fizz for multiples of 3, Buzz of 5, FizzBuzz of both, else the number", int64)
