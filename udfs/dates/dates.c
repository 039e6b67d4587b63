/* Date and timestamp UDFs: days since 1970-01-01 in, the SDK's calendar helpers for the rest. */
#include "wasmudf.h"

#define MICROS_PER_DAY 86400000000LL
#define MICROS_PER_HOUR 3600000000LL

static int64_t floor_div(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

/* ISO 8601 week number: the week (Monday to Sunday) that holds the date's Thursday, counted
 * in that Thursday's year. */
static int32_t iso_week(wasmudf_date day) {
    int32_t thursday = day - wasmudf_weekday(day) + 3, y, m, d;
    wasmudf_civil_from_days(thursday, &y, &m, &d);
    return (thursday - wasmudf_days_from_civil(y, 1, 1)) / 7 + 1;
}
WASMUDF_SCALAR(iso_week, int32, "ISO 8601 week number (1 to 53)", date)

static wasmudf_date last_day_of_month(wasmudf_date day) {
    int32_t y, m, d;
    wasmudf_civil_from_days(day, &y, &m, &d);
    return m == 12 ? wasmudf_days_from_civil(y + 1, 1, 1) - 1 : wasmudf_days_from_civil(y, m + 1, 1) - 1;
}
WASMUDF_SCALAR(last_day_of_month, date, "the last day of the date's month", date)

/* Monday-to-Friday days d with a <= d < b; negative when b < a. */
static int32_t business_days_between(wasmudf_date a, wasmudf_date b) {
    if (b < a) return -business_days_between(b, a);
    int64_t n = (int64_t)b - a, count = n / 7 * 5;
    for (int64_t d = a + n / 7 * 7; d < b; d++) count += wasmudf_weekday((int32_t)d) < 5;
    return (int32_t)count;
}
WASMUDF_SCALAR(business_days_between, int32, "Monday to Friday days from a (included) to b (excluded)", date, date)

static int32_t hour_of(wasmudf_timestamp t) {
    return (int32_t)((t - floor_div(t, MICROS_PER_DAY) * MICROS_PER_DAY) / MICROS_PER_HOUR);
}
WASMUDF_SCALAR(hour_of, int32, "the hour of the day, 0 to 23", timestamp)

static wasmudf_timestamp week_start(wasmudf_timestamp t) {
    int64_t days = floor_div(t, MICROS_PER_DAY);
    return (days - wasmudf_weekday((int32_t)days)) * MICROS_PER_DAY;
}
WASMUDF_SCALAR(week_start, timestamptz, "Monday 00:00 UTC of the ISO week of the instant", timestamptz)
