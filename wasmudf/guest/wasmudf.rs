//! wasmudf.rs — write SQL functions for wasmudf in Rust (ABI version 1).
//!
//! A UDF is a plain Rust function, declared once next to its code with its SQL types:
//!
//!     use wasmudf::scalar;
//!
//!     fn add_i64(a: i64, b: i64) -> i64 { a.wrapping_add(b) }
//!     scalar!(add_i64(int64, int64) -> int64, "a + b, wrapping on overflow");
//!
//! Build with `wasmudf build add.rs -o add.wasm` (Debian's rustc 1.63 with the wasm32 std;
//! no crates beyond this file). SQL types and their Rust types:
//!     bool → bool, int32 → i32, int64 → i64, float32 → f32, float64 → f64,
//!     utf8 → &str (parameter) / String (result), binary → &[u8] / Vec<u8>,
//!     date → wasmudf::Date (days since 1970-01-01), timestamp → wasmudf::Timestamp,
//!     timestamptz → wasmudf::TimestampTz (microseconds; timestamptz in UTC)
//! - Return `Option<T>` for a result that may be NULL; NULL arguments never reach the
//!   function (`nulls: "strict"`).
//! - Return `Result<T, String>` (or `Result<Option<T>, String>`) to fail the whole call
//!   with that message.
//!
//! An aggregate is a state type (`Default`) with methods, declared with its SQL types:
//!
//!     #[derive(Default)]
//!     struct Span { lo: f64, hi: f64, seen: bool }
//!     impl Span {
//!         fn step(&mut self, x: f64) { ... }                 // one row (NULLs skipped)
//!         fn finish(&mut self) -> Option<f64> { ... }        // the result
//!         fn merge(&mut self, other: Span) { ... }           // with `aggregate!(..., merge)`
//!         fn inverse(&mut self, x: f64) { ... }              // with `window_aggregate!`
//!         // with `aggregate!(..., merge, serialize)`: the state moves between instances
//!         fn to_bytes(&self) -> Vec<u8> { ... }
//!         fn from_bytes(bytes: &[u8]) -> Result<Span, String> { ... }
//!     }
//!     aggregate!(span(float64) -> float64, "max - min", Span);
//!
//! States live in the Rust heap, outside the arena the host resets between calls.
//!
//! A table function streams rows: a call type with `open` (the SQL parameters, returning
//! `Result<Self, String>`) and `next(&mut self, out: &mut Rows) -> bool` (false: no rows
//! left), declared with its parameter and column types:
//!
//!     struct Series { at: i64, stop: i64 }
//!     impl Series {
//!         fn open(start: i64, stop: i64) -> Result<Series, String> { Ok(Series { at: start, stop }) }
//!         fn next(&mut self, out: &mut Rows) -> bool {
//!             while !out.full() && self.at <= self.stop { out.put(0, self.at); out.emit(); self.at += 1; }
//!             self.at <= self.stop
//!         }
//!     }
//!     table!(series(int64, int64) -> (value: int64), "start..stop", Series);
//!
//! `out.put(column, value)` takes any result type (`Option<T>` for NULL); `open` copies what
//! it keeps of `&str` arguments (they live in the arena).
#![allow(clippy::missing_safety_doc)]

use std::alloc::{alloc, dealloc, Layout};

pub const ABI_VERSION: u32 = 1;

/// A column descriptor (ABI §3).
#[repr(C)]
pub struct Column {
    pub ty: u32,
    pub length: u32,
    pub null_count: u32,
    pub validity: u32,
    pub offsets: u32,
    pub values: u32,
    pub values_len: u32,
    pub reserved: u32,
}

// --------------------------------------------------------------------------- the arena
// Blocks live until wasmudf_reset; the host never frees them one by one.

static mut ARENA: Vec<(usize, Layout)> = Vec::new();
static mut MESSAGE: [u8; 512] = [0; 512];

pub fn set_message(text: &str) {
    unsafe {
        let n = text.len().min(MESSAGE.len() - 1);
        MESSAGE[..n].copy_from_slice(&text.as_bytes()[..n]);
        MESSAGE[n] = 0;
    }
}

#[no_mangle]
pub extern "C" fn wasmudf_abi_version() -> u32 {
    ABI_VERSION
}

