/* fuzzy: string similarity in plain C (no wasmudf in here). Jaro and Jaro-Winkler
 * similarity of byte strings, and American Soundex codes. */
#ifndef FUZZY_H
#define FUZZY_H

/* Jaro similarity of two NUL-terminated strings, in [0, 1]; 1 for two empty strings. */
double fuzzy_jaro(const char *a, const char *b);

/* Jaro-Winkler: Jaro raised for a common prefix of up to 4 characters (scale 0.1). */
double fuzzy_jaro_winkler(const char *a, const char *b);

/* The 4-character Soundex code of a word (letters only count) into out[5]; "" for a string
 * without letters. Returns out. */
char *fuzzy_soundex(const char *word, char out[5]);

#endif
