// wasmudf.ts — write SQL functions for wasmudf in AssemblyScript (ABI version 1).
//
// A UDF is a plain exported function, declared once by the comment line above it:
//
//     import * as udf from "./wasmudf";
//
//     // @wasmudf scalar add_i64(int64, int64) -> int64 "a + b, wrapping on overflow"
//     export function add_i64(a: i64, b: i64): i64 { return a + b; }
//
// and an aggregate is an exported class with step/finish (and inverse for a window, merge
// to combine states), declared the same way:
//
//     // @wasmudf aggregate sum_squares(float64) -> float64 window "sum of x*x"
//     export class SumSquares { total: f64 = 0; step(x: f64): void {...} inverse(x: f64): void {...} finish(): f64 {...} }
//
// The flag `serialize` (with `merge`) lets states move between instances, so engines that
// aggregate in parallel combine them: the class then has `serialize(): ArrayBuffer` and
// `static deserialize(bytes: ArrayBuffer): Class` (udf.fail when the bytes make no sense).
//
// `wasmudf build file.ts -o out.wasm` (assemblyscript 0.28.20 from the project's npm lockfile)
// reads the declarations and generates the ABI exports around your functions with the
// helpers below. Types: bool → bool, int32 → i32, int64 → i64, float32 → f32, float64 → f64,
// utf8 → string, date → i32 (days since 1970-01-01), timestamp and timestamptz → i64
// (microseconds), decimal(p,s) with p <= 18 → i64 (the unscaled value, value × 10^s; scalars)
// (microseconds; timestamptz in UTC). Inside a function: udf.setNull() makes this row's result NULL;
// udf.fail("message") fails the whole call.
//
// Memory: the stub runtime's heap is the arena. wasmudf_reset rewinds it, except while an
// aggregate state is alive (states are objects on that heap).

const MESSAGE: usize = memory.data(512);
let liveStates: i32 = 0;
let rowNull: bool = false;
let failed: bool = false;

export function wasmudf_abi_version(): u32 {
  return 1;
}

export function wasmudf_alloc(size: u32, align: u32): u32 {
  if (align == 0 || (align & (align - 1)) != 0 || align > 16) {
    setMessage("wasmudf_alloc: align must be a power of two, at most 16");
    return 0;
  }
  return <u32>__alloc(<usize>max<u32>(size, 1)); // the stub runtime aligns to 16
}

export function wasmudf_reset(): void {
  if (liveStates == 0) __reset();
}

export function wasmudf_error(): u32 {
  return <u32>MESSAGE;
}

export function setNull(): void {
  rowNull = true;
}

export function fail(message: string): void {
  setMessage(message);
  failed = true;
}

function setMessage(message: string): void {
  const text = message.length > 120 ? message.substring(0, 120) : message;
  String.UTF8.encodeUnsafe(changetype<usize>(text), text.length, MESSAGE, true);
}

// ------------------------------------------------------------------------ columns

// @ts-ignore: decorator
@inline function column(args: u32, i: u32): usize {
  return <usize>args + <usize>i * 32;
}

function valid(c: usize, r: u32): bool {
  const v = load<u32>(c, 12);
  return v == 0 || ((load<u8>(<usize>v + (r >> 3)) >> (r & 7)) & 1) != 0;
}

// `wide`: a decimal, 16 bytes a row, whose low 8 are the i64 this SDK works with (p <= 18).
function get<T>(c: usize, r: u32, wide: bool = false): T {
  const values = <usize>load<u32>(c, 20);
  if (isInteger<T>()) {
    if (wide) return load<T>(values + <usize>r * 16);
  }
  if (isString<T>()) {
    const offsets = <usize>load<u32>(c, 16);
    const start = load<u32>(offsets + <usize>r * 4);
    const end = load<u32>(offsets + <usize>r * 4 + 4);
    return changetype<T>(String.UTF8.decodeUnsafe(values + start, end - start));
  }
  if (isBoolean<T>()) return <T>(load<u8>(values + r) != 0);
  return load<T>(values + <usize>r * sizeof<T>());
}

class Output<R> {
  spans: Array<ArrayBuffer> = [];
  constructor(public out: usize, public wide: bool = false) {
    store<u32>(out, 0, 8); // null_count
  }
  put(r: u32, v: R): void {
    if (rowNull) {
      const byte = <usize>load<u32>(this.out, 12) + (r >> 3);
      store<u8>(byte, load<u8>(byte) & ~(<u8>(1 << <u8>(r & 7))));
      store<u32>(this.out, load<u32>(this.out, 8) + 1, 8);
      if (isString<R>()) this.spans.push(new ArrayBuffer(0));
      return;
    }
    const values = <usize>load<u32>(this.out, 20);
    if (isString<R>()) {
      this.spans.push(String.UTF8.encode(changetype<string>(v)));
    } else if (isBoolean<R>()) {
      store<u8>(values + r, v ? 1 : 0);
    } else if (isInteger<R>() && sizeof<R>() == 8 && this.wide) {
      store<i64>(values + <usize>r * 16, <i64>v); // a decimal: sign-extended to 16 bytes
      store<i64>(values + <usize>r * 16 + 8, (<i64>v) >> 63);
    } else {
      store<R>(values + <usize>r * sizeof<R>(), v);
    }
  }
  finish(): i32 {
    if (!isString<R>()) return 0;
    let total: u32 = 0;
    for (let i = 0; i < this.spans.length; i++) total += <u32>this.spans[i].byteLength;
    const dst = wasmudf_alloc(total, 1);
    if (dst == 0) return 1;
    const offsets = <usize>load<u32>(this.out, 16);
    let pos: u32 = 0;
    store<u32>(offsets, 0);
    for (let i = 0; i < this.spans.length; i++) {
      const s = this.spans[i];
      memory.copy(<usize>dst + pos, changetype<usize>(s), s.byteLength);
      pos += <u32>s.byteLength;
      store<u32>(offsets + <usize>(i + 1) * 4, pos);
    }
    store<u32>(this.out, dst, 20);
    store<u32>(this.out, pos, 24);
    return 0;
  }
}