#[no_mangle]
pub extern "C" fn wasmudf_alloc(size: u32, align: u32) -> u32 {
    if align == 0 || !align.is_power_of_two() || align > 16 {
        set_message("wasmudf_alloc: align must be a power of two, at most 16");
        return 0;
    }
    let layout = match Layout::from_size_align(size.max(1) as usize, align as usize) {
        Ok(layout) => layout,
        Err(_) => return 0,
    };
    let p = unsafe { alloc(layout) };
    if p.is_null() {
        set_message("wasmudf_alloc: out of memory");
        return 0;
    }
    unsafe { ARENA.push((p as usize, layout)) };
    p as u32
}

#[no_mangle]
pub extern "C" fn wasmudf_reset() {
    unsafe {
        for (p, layout) in ARENA.drain(..) {
            dealloc(p as *mut u8, layout);
        }
    }
}

#[no_mangle]
pub extern "C" fn wasmudf_error() -> u32 {
    unsafe { MESSAGE.as_ptr() as u32 }
}

// ------------------------------------------------------------------------ reading rows

pub unsafe fn valid(c: &Column, i: u32) -> bool {
    c.validity == 0 || (*((c.validity + (i >> 3)) as *const u8) >> (i & 7)) & 1 == 1
}

/// A parameter type: how to read row `i` of a column.
pub trait Arg: Sized {
    unsafe fn get(c: &Column, i: u32) -> Self;
}

macro_rules! fixed_arg {
    ($($t:ty),*) => {$(
        impl Arg for $t {
            unsafe fn get(c: &Column, i: u32) -> Self {
                *((c.values as usize + i as usize * std::mem::size_of::<$t>()) as *const $t)
            }
        }
    )*};
}
fixed_arg!(i32, i64, f32, f64, Date, Timestamp, TimestampTz);

/// A `date`: days since 1970-01-01.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Date(pub i32);
/// A `timestamp`: microseconds since 1970-01-01 00:00, no time zone.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub i64);
/// A `timestamptz`: microseconds since the epoch, UTC.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimestampTz(pub i64);

/// A `decimal(p,s)`: its unscaled value, value × 10^s (12.50 in decimal(18,2) is 1250).
/// Name the type with `sql_type!(cents = "decimal(18,2)" as wasmudf::Decimal)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Decimal(pub i128);

impl Arg for Decimal {
    unsafe fn get(c: &Column, i: u32) -> Self {
        Decimal(std::ptr::read_unaligned((c.values as usize + i as usize * 16) as *const i128))
    }
}

impl Output for Decimal {
    const VARLEN: bool = false;
    const CODE: u32 = 11;
    unsafe fn write(self, o: &mut Column, _: &mut Vec<Vec<u8>>, i: u32) {
        std::ptr::write_unaligned((o.values as usize + i as usize * 16) as *mut i128, self.0);
    }
}

/// A `list<T>`. As a parameter it views the elements (`get(i)` is None for a NULL one); as a
/// result it is `List::of(items)`, elements of a flat type (`String` for utf8). Name the
/// type with `sql_type!(floats = "list<float64>" as wasmudf::List<f64>)`.
pub struct List<T> {
    child: *const Column,
    start: u32,
    len: u32,
    items: Vec<T>,
}

impl<T> List<T> {
    pub fn of(items: Vec<T>) -> List<T> {
        List { child: std::ptr::null(), start: 0, len: items.len() as u32, items }
    }
    pub fn len(&self) -> u32 {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<T: Arg> List<T> {
    pub fn get(&self, i: u32) -> Option<T> {
        assert!(i < self.len && !self.child.is_null(), "wasmudf: list index out of range");
        unsafe {
            let c = &*self.child;
            if valid(c, self.start + i) { Some(T::get(c, self.start + i)) } else { None }
        }
    }
    /// The non-NULL elements, in order.
    pub fn values(&self) -> Vec<T> {
        (0..self.len).filter_map(|i| self.get(i)).collect()
    }
}

impl<T> Arg for List<T> {
    unsafe fn get(c: &Column, i: u32) -> Self {
        let offsets = c.offsets as *const u32;
        let start = *offsets.add(i as usize);
        let end = *offsets.add(i as usize + 1);
        List { child: c.values as *const Column, start, len: end - start, items: Vec::new() }
    }
}

/// A list result's element: its bytes in the child column (WIDTH 0: variable-length).
pub trait Element {
    const WIDTH: u32;
    fn encode(&self, out: &mut Vec<u8>);
}

macro_rules! fixed_element {
    ($($t:ty),*) => {$(
        impl Element for $t {
            const WIDTH: u32 = std::mem::size_of::<$t>() as u32;
            fn encode(&self, out: &mut Vec<u8>) {
                let bytes = unsafe { std::slice::from_raw_parts(self as *const $t as *const u8, Self::WIDTH as usize) };
                out.extend_from_slice(bytes);
            }
        }
    )*};
}
fixed_element!(i32, i64, f32, f64, Date, Timestamp, TimestampTz);

impl Element for bool {
    const WIDTH: u32 = 1;
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(*self as u8);
    }
}

impl Element for Decimal {
    const WIDTH: u32 = 16;
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.0.to_le_bytes());
    }
}

