// AssemblyScript UDFs: a text scalar, a numeric scalar, and a window aggregate.
import * as udf from "./wasmudf";

// @wasmudf scalar fizzbuzz(int64) -> utf8 "Fizz for multiples of 3, Buzz of 5, FizzBuzz of both, else the number"
export function fizzbuzz(n: i64): string {
  if (n % 15 == 0) return "FizzBuzz";
  if (n % 3 == 0) return "Fizz";
  if (n % 5 == 0) return "Buzz";
  return n.toString();
}

// @wasmudf scalar celsius_to_kelvin(float64) -> float64 "Celsius to Kelvin; NULL below absolute zero"
export function celsius_to_kelvin(c: f64): f64 {
  if (c < -273.15) {
    udf.setNull();
    return 0;
  }
  return c + 273.15;
}

// @wasmudf aggregate sum_squares(float64) -> float64 window merge serialize "sum of x*x over the rows"
export class SumSquares {
  total: f64 = 0;
  step(x: f64): void {
    this.total += x * x;
  }
  inverse(x: f64): void {
    this.total -= x * x;
  }
  merge(other: SumSquares): void {
    this.total += other.total;
  }
  serialize(): ArrayBuffer {
    const bytes = new ArrayBuffer(8);
    store<f64>(changetype<usize>(bytes), this.total);
    return bytes;
  }
  static deserialize(bytes: ArrayBuffer): SumSquares {
    const s = new SumSquares();
    if (bytes.byteLength != 8) udf.fail("sum_squares: a serialized state of the wrong size");
    else s.total = load<f64>(changetype<usize>(bytes));
    return s;
  }
  finish(): f64 {
    return this.total;
  }
}
