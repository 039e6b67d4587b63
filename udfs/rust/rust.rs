//! Rust UDFs: a scalar over integers, one over text, and a window aggregate.
use wasmudf::{scalar, table, window_aggregate, Rows};

/// Steps of the Collatz sequence from n down to 1 (NULL for n < 1).
fn collatz_steps(n: i64) -> Option<i64> {
    if n < 1 {
        return None;
    }
    let (mut n, mut steps) = (n as u64, 0i64);
    while n != 1 {
        n = if n % 2 == 0 { n / 2 } else { n.wrapping_mul(3).wrapping_add(1) };
        steps += 1;
    }
    Some(steps)
}
scalar!(collatz_steps(int64) -> int64, "Collatz steps from n to 1; NULL below 1");

/// Words with their first character upper-cased and the rest lower-cased. Words are split at
/// ASCII whitespace and punctuation only: Unicode's "alphanumeric" differs between languages
/// and versions (combining marks, for one), and the result must not.
fn title_case(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut start = true;
    for c in s.chars() {
        if c.is_ascii_whitespace() || c.is_ascii_punctuation() {
            out.push(c);
            start = true;
        } else {
            if start {
                out.extend(c.to_uppercase());
            } else {
                out.extend(c.to_lowercase());
            }
            start = false;
        }
    }
    out
}
scalar!(title_case(utf8) -> utf8, "Title Case: each word capitalized (words split at ASCII spaces and punctuation)");

/// FizzBuzz, the same function as fizzbuzz_c, fizzbuzz_zig and the AssemblyScript fizzbuzz.
fn fizzbuzz_rs(n: i64) -> String {
    match (n % 3 == 0, n % 5 == 0) {
        (true, true) => "FizzBuzz".to_string(),
        (true, false) => "Fizz".to_string(),
        (false, true) => "Buzz".to_string(),
        _ => n.to_string(),
    }
}
scalar!(fizzbuzz_rs(int64) -> utf8, "Fizz for multiples of 3, Buzz of 5, FizzBuzz of both, else the number");

/// max - min of the values in the window, by keeping every value (so rows can leave).
#[derive(Default)]
struct Spread {
    values: Vec<f64>,
}

impl Spread {
    fn step(&mut self, x: f64) {
        self.values.push(x);
    }
    fn inverse(&mut self, x: f64) {
        if let Some(i) = self.values.iter().position(|v| *v == x || (v.is_nan() && x.is_nan())) {
            self.values.swap_remove(i);
        }
    }
    fn finish(&mut self) -> Option<f64> {
        let lo = self.values.iter().cloned().fold(f64::INFINITY, f64::min);
        let hi = self.values.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        if self.values.is_empty() { None } else { Some(hi - lo) }
    }
    fn merge(&mut self, other: Spread) {
        self.values.extend(other.values);
    }
    /// Moving between instances: the values, 8 little-endian bytes each.
    fn to_bytes(&self) -> Vec<u8> {
        self.values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }
    fn from_bytes(bytes: &[u8]) -> Result<Spread, String> {
        if bytes.len() % 8 != 0 {
            return Err("spread: a serialized state of the wrong size".to_string());
        }
        let values = bytes.chunks(8).map(|c| f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]));
        Ok(Spread { values: values.collect() })
    }
}
window_aggregate!(spread(float64) -> float64, "largest minus smallest value", Spread, merge, serialize);

/// fizzbuzz_rs's words as rows: (n, word) for n = 1..count, the same table as fizzbuzz_rows_zig.
struct FizzBuzzRows {
    n: i64,
    count: i64,
}

impl FizzBuzzRows {
    fn open(count: i64) -> Result<FizzBuzzRows, String> {
        Ok(FizzBuzzRows { n: 1, count })
    }
    fn next(&mut self, out: &mut Rows) -> bool {
        while !out.full() && self.n <= self.count {
            out.put(0, self.n);
            out.put(1, fizzbuzz_rs(self.n));
            out.emit();
            self.n += 1;
        }
        self.n <= self.count
    }
}
table!(fizzbuzz_rows_rs(int64) -> (n: int64, word: utf8), "rows (n, fizzbuzz word) for n from 1 to count", FizzBuzzRows);