impl Element for String {
    const WIDTH: u32 = 0;
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.len() as u32).to_le_bytes());
        out.extend_from_slice(self.as_bytes());
    }
}

impl<T: Element> Output for List<T> {
    const VARLEN: bool = true;
    const CODE: u32 = 12;
    /// A row is gathered as its element count and the elements' bytes.
    unsafe fn write(self, _: &mut Column, spans: &mut Vec<Vec<u8>>, _: u32) {
        let mut row = (self.items.len() as u32).to_le_bytes().to_vec();
        for item in &self.items {
            item.encode(&mut row);
        }
        spans.push(row);
    }
    unsafe fn finish(o: &mut Column, spans: &[Vec<u8>]) -> i32 {
        pack_list(o, spans, T::WIDTH)
    }
}

fn count_of(row: &[u8]) -> u32 {
    if row.len() < 4 { 0 } else { u32::from_le_bytes([row[0], row[1], row[2], row[3]]) }
}

/// The offsets the host prepared, and a child column in the arena (docs/abi.md §3.2).
unsafe fn pack_list(o: &mut Column, rows: &[Vec<u8>], width: u32) -> i32 {
    let offsets = o.offsets as *mut u32;
    let mut total = 0u64;
    *offsets = 0;
    for (i, row) in rows.iter().enumerate() {
        total += count_of(row) as u64;
        if total > 0x7FFF_FFFF {
            set_message("list result over 2^31 elements");
            return 1;
        }
        *offsets.add(i + 1) = total as u32;
    }
    let child = &mut *(o.values as *mut Column);
    child.length = total as u32;
    child.null_count = 0;
    child.validity = 0;
    if width > 0 {
        let bytes: Vec<u8> = rows.iter().flat_map(|row| row.iter().skip(4).copied()).collect();
        if bytes.len() > u32::MAX as usize - 16 {
            set_message("list result over 4 GiB");
            return 1;
        }
        let dst = wasmudf_alloc(bytes.len() as u32, 8);
        if dst == 0 {
            return 1;
        }
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst as *mut u8, bytes.len());
        child.values = dst;
        child.values_len = bytes.len() as u32;
        return 0;
    }
    let mut strings: Vec<Vec<u8>> = Vec::with_capacity(total as usize);
    for row in rows {
        let mut at = 4usize;
        for _ in 0..count_of(row) {
            let len = count_of(&row[at..]) as usize;
            strings.push(row[at + 4..at + 4 + len].to_vec());
            at += 4 + len;
        }
    }
    child.offsets = wasmudf_alloc((total as u32 + 1) * 4, 4);
    if child.offsets == 0 {
        return 1;
    }
    pack(child, &strings)
}

impl Arg for bool {
    unsafe fn get(c: &Column, i: u32) -> Self {
        *((c.values + i) as *const u8) != 0
    }
}

unsafe fn bytes_at(c: &Column, i: u32) -> &'static [u8] {
    let offsets = c.offsets as *const u32;
    let start = *offsets.add(i as usize);
    let end = *offsets.add(i as usize + 1);
    std::slice::from_raw_parts((c.values + start) as *const u8, (end - start) as usize)
}

impl Arg for &'static [u8] {
    unsafe fn get(c: &Column, i: u32) -> Self {
        bytes_at(c, i)
    }
}

impl Arg for &'static str {
    unsafe fn get(c: &Column, i: u32) -> Self {
        // The host sends valid UTF-8 for utf8 columns.
        std::str::from_utf8_unchecked(bytes_at(c, i))
    }
}

// ----------------------------------------------------------------------- writing rows

/// A result value: fixed-width ones go straight into the host's buffer, variable-length
/// ones are gathered and packed into one arena block at the end.
pub trait Output {
    const VARLEN: bool;
    /// The ABI type code of the column it goes into.
    const CODE: u32;
    unsafe fn write(self, o: &mut Column, spans: &mut Vec<Vec<u8>>, i: u32);
    /// Turn the gathered rows of a variable-length result into the column (one values
    /// block for text and bytes, a child column for a list).
    unsafe fn finish(o: &mut Column, spans: &[Vec<u8>]) -> i32 {
        pack(o, spans)
    }
}

