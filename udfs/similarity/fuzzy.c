/* fuzzy: string similarity in plain C. See fuzzy.h. Written against the C library as any
 * C code is (malloc, strlen, toupper, assert); wasmudf builds it unchanged. */
#include "fuzzy.h"

#include <assert.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

double fuzzy_jaro(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la == 0 && lb == 0) return 1.0;
    if (la == 0 || lb == 0) return 0.0;
    size_t window = (la > lb ? la : lb) / 2;
    window = window > 0 ? window - 1 : 0;
    char *ma = calloc(la, 1), *mb = calloc(lb, 1);
    if (!ma || !mb) {
        free(ma);
        free(mb);
        return -1.0;
    }
    size_t matches = 0;
    for (size_t i = 0; i < la; i++) {
        size_t lo = i > window ? i - window : 0, hi = i + window + 1 < lb ? i + window + 1 : lb;
        for (size_t j = lo; j < hi; j++) {
            if (!mb[j] && a[i] == b[j]) {
                ma[i] = mb[j] = 1;
                matches++;
                break;
            }
        }
    }
    double result = 0.0;
    if (matches) {
        size_t k = 0, half_transpositions = 0;
        for (size_t i = 0; i < la; i++) {
            if (!ma[i]) continue;
            while (!mb[k]) k++;
            if (a[i] != b[k]) half_transpositions++;
            k++;
        }
        double m = (double)matches;
        result = (m / la + m / lb + (m - half_transpositions / 2) / m) / 3.0;
    }
    free(ma);
    free(mb);
    assert(result >= 0.0 && result <= 1.0);
    return result;
}

double fuzzy_jaro_winkler(const char *a, const char *b) {
    double jaro = fuzzy_jaro(a, b);
    if (jaro < 0) return jaro;
    size_t prefix = 0;
    while (prefix < 4 && a[prefix] && a[prefix] == b[prefix]) prefix++;
    return jaro + prefix * 0.1 * (1.0 - jaro);
}

static char soundex_digit(char c) {
    switch (toupper((unsigned char)c)) {
    case 'B': case 'F': case 'P': case 'V': return '1';
    case 'C': case 'G': case 'J': case 'K': case 'Q': case 'S': case 'X': case 'Z': return '2';
    case 'D': case 'T': return '3';
    case 'L': return '4';
    case 'M': case 'N': return '5';
    case 'R': return '6';
    default: return '0'; /* vowels, H, W, Y */
    }
}

char *fuzzy_soundex(const char *word, char out[5]) {
    while (*word && !isalpha((unsigned char)*word)) word++;
    if (!*word) {
        out[0] = '\0';
        return out;
    }
    out[0] = (char)toupper((unsigned char)*word);
    char last = soundex_digit(*word);
    size_t n = 1;
    for (const char *p = word + 1; *p && n < 4; p++) {
        if (!isalpha((unsigned char)*p)) continue;
        char upper = (char)toupper((unsigned char)*p);
        char d = soundex_digit(*p);
        if (d != '0' && d != last) out[n++] = d;
        if (upper != 'H' && upper != 'W') last = d; /* H and W do not separate equal codes */
    }
    while (n < 4) out[n++] = '0';
    out[4] = '\0';
    return out;
}
