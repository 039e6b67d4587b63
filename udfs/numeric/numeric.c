/* Numeric UDFs: distances, clamping, integer arithmetic that never traps. */
#include "wasmudf.h"

/* Freestanding wasm32 has no libm: sqrt is a single instruction, sin/cos/asin are ours. */
static double sq(double x) { return x * x; }

static double sin_approx(double x) {
    /* Reduce to [-pi, pi], then a Taylor series to x^15: error below 1e-12 there. */
    const double pi = 3.14159265358979323846, two_pi = 6.28318530717958647692;
    x = x - two_pi * __builtin_floor((x + pi) / two_pi);
    double term = x, sum = x, x2 = x * x;
    for (int k = 1; k < 12; k++) {
        term *= -x2 / ((2 * k) * (2 * k + 1));
        sum += term;
    }
    return sum;
}
static double cos_approx(double x) { return sin_approx(x + 1.57079632679489661923); }

static double atan_approx(double x) {
    /* atan via argument halving then a short series: |error| < 1e-13. */
    int negate = x < 0;
    if (negate) x = -x;
    int invert = x > 1;
    if (invert) x = 1 / x;
    int halvings = 0;
    while (x > 0.1) { x = x / (1 + __builtin_sqrt(1 + x * x)); halvings++; }
    double x2 = x * x, term = x, sum = x;
    for (int k = 1; k < 10; k++) { term *= -x2; sum += term / (2 * k + 1); }
    sum *= (double)(1 << halvings);
    if (invert) sum = 1.57079632679489661923 - sum;
    return negate ? -sum : sum;
}
static double asin_approx(double x) { return atan_approx(x / __builtin_sqrt(1 - x * x)); }

/* Great-circle distance between two (lat, lon) points in degrees, on a 6371 km sphere. */
static double haversine_km(double lat1, double lon1, double lat2, double lon2) {
    const double rad = 3.14159265358979323846 / 180.0;
    double a = sq(sin_approx((lat2 - lat1) * rad / 2)) +
               cos_approx(lat1 * rad) * cos_approx(lat2 * rad) * sq(sin_approx((lon2 - lon1) * rad / 2));
    if (a > 1) a = 1;
    if (a >= 1) return 2 * 6371.0 * 1.57079632679489661923;
    return 2 * 6371.0 * asin_approx(__builtin_sqrt(a));
}
WASMUDF_SCALAR(haversine_km, float64, "great-circle distance in km between (lat1, lon1) and (lat2, lon2) in degrees",
               float64, float64, float64, float64)

/* x limited to [lo, hi]; NULL when lo > hi or any input is NaN. */
static double clamp(double x, double lo, double hi) {
    if (lo > hi || x != x || lo != lo || hi != hi) { wasmudf_set_null(); return 0; }
    return x < lo ? lo : x > hi ? hi : x;
}
WASMUDF_SCALAR(clamp, float64, "x limited to [lo, hi]; NULL when lo > hi or an input is NaN",
               float64, float64, float64)

/* Integer division truncating toward zero; NULL instead of a trap on zero or overflow. */
static int64_t safe_div(int64_t a, int64_t b) {
    if (b == 0 || (a == INT64_MIN && b == -1)) { wasmudf_set_null(); return 0; }
    return a / b;
}
WASMUDF_SCALAR(safe_div, int64, "a / b truncated toward zero; NULL when b = 0 or on overflow", int64, int64)

static int64_t add_i64(int64_t a, int64_t b) { return (int64_t)((uint64_t)a + (uint64_t)b); }
WASMUDF_SCALAR(add_i64, int64, "a + b, wrapping on overflow", int64, int64)

static int32_t gcd_i32(int32_t a, int32_t b) {
    uint32_t x = a < 0 ? 0u - (uint32_t)a : (uint32_t)a, y = b < 0 ? 0u - (uint32_t)b : (uint32_t)b;
    while (y) { uint32_t t = x % y; x = y; y = t; }
    if (x > INT32_MAX) { wasmudf_set_null(); return 0; } /* gcd(INT32_MIN, 0) = 2^31 */
    return (int32_t)x;
}
WASMUDF_SCALAR(gcd_i32, int32, "greatest common divisor of |a| and |b|; NULL when it exceeds int32", int32, int32)

static float lerp_f32(float a, float b, float t) { return a + (b - a) * t; }
WASMUDF_SCALAR(lerp_f32, float32, "linear interpolation a + (b - a) * t in single precision",
               float32, float32, float32)

static bool is_finite(double x) { return x == x && x - x == 0; }
WASMUDF_SCALAR(is_finite, bool, "true unless x is NaN or infinite", float64)

/* The first non-NULL argument (like coalesce), NULL when both are NULL. */
static double coalesce_f64(wasmudf_nullable_float64 a, wasmudf_nullable_float64 b) {
    if (!a.is_null) return a.value;
    if (!b.is_null) return b.value;
    wasmudf_set_null();
    return 0;
}
WASMUDF_SCALAR_CALLED(coalesce_f64, float64, "a if it is not NULL, else b", float64, float64)
