/* Money: decimal arithmetic that rounds the way accountants do (half to even). */
#include "wasmudf.h"

static wasmudf_decimal pow10(int k) {
    wasmudf_decimal p = 1;
    while (k-- > 0) p *= 10;
    return p;
}

/* x / 10^k, rounded half to even (C's division truncates toward zero). */
static wasmudf_decimal shift_right_half_even(wasmudf_decimal x, int k) {
    wasmudf_decimal d = pow10(k), q = x / d, r = x % d;
    wasmudf_decimal twice = (r < 0 ? -r : r) * 2;
    if (twice > d || (twice == d && (q & 1))) q += x < 0 ? -1 : 1;
    return q;
}

/* decimal(38,6) → decimal(38,2): drop four digits. */
static wasmudf_decimal round_cents(wasmudf_decimal x) { return shift_right_half_even(x, 4); }

WASMUDF_SCALAR(round_cents, decimal(38,2), "round to cents, half to even", decimal(38,6))

/* amount × (10000 + basis_points) / 10000 to cents: both sides have scale 2, so the product
 * has scale 2 + 4 and four digits go. |amount| < 10^18 and the factor < 2^32 fit in 128 bits. */
static wasmudf_decimal add_tax(wasmudf_decimal amount, int32_t basis_points) {
    wasmudf_decimal total = shift_right_half_even(amount * (10000 + (wasmudf_decimal)basis_points), 4);
    if (total >= pow10(18) || total <= -pow10(18)) wasmudf_fail("add_tax: the result does not fit decimal(18,2)");
    return total;
}

WASMUDF_SCALAR(add_tax, decimal(18,2), "amount plus basis_points/10000 of it, to cents, half to even", decimal(18,2),
               int32)
