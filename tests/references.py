"""Pure-Python references for the example UDFs in udfs/, written from their definitions."""

from __future__ import annotations

import datetime
import decimal
import math
import re
import string
import sys
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "udfs" / "text"))
from gen_fold_table import fold_char  # noqa: E402  (the table's own definition)

I64 = 2**64

#: The Arrow type of each ABI type, as docs/abi.md §3 lists them (written out here, not
#: taken from wasmudf, so tests compare against the document).
ARROW_TYPES = {
    "bool": pa.bool_(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "utf8": pa.string(),
    "binary": pa.binary(),
    # docs/abi.md's table of the types added to the first seven
    "date": pa.date32(),
    "timestamp": pa.timestamp("us"),
    "timestamptz": pa.timestamp("us", tz="UTC"),
}

#: The Arrow types of the parametric and nested types the examples use, as the table of
#: docs/abi.md gives them (decimal(p,s) is decimal128(p, s); list<T> is list<T>; a struct is
#: a struct of its fields).
POINT = pa.struct([("lat", pa.float64()), ("lon", pa.float64())])
BOUNDS = pa.struct([(f, pa.float64()) for f in ("min_lat", "min_lon", "max_lat", "max_lon")])
NESTED_ARROW_TYPES = {
    "decimal(38,6)": pa.decimal128(38, 6),
    "decimal(38,2)": pa.decimal128(38, 2),
    "decimal(18,2)": pa.decimal128(18, 2),
    "list<float64>": pa.list_(pa.float64()),
    "list<int64>": pa.list_(pa.int64()),
    "list<utf8>": pa.list_(pa.string()),
    "list<struct<lat: float64, lon: float64>>": pa.list_(POINT),
    "struct<min_lat: float64, min_lon: float64, max_lat: float64, max_lon: float64>": BOUNDS,
}


def wrap_i64(v: int) -> int:
    v %= I64
    return v - I64 if v >= 2**63 else v


def haversine_km(lat1, lon1, lat2, lon2):
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = math.radians(lat2 - lat1), math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(min(a, 1.0)))


def clamp(x, lo, hi):
    if any(math.isnan(v) for v in (x, lo, hi)) or lo > hi:
        return None
    return min(max(x, lo), hi)


def safe_div(a, b):
    if b == 0 or (a == -(2**63) and b == -1):
        return None
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b >= 0) else -q


def add_i64(a, b):
    return wrap_i64(a + b)


def gcd_i32(a, b):
    g = math.gcd(a, b)
    return None if g > 2**31 - 1 else g


def lerp_f32(a, b, t):
    with np.errstate(all="ignore"):  # past float32's range is +-inf, as in C
        a, b, t = np.float32(a), np.float32(b), np.float32(t)
        return float(a + (b - a) * t)


def is_finite(x):
    return math.isfinite(x)


def coalesce_f64(a, b):
    return a if a is not None else b


def _codepoints(s: str) -> list[str]:
    return list(s)


def edit_distance(a, b):
    a, b = _codepoints(a), _codepoints(b)
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def collatz_steps(n):
    if n < 1:
        return None
    steps = 0
    while n != 1:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        steps += 1
    return steps


def title_case(s):
    separators = " \t\n\x0c\r" + string.punctuation  # Rust's is_ascii_whitespace / _punctuation
    out, start = [], True
    for c in s:
        if c in separators:
            out.append(c)
            start = True
        else:
            out.append(c.upper() if start else c.lower())
            start = False
    return "".join(out)


def fizzbuzz(n):
    # Remainders truncate toward zero in all four languages; == 0 is the same either way.
    if n % 15 == 0:
        return "FizzBuzz"
    if n % 3 == 0:
        return "Fizz"
    if n % 5 == 0:
        return "Buzz"
    return str(n)


def celsius_to_kelvin(c):
    if c < -273.15:  # False for NaN, as in the guest: NaN stays NaN
        return None
    return c + 273.15


def ascii_fold(s):
    return "".join((fold_char(c) if 0xC0 <= ord(c) < 0x180 else None) or c for c in s)


def slugify(s):
    words, word = [], []
    for c in ascii_fold(s):
        if c.isascii() and c.isalnum():
            word.append(c.lower())
        elif word:
            words.append("".join(word))
            word = []
    if word:
        words.append("".join(word))
    return "-".join(words)


def luhn_check(s):
    digits = [c for c in s if c != " "]
    if len(digits) < 2 or not all("0" <= c <= "9" for c in digits):
        return False
    total = 0
    for i, c in enumerate(reversed(digits)):
        d = int(c) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def crc32(b):
    return zlib.crc32(b)


def fnv1a64(b):
    h = 0xCBF29CE484222325
    for byte in b:
        h = ((h ^ byte) * 0x100000001B3) % I64
    return wrap_i64(h)


def hex_lower(b):
    return b.hex()


def xor_bytes(b, key):
    return bytes(x ^ (key[i % len(key)] if key else 0) for i, x in enumerate(b))