/// The `finish` of a value's type (the declaration macros cannot name the type).
pub fn finisher<T: Output>(_: &T) -> unsafe fn(&mut Column, &[Vec<u8>]) -> i32 {
    T::finish
}

macro_rules! fixed_output {
    ($($t:ty = $code:expr),*) => {$(
        impl Output for $t {
            const VARLEN: bool = false;
            const CODE: u32 = $code;
            unsafe fn write(self, o: &mut Column, _: &mut Vec<Vec<u8>>, i: u32) {
                *((o.values as usize + i as usize * std::mem::size_of::<$t>()) as *mut $t) = self;
            }
        }
    )*};
}
fixed_output!(i32 = 2, i64 = 3, f32 = 4, f64 = 5, Date = 8, Timestamp = 9, TimestampTz = 10);

impl Output for bool {
    const VARLEN: bool = false;
    const CODE: u32 = 1;
    unsafe fn write(self, o: &mut Column, _: &mut Vec<Vec<u8>>, i: u32) {
        *((o.values + i) as *mut u8) = self as u8;
    }
}

impl Output for Vec<u8> {
    const VARLEN: bool = true;
    const CODE: u32 = 7;
    unsafe fn write(self, _: &mut Column, spans: &mut Vec<Vec<u8>>, _: u32) {
        spans.push(self);
    }
}

impl Output for String {
    const VARLEN: bool = true;
    const CODE: u32 = 6;
    unsafe fn write(self, _: &mut Column, spans: &mut Vec<Vec<u8>>, _: u32) {
        spans.push(self.into_bytes());
    }
}

impl<T: Output> Output for Option<T> {
    const VARLEN: bool = T::VARLEN;
    const CODE: u32 = T::CODE;
    unsafe fn finish(o: &mut Column, spans: &[Vec<u8>]) -> i32 {
        T::finish(o, spans)
    }
    unsafe fn write(self, o: &mut Column, spans: &mut Vec<Vec<u8>>, i: u32) {
        match self {
            Some(v) => v.write(o, spans, i),
            None => {
                let byte = (o.validity + (i >> 3)) as *mut u8;
                *byte &= !(1u8 << (i & 7));
                o.null_count += 1;
                if T::VARLEN {
                    spans.push(Vec::new());
                }
            }
        }
    }
}

/// A function's return value: the value itself, or an error that fails the call.
pub trait Returned {
    type Value: Output;
    fn into_result(self) -> Result<Self::Value, String>;
}

impl<T: Output> Returned for T {
    type Value = T;
    fn into_result(self) -> Result<T, String> {
        Ok(self)
    }
}

impl<T: Output> Returned for Result<T, String> {
    type Value = T;
    fn into_result(self) -> Result<T, String> {
        self
    }
}

/// Pack gathered variable-length results into one arena block and fill the offsets.
pub unsafe fn pack(o: &mut Column, spans: &[Vec<u8>]) -> i32 {
    let total: usize = spans.iter().map(|s| s.len()).sum();
    if total > u32::MAX as usize {
        set_message("result over 4 GiB");
        return 1;
    }
    let dst = wasmudf_alloc(total as u32, 1);
    if dst == 0 {
        return 1;
    }
    let offsets = o.offsets as *mut u32;
    let mut pos = 0u32;
    *offsets = 0;
    for (i, s) in spans.iter().enumerate() {
        std::ptr::copy_nonoverlapping(s.as_ptr(), (dst + pos) as *mut u8, s.len());
        pos += s.len() as u32;
        *offsets.add(i + 1) = pos;
    }
    o.values = dst;
    o.values_len = pos;
    0
}

/// Every row of `args` that has no NULL, in order (strict NULL handling).
pub unsafe fn all_valid(args: &[Column], r: u32) -> bool {
    args.iter().all(|c| valid(c, r))
}

// ----------------------------------------------------------------------- declarations

