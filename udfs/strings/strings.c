/* String UDFs in C: the Levenshtein distance, as the benchmarks compare with a native build. */
#include "wasmudf.h"

/* Decode UTF-8 into code points (an invalid byte counts as one code point of its own). */
static uint32_t decode(wasmudf_str s, uint32_t *out) {
    uint32_t n = 0;
    for (uint32_t i = 0; i < s.len; n++) {
        unsigned char c = (unsigned char)s.ptr[i];
        uint32_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
        if (i + len > s.len) len = 1;
        uint32_t cp = len == 1 ? c : (uint32_t)(c & (0x7F >> len));
        for (uint32_t k = 1; k < len; k++) cp = (cp << 6) | ((unsigned char)s.ptr[i + k] & 0x3F);
        out[n] = cp;
        i += len;
    }
    return n;
}

/* Edit distance (insertions, deletions, substitutions) between two strings, in code points;
 * one row of the dynamic-programming table, so memory is O(len(b)). */
static int64_t lev_distance(wasmudf_str a_text, wasmudf_str b_text) {
    uint32_t *a = (uint32_t *)(uintptr_t)wasmudf_alloc((a_text.len + 1) * 4, 4);
    uint32_t *b = (uint32_t *)(uintptr_t)wasmudf_alloc((b_text.len + 1) * 4, 4);
    uint32_t *row = (uint32_t *)(uintptr_t)wasmudf_alloc((b_text.len + 1) * 4, 4);
    if (!a || !b || !row) { wasmudf_fail("lev_distance: out of memory"); return 0; }
    uint32_t n = decode(a_text, a), m = decode(b_text, b);
    for (uint32_t j = 0; j <= m; j++) row[j] = j;
    for (uint32_t i = 0; i < n; i++) {
        uint32_t diagonal = row[0];
        row[0] = i + 1;
        for (uint32_t j = 0; j < m; j++) {
            uint32_t above = row[j + 1];
            uint32_t best = above + 1 < row[j] + 1 ? above + 1 : row[j] + 1;
            uint32_t swap = diagonal + (a[i] != b[j]);
            row[j + 1] = best < swap ? best : swap;
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
