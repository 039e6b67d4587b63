/* SQL functions over fuzzy.c, which is compiled unchanged beside this glue: the SDK's
 * strings are not NUL-terminated, so each argument is copied into a C string first. */
#include "wasmudf.h"
#include "fuzzy.h"

static double jaro_winkler(wasmudf_str a, wasmudf_str b) {
    double d = fuzzy_jaro_winkler(wasmudf_cstr(a), wasmudf_cstr(b));
    if (d < 0) wasmudf_fail("jaro_winkler: out of memory");
    return d;
}
WASMUDF_SCALAR(jaro_winkler, float64, "Jaro-Winkler similarity of two strings (bytes), 0 to 1", utf8, utf8)

static wasmudf_str soundex_code(wasmudf_str word) {
    char code[5];
    return wasmudf_str_from_cstr(fuzzy_soundex(wasmudf_cstr(word), code));
}
WASMUDF_SCALAR(soundex_code, utf8, "American Soundex code of a word", utf8)