#[macro_export]
macro_rules! ctype {
    (bool) => { bool };
    (int32) => { i32 };
    (int64) => { i64 };
    (float32) => { f32 };
    (float64) => { f64 };
    (utf8) => { &'static str };
    (binary) => { &'static [u8] };
    (date) => { $crate::Date };
    (timestamp) => { $crate::Timestamp };
    (timestamptz) => { $crate::TimestampTz };
    // A type declared with sql_type! or sql_struct!: its macro names the Rust type.
    ($other:ident) => { $other!(ty) };
}

/// The manifest name of a type: the built-in names as they are, others from their macro.
#[macro_export]
macro_rules! __sql_name {
    (bool) => { "bool" };
    (int32) => { "int32" };
    (int64) => { "int64" };
    (float32) => { "float32" };
    (float64) => { "float64" };
    (utf8) => { "utf8" };
    (binary) => { "binary" };
    (date) => { "date" };
    (timestamp) => { "timestamp" };
    (timestamptz) => { "timestamptz" };
    ($other:ident) => { $other!(name) };
}

/// `sql_type!(cents = "decimal(38,2)" as wasmudf::Decimal);` names a parametric or nested
/// type for the declaration macros: `cents` is then a type like `int64`. The Rust type is
/// `Decimal` for a decimal, `List<T>` for a list.
#[macro_export]
macro_rules! sql_type {
    ($name:ident = $sql:literal as $rust:ty) => {
        #[allow(unused_macros)]
        macro_rules! $name {
            (name) => { $sql };
            (ty) => { $rust };
        }
    };
}

/// `sql_struct!(Point { lat: float64, lon: float64 });` declares a Rust struct whose fields
/// are `Option`s of the fields' Rust types, usable as a `struct<...>` type (and inside
/// `sql_type!` names, as `list<struct<lat: float64, lon: float64>>`). As a result its fields
/// are fixed-width types.
#[macro_export]
macro_rules! sql_struct {
    ($name:ident { $($field:ident : $t:ident),+ $(,)? }) => {
        #[derive(Clone, Copy, Debug, Default, PartialEq)]
        pub struct $name { $(pub $field: Option<$crate::ctype!($t)>),+ }
        #[allow(unused_macros)]
        macro_rules! $name {
            (name) => { concat!("struct<", $crate::__struct_fields!($($field: $t),+), ">") };
            (ty) => { $name };
        }
        impl $crate::Arg for $name {
            unsafe fn get(c: &$crate::Column, i: u32) -> Self {
                let fields = c.values as *const $crate::Column;
                let mut k = 0usize;
                #[allow(unused_assignments)]
                let v = $name { $($field: {
                    let f = &*fields.add(k);
                    k += 1;
                    if $crate::valid(f, i) { Some(<$crate::ctype!($t) as $crate::Arg>::get(f, i)) } else { None }
                }),+ };
                v
            }
        }
        impl $crate::Output for $name {
            const VARLEN: bool = false;
            const CODE: u32 = 13;
            unsafe fn write(self, o: &mut $crate::Column, spans: &mut Vec<Vec<u8>>, i: u32) {
                let fields = o.values as *mut $crate::Column;
                let mut k = 0usize;
                $(
                    $crate::Output::write(self.$field, &mut *fields.add(k), spans, i);
                    k += 1;
                )+
                let _ = k;
            }
        }
    };
}

#[macro_export]
macro_rules! __struct_fields {
    ($f:ident : $t:ident) => { concat!(stringify!($f), ": ", $crate::__sql_name!($t)) };
    ($f:ident : $t:ident, $($rest:tt)+) => {
        concat!(stringify!($f), ": ", $crate::__sql_name!($t), ", ", $crate::__struct_fields!($($rest)+))
    };
}

#[macro_export]
macro_rules! __fragment {
    ($name:ident, $json:expr) => {
        concat!("WASMUDF-MANIFEST-FRAGMENT:", $json, "\0")
    };
}

/// `scalar!(name(types...) -> type, "doc")` exports the function `name` as a SQL scalar.
#[macro_export]
macro_rules! scalar {
    ($name:ident ( $($t:ident),* ) -> $r:ident, $doc:literal) => {
        const _: () = {
            static FRAGMENT: &str = $crate::__fragment!($name, concat!(
                "{\"name\":\"", stringify!($name), "\",\"kind\":\"scalar\",\"params\":[",
                $crate::__json_types!($($t),*), "],\"returns\":\"", $crate::__sql_name!($r),
                "\",\"nulls\":\"strict\",\"doc\":\"", $doc, "\"}"));

            #[export_name = stringify!($name)]
            pub unsafe extern "C" fn export(args: u32, nargs: u32, out: u32) -> i32 {
                // Reading the fragment keeps it in the module for `wasmudf build`.
                std::ptr::read_volatile(&FRAGMENT.as_ptr());
                let n_params = [$(stringify!($t)),*].len() as u32;
                if nargs != n_params {
                    $crate::set_message(concat!(stringify!($name), ": wrong number of arguments"));
                    return 1;
                }
                let a = std::slice::from_raw_parts(args as *const $crate::Column, nargs as usize);
                let o = &mut *(out as *mut $crate::Column);
                o.null_count = 0;
                let mut spans: Vec<Vec<u8>> = Vec::new();
                let mut finish = None;
                for r in 0..o.length {
                    let mut k = 0usize;
                    #[allow(unused_assignments)]
                    let value = $name($({
                        let v = <$crate::ctype!($t) as $crate::Arg>::get(&a[k], r);
                        k += 1;
                        v
                    }),*);
                    match $crate::Returned::into_result(value) {
                        Ok(v) => {
                            finish = Some($crate::finisher(&v));
                            $crate::Output::write(v, o, &mut spans, r)
                        }
                        Err(message) => {
                            $crate::set_message(&message);
                            return 1;
                        }
                    }
                }
                let _ = a;
                match finish {
                    Some(finish) if !spans.is_empty() => finish(o, &spans),
                    _ if $crate::__is_varlen!($r) => $crate::pack(o, &spans),
                    _ => 0,
                }
            }
        };
    };
}

#[macro_export]
macro_rules! __is_varlen {
    (utf8) => { true };
    (binary) => { true };
    ($other:ident) => { false };
}

#[macro_export]
macro_rules! __json_types {
    () => { "" };
    ($t:ident) => { concat!("\"", $crate::__sql_name!($t), "\"") };
    ($t:ident, $($rest:ident),+) => { concat!("\"", $crate::__sql_name!($t), "\",", $crate::__json_types!($($rest),+)) };
}

/// `aggregate!(name(types...) -> type, "doc", State)`: an aggregate over a `Default` state
/// with `step(&mut self, args...)` and `finish(&mut self) -> T or Option<T>`. Add `, merge`
/// when the state has `merge(&mut self, other: State)`, and `, merge, serialize` when it
/// also has `to_bytes(&self) -> Vec<u8>` and `from_bytes(&[u8]) -> Result<State, String>`,
/// so its states move between instances (engines that aggregate in parallel combine them).
#[macro_export]
macro_rules! aggregate {
    ($name:ident ( $($t:ident),* ) -> $r:ident, $doc:literal, $state:ty) => {
        $crate::__aggregate!($name ($($t),*) -> $r, $doc, $state, "false");
    };
    ($name:ident ( $($t:ident),* ) -> $r:ident, $doc:literal, $state:ty, merge) => {
        $crate::__aggregate!($name ($($t),*) -> $r, $doc, $state, "false");
        $crate::__merge!($name, $state);
    };
    ($name:ident ( $($t:ident),* ) -> $r:ident, $doc:literal, $state:ty, merge, serialize) => {
        $crate::aggregate!($name ($($t),*) -> $r, $doc, $state, merge);
        $crate::__serialize!($name, $state);
    };
}

/// `window_aggregate!(...)`: as `aggregate!`, plus `inverse(&mut self, args...)` to take a
/// row out again, so it works as a SQL window function.
#[macro_export]
macro_rules! window_aggregate {
    ($name:ident ( $($t:ident),* ) -> $r:ident, $doc:literal, $state:ty) => {
        $crate::__aggregate!($name ($($t),*) -> $r, $doc, $state, "true");
        const _: () = {
            #[export_name = concat!(stringify!($name), "__inverse")]
            pub unsafe extern "C" fn inverse(state: u32, args: u32, nargs: u32) -> i32 {
                let s = &mut *(state as *mut $state);
                $crate::__fold!(s, inverse, args, nargs, $($t),*)
            }
            #[export_name = concat!(stringify!($name), "__value")]
            pub unsafe extern "C" fn value(state: u32, out: u32) -> i32 {
                let s = &mut *(state as *mut $state);
                $crate::__result!(s, out)
            }
        };
    };
    ($name:ident ( $($t:ident),* ) -> $r:ident, $doc:literal, $state:ty, merge) => {
        $crate::window_aggregate!($name ($($t),*) -> $r, $doc, $state);
        $crate::__merge!($name, $state);
    };
    ($name:ident ( $($t:ident),* ) -> $r:ident, $doc:literal, $state:ty, merge, serialize) => {
        $crate::window_aggregate!($name ($($t),*) -> $r, $doc, $state, merge);
        $crate::__serialize!($name, $state);
    };
}

#[macro_export]
macro_rules! __fold {
    ($s:ident, $method:ident, $args:ident, $nargs:ident, $($t:ident),*) => {{
        let n_params = [$(stringify!($t)),*].len() as u32;
        if $nargs != n_params {
            $crate::set_message("wrong number of arguments");
            return 1;
        }
        let a = std::slice::from_raw_parts($args as *const $crate::Column, $nargs as usize);
        let n = if a.is_empty() { 0 } else { a[0].length };
        for r in 0..n {
            if !$crate::all_valid(a, r) {
                continue; // strict: a row with a NULL argument is skipped
            }
            let mut k = 0usize;
            #[allow(unused_assignments)]
            $s.$method($({
                let v = <$crate::ctype!($t) as $crate::Arg>::get(&a[k], r);
                k += 1;
                v
            }),*);
        }
        0
    }};
}

#[macro_export]
macro_rules! __result {
    ($s:ident, $out:ident) => {{
        let o = &mut *($out as *mut $crate::Column);
        o.null_count = 0;
        let mut spans: Vec<Vec<u8>> = Vec::new();
        match $crate::Returned::into_result($s.finish()) {
            Ok(v) => {
                let finish = $crate::finisher(&v);
                $crate::Output::write(v, o, &mut spans, 0);
                if spans.is_empty() { 0 } else { finish(o, &spans) }
            }
            Err(message) => {
                $crate::set_message(&message);
                1
            }
        }
    }};
}

#[macro_export]
macro_rules! __aggregate {
    ($name:ident ( $($t:ident),* ) -> $r:ident, $doc:literal, $state:ty, $window:literal) => {
        const _: () = {
            static FRAGMENT: &str = $crate::__fragment!($name, concat!(
                "{\"name\":\"", stringify!($name), "\",\"kind\":\"aggregate\",\"params\":[",
                $crate::__json_types!($($t),*), "],\"returns\":\"", $crate::__sql_name!($r),
                "\",\"window\":", $window, ",\"doc\":\"", $doc, "\"}"));

            #[export_name = concat!(stringify!($name), "__init")]
            pub unsafe extern "C" fn init() -> u32 {
                std::ptr::read_volatile(&FRAGMENT.as_ptr());
                Box::into_raw(Box::new(<$state as Default>::default())) as u32
            }
            #[export_name = concat!(stringify!($name), "__update")]
            pub unsafe extern "C" fn update(state: u32, args: u32, nargs: u32) -> i32 {
                let s = &mut *(state as *mut $state);
                $crate::__fold!(s, step, args, nargs, $($t),*)
            }
            #[export_name = concat!(stringify!($name), "__finalize")]
            pub unsafe extern "C" fn finalize(state: u32, out: u32) -> i32 {
                // The result is packed into the arena before the state (which it may
                // borrow from) is dropped.
                let mut s = Box::from_raw(state as *mut $state);
                let s = &mut *s;
                $crate::__result!(s, out)
            }
        };
    };
}

#[macro_export]
macro_rules! __merge {
    ($name:ident, $state:ty) => {
        const _: () = {
            #[export_name = concat!(stringify!($name), "__merge")]
            pub unsafe extern "C" fn merge(state: u32, other: u32) -> i32 {
                let s = &mut *(state as *mut $state);
                let o = Box::from_raw(other as *mut $state);
                s.merge(*o);
                0
            }
        };
    };
}

#[macro_export]
macro_rules! __serialize {
    ($name:ident, $state:ty) => {
        const _: () = {
            #[export_name = concat!(stringify!($name), "__serialize")]
            pub unsafe extern "C" fn serialize(state: u32, out: u32) -> i32 {
                // The bytes are packed into the arena; the state is dropped either way.
                let s = Box::from_raw(state as *mut $state);
                let o = &mut *(out as *mut $crate::Column);
                o.null_count = 0;
                let spans = vec![s.to_bytes()];
                $crate::pack(o, &spans)
            }
            #[export_name = concat!(stringify!($name), "__deserialize")]
            pub unsafe extern "C" fn deserialize(bytes: u32, len: u32) -> u32 {
                let b: &[u8] = if len == 0 { &[] } else { std::slice::from_raw_parts(bytes as *const u8, len as usize) };
                match <$state>::from_bytes(b) {
                    Ok(s) => Box::into_raw(Box::new(s)) as u32,
                    Err(message) => {
                        $crate::set_message(&message);
                        0
                    }
                }
            }
        };
    };
}

/// The rows one `next` call of a table function appends to (at most `capacity`).
pub struct Rows {
    cols: *mut Column,
    ncols: usize,
    capacity: u32,
    count: u32,
    spans: Vec<Vec<Vec<u8>>>, // per column, per row: utf8/binary values
    failed: bool,
}

impl Rows {
    pub unsafe fn new(outs: u32, ncols: u32) -> Rows {
        let cols = outs as *mut Column;
        let capacity = if ncols == 0 { 0 } else { (*cols).length };
        for c in 0..ncols as usize {
            (*cols.add(c)).null_count = 0;
        }
        Rows { cols, ncols: ncols as usize, capacity, count: 0, spans: vec![Vec::new(); ncols as usize], failed: false }
    }

    pub fn full(&self) -> bool {
        self.count >= self.capacity
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    pub fn failed(&self) -> bool {
        self.failed
    }

    /// Set `column` of the row being written; a value of the wrong type fails the call.
    pub fn put<T: Output>(&mut self, column: usize, value: T) {
        if column >= self.ncols || self.full() || unsafe { (*self.cols.add(column)).ty } != T::CODE {
            set_message("Rows::put: no such column of that type, or the batch is full");
            self.failed = true;
            return;
        }
        let row = self.count;
        let spans = &mut self.spans[column];
        spans.truncate(row as usize);
        unsafe { value.write(&mut *self.cols.add(column), spans, row) };
    }

    /// The row being written is complete (a utf8/binary column not put is empty).
    pub fn emit(&mut self) {
        if self.full() {
            return;
        }
        self.count += 1;
        for spans in self.spans.iter_mut() {
            spans.resize(self.count as usize, Vec::new());
        }
    }

    /// Pack the utf8/binary columns: the count of rows, or -1.
    pub unsafe fn finish(&mut self) -> i32 {
        for c in 0..self.ncols {
            let col = &mut *self.cols.add(c);
            if col.ty == 6 || col.ty == 7 {
                self.spans[c].resize(self.count as usize, Vec::new());
                if pack(col, &self.spans[c]) != 0 {
                    return -1;
                }
            }
        }
        self.count as i32
    }
}

#[macro_export]
macro_rules! __columns_text {
    ($c:ident : $t:ident) => { concat!(stringify!($c), " ", stringify!($t)) };
    ($c:ident : $t:ident, $($rest:tt)+) => { concat!(stringify!($c), " ", stringify!($t), ", ", $crate::__columns_text!($($rest)+)) };
}

/// `table!(name(types...) -> (column: type, ...), "doc", Call)`: a table function over a call
/// type with `open(args...) -> Result<Call, String>` and `next(&mut self, &mut Rows) -> bool`.
#[macro_export]
macro_rules! table {
    ($name:ident ( $($t:ident),* ) -> ( $($cols:tt)+ ), $doc:literal, $call:ty) => {
        const _: () = {
            static FRAGMENT: &str = $crate::__fragment!($name, concat!(
                "{\"name\":\"", stringify!($name), "\",\"kind\":\"table\",\"params\":[",
                $crate::__json_types!($($t),*), "],\"columns\":\"", $crate::__columns_text!($($cols)+),
                "\",\"doc\":\"", $doc, "\"}"));

            struct Running { call: $call, finished: bool }

            #[export_name = concat!(stringify!($name), "__open")]
            pub unsafe extern "C" fn open(args: u32, nargs: u32) -> u32 {
                std::ptr::read_volatile(&FRAGMENT.as_ptr());
                let n_params = [$(stringify!($t)),*].len() as u32;
                if nargs != n_params {
                    $crate::set_message("wrong number of arguments");
                    return 0;
                }
                #[allow(unused_variables)]
                let a = std::slice::from_raw_parts(args as *const $crate::Column, nargs as usize);
                #[allow(unused_mut, unused_variables)]
                let mut k = 0usize;
                #[allow(unused_assignments)]
                let opened = <$call>::open($({
                    let v = <$crate::ctype!($t) as $crate::Arg>::get(&a[k], 0);
                    k += 1;
                    v
                }),*);
                match opened {
                    Ok(call) => Box::into_raw(Box::new(Running { call, finished: false })) as u32,
                    Err(message) => {
                        $crate::set_message(&message);
                        0
                    }
                }
            }
            #[export_name = concat!(stringify!($name), "__next")]
            pub unsafe extern "C" fn next(state: u32, outs: u32, ncols: u32) -> i32 {
                let running = &mut *(state as *mut Running);
                if running.finished || ncols == 0 {
                    return 0;
                }
                let mut rows = $crate::Rows::new(outs, ncols);
                let mut more = true;
                while more && rows.count() == 0 && !rows.failed() {
                    more = running.call.next(&mut rows);
                }
                if rows.failed() {
                    return -1;
                }
                if !more {
                    running.finished = true;
                }
                rows.finish()
            }
            #[export_name = concat!(stringify!($name), "__close")]
            pub unsafe extern "C" fn close(state: u32) {
                drop(Box::from_raw(state as *mut Running));
            }
        };
    };
}