def jaro(a: bytes, b: bytes) -> float:
    """Jaro similarity (matches within half the longer length, less one; half the
    out-of-order matches are transpositions), over bytes as the C code sees them."""
    la, lb = len(a), len(b)
    if la == 0 and lb == 0:
        return 1.0
    if la == 0 or lb == 0:
        return 0.0
    window = max(max(la, lb) // 2 - 1, 0)
    in_a, in_b = [False] * la, [False] * lb
    for i in range(la):
        for j in range(max(0, i - window), min(lb, i + window + 1)):
            if not in_b[j] and a[i] == b[j]:
                in_a[i] = in_b[j] = True
                break
    m = sum(in_a)
    if m == 0:
        return 0.0
    matched_b = [c for c, hit in zip(b, in_b) if hit]
    out_of_order = sum(x != y for x, y in zip((c for c, hit in zip(a, in_a) if hit), matched_b))
    return (m / la + m / lb + (m - out_of_order // 2) / m) / 3.0


def jaro_winkler(a: str, b: str) -> float:
    x, y = a.encode(), b.encode()
    j = jaro(x, y)
    prefix = 0
    while prefix < min(4, len(x), len(y)) and x[prefix] == y[prefix]:
        prefix += 1
    return j + prefix * 0.1 * (1.0 - j)


SOUNDEX_DIGITS = {c: d for d, letters in (("1", "BFPV"), ("2", "CGJKQSXZ"), ("3", "DT"), ("4", "L"),
                                          ("5", "MN"), ("6", "R")) for c in letters}


def soundex_code(word: str) -> str:
    """American Soundex: the first letter, then the digits of the following consonants, a
    digit repeated only across a vowel (not across H or W), padded with 0 to four; ASCII
    letters only count."""
    letters = [c.upper() for c in word if c.isascii() and c.isalpha()]
    if not letters:
        return ""
    code, last = [letters[0]], SOUNDEX_DIGITS.get(letters[0], "0")
    for c in letters[1:]:
        if len(code) == 4:
            break
        d = SOUNDEX_DIGITS.get(c, "0")
        if d != "0" and d != last:
            code.append(d)
        if c not in "HW":
            last = d
    return "".join(code).ljust(4, "0")


#: The reference of each example function, by SQL name.

# -- udfs/dates ------------------------------------------------------------------------------


def iso_week(d: datetime.date) -> int:
    return d.isocalendar().week


def last_day_of_month(d: datetime.date) -> datetime.date:
    if (d.year, d.month) == (9999, 12):
        return datetime.date(9999, 12, 31)
    first_of_next = datetime.date(d.year + d.month // 12, d.month % 12 + 1, 1)
    return first_of_next - datetime.timedelta(days=1)


def business_days_between(a: datetime.date, b: datetime.date) -> int:
    if b < a:
        return -business_days_between(b, a)
    days = (b - a).days
    full_weeks, rest = divmod(days, 7)
    return full_weeks * 5 + sum(1 for i in range(rest) if (a + datetime.timedelta(days=full_weeks * 7 + i)).weekday() < 5)


def hour_of(t: datetime.datetime) -> int:
    return t.hour


def week_start(t: datetime.datetime) -> datetime.datetime:
    day = t.astimezone(datetime.UTC).date()
    monday = day - datetime.timedelta(days=day.weekday())
    return datetime.datetime(monday.year, monday.month, monday.day, tzinfo=datetime.UTC)


# -- udfs/money ------------------------------------------------------------------------------

_EXACT = decimal.Context(prec=100)
CENT = decimal.Decimal("0.01")


def round_cents(x: decimal.Decimal) -> decimal.Decimal:
    return x.quantize(CENT, rounding=decimal.ROUND_HALF_EVEN, context=_EXACT)


def add_tax(amount: decimal.Decimal, basis_points: int) -> decimal.Decimal:
    exact = _EXACT.divide(_EXACT.multiply(amount, 10000 + basis_points), 10000)
    return exact.quantize(CENT, rounding=decimal.ROUND_HALF_EVEN, context=_EXACT)


# -- udfs/nested -----------------------------------------------------------------------------


def median_of(xs):
    if xs is None:
        return None
    values = sorted((x for x in xs if x is not None), key=lambda v: (math.isnan(v), v))  # NaN last
    if not values:
        return None
    n = len(values)
    return values[n // 2] if n % 2 else (values[n // 2 - 1] + values[n // 2]) / 2


def top_k(xs, k):
    return sorted((x for x in xs if x is not None), reverse=True)[: max(k, 0)]


def split_words(s):
    return [w for w in re.split(r"[ \t\n\x0b\x0c\r]+", s) if w]


def bbox(points):
    seen = [(p["lat"], p["lon"]) for p in points if p is not None and p["lat"] is not None and p["lon"] is not None]
    if not seen:
        return None
    lats, lons = [p[0] for p in seen], [p[1] for p in seen]
    return {"min_lat": min(lats), "min_lon": min(lons), "max_lat": max(lats), "max_lon": max(lons)}


def distinct_sorted(values):
    return sorted({v for v in values if v is not None})


REFERENCES = {
    "round_cents": round_cents,
    "add_tax": add_tax,
    "median_of": median_of,
    "top_k": top_k,
    "split_words": split_words,
    "bbox": bbox,
    "iso_week": iso_week,
    "last_day_of_month": last_day_of_month,
    "business_days_between": business_days_between,
    "hour_of": hour_of,
    "week_start": week_start,
    "haversine_km": haversine_km,
    "clamp": clamp,
    "safe_div": safe_div,
    "add_i64": add_i64,
    "gcd_i32": gcd_i32,
    "lerp_f32": lerp_f32,
    "is_finite": is_finite,
    "coalesce_f64": coalesce_f64,
    "edit_distance": edit_distance,
    "lev_distance": edit_distance,  # the same definition, implemented in C
    "collatz_steps": collatz_steps,
    "title_case": title_case,
    "fizzbuzz": fizzbuzz,
    "fizzbuzz_c": fizzbuzz,
    "fizzbuzz_zig": fizzbuzz,
    "fizzbuzz_rs": fizzbuzz,
    "celsius_to_kelvin": celsius_to_kelvin,
    "ascii_fold": ascii_fold,
    "slugify": slugify,
    "luhn_check": luhn_check,
    "crc32": crc32,
    "fnv1a64": fnv1a64,
    "hex_lower": hex_lower,
    "xor_bytes": xor_bytes,
    "jaro_winkler": jaro_winkler,
    "soundex_code": soundex_code,
}