function begin(nargs: u32, expected: u32): bool {
  failed = false;
  if (nargs != expected) {
    setMessage("wrong number of arguments");
    return false;
  }
  return true;
}

// ------------------------------------------------------------------------ scalars

// `wide`: bit i set for a decimal parameter i, bit 8 for a decimal result.
export function scalar1<A, R>(args: u32, nargs: u32, out: u32, fn: (a: A) => R, wide: u32 = 0): i32 {
  if (!begin(nargs, 1)) return 1;
  const o = new Output<R>(out, (wide & 256) != 0);
  const n = load<u32>(out, 4);
  for (let r: u32 = 0; r < n; r++) {
    rowNull = false;
    const v = fn(get<A>(column(args, 0), r, (wide & 1) != 0));
    if (failed) return 1;
    o.put(r, v);
  }
  return o.finish();
}

export function scalar2<A, B, R>(args: u32, nargs: u32, out: u32, fn: (a: A, b: B) => R, wide: u32 = 0): i32 {
  if (!begin(nargs, 2)) return 1;
  const o = new Output<R>(out, (wide & 256) != 0);
  const n = load<u32>(out, 4);
  for (let r: u32 = 0; r < n; r++) {
    rowNull = false;
    const v = fn(get<A>(column(args, 0), r, (wide & 1) != 0), get<B>(column(args, 1), r, (wide & 2) != 0));
    if (failed) return 1;
    o.put(r, v);
  }
  return o.finish();
}

export function scalar3<A, B, C, R>(args: u32, nargs: u32, out: u32, fn: (a: A, b: B, c: C) => R, wide: u32 = 0): i32 {
  if (!begin(nargs, 3)) return 1;
  const o = new Output<R>(out, (wide & 256) != 0);
  const n = load<u32>(out, 4);
  for (let r: u32 = 0; r < n; r++) {
    rowNull = false;
    const v = fn(
      get<A>(column(args, 0), r, (wide & 1) != 0),
      get<B>(column(args, 1), r, (wide & 2) != 0),
      get<C>(column(args, 2), r, (wide & 4) != 0),
    );
    if (failed) return 1;
    o.put(r, v);
  }
  return o.finish();
}

// ------------------------------------------------------------------------ aggregates

export function stateNew<S>(): u32 {
  const s = instantiate<S>();
  liveStates++;
  return changetype<u32>(s);
}

export function fold1<S, A>(state: u32, args: u32, nargs: u32, fn: (s: S, a: A) => void): i32 {
  if (!begin(nargs, 1)) return 1;
  const s = changetype<S>(<usize>state);
  const n = load<u32>(column(args, 0), 4);
  for (let r: u32 = 0; r < n; r++) {
    if (!valid(column(args, 0), r)) continue;
    fn(s, get<A>(column(args, 0), r));
    if (failed) return 1;
  }
  return 0;
}

export function fold2<S, A, B>(state: u32, args: u32, nargs: u32, fn: (s: S, a: A, b: B) => void): i32 {
  if (!begin(nargs, 2)) return 1;
  const s = changetype<S>(<usize>state);
  const n = load<u32>(column(args, 0), 4);
  for (let r: u32 = 0; r < n; r++) {
    if (!valid(column(args, 0), r) || !valid(column(args, 1), r)) continue;
    fn(s, get<A>(column(args, 0), r), get<B>(column(args, 1), r));
    if (failed) return 1;
  }
  return 0;
}

export function result<S, R>(state: u32, out: u32, fn: (s: S) => R, release: bool): i32 {
  failed = false;
  rowNull = false;
  const v = fn(changetype<S>(<usize>state));
  if (release) liveStates--;
  if (failed) return 1;
  const o = new Output<R>(out);
  o.put(0, v);
  return o.finish();
}

export function merge<S>(state: u32, other: u32, fn: (s: S, o: S) => void): i32 {
  failed = false;
  fn(changetype<S>(<usize>state), changetype<S>(<usize>other));
  liveStates--;
  return failed ? 1 : 0;
}

// One binary row of the state's bytes; the state is released (ABI §5).
export function serialize<S>(state: u32, out: u32, fn: (s: S) => ArrayBuffer): i32 {
  failed = false;
  const bytes = fn(changetype<S>(<usize>state));
  liveStates--;
  if (failed) return 1;
  const len = <u32>bytes.byteLength;
  const dst = wasmudf_alloc(len, 1);
  if (dst == 0) return 1;
  memory.copy(<usize>dst, changetype<usize>(bytes), len);
  const offsets = <usize>load<u32>(out, 16);
  store<u32>(offsets, 0);
  store<u32>(offsets + 4, len);
  store<u32>(out, dst, 20);
  store<u32>(out, len, 24);
  return 0;
}

// A new state from bytes that serialize gave; 0 when deserialize fails.
export function deserialize<S>(bytes: u32, len: u32, fn: (b: ArrayBuffer) => S): u32 {
  failed = false;
  const copy = new ArrayBuffer(<i32>len);
  memory.copy(changetype<usize>(copy), <usize>bytes, len);
  const s = fn(copy);
  if (failed) return 0;
  liveStates++;
  return changetype<u32>(s);
}
