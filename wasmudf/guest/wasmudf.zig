//! wasmudf.zig — write SQL functions for wasmudf in Zig (ABI version 1).
//!
//! A UDF is a plain Zig function; its parameter and result types are its SQL types:
//!
//!     const udf = @import("wasmudf");
//!
//!     fn add_i64(a: i64, b: i64) i64 { return a +% b; }
//!
//!     comptime {
//!         udf.module(.{
//!             udf.scalar("add_i64", add_i64, .{ .doc = "a + b, wrapping on overflow" }),
//!         });
//!     }
//!
//! Build with `wasmudf build add.zig -o add.wasm`. Types: bool, i32 (int32), i64 (int64),
//! f32 (float32), f64 (float64), []const u8 (utf8), udf.Bytes (binary), udf.Date (date: days
//! since 1970-01-01), udf.Timestamp and udf.TimestampTz (timestamp, timestamptz: microseconds),
//! udf.Decimal(p, s) (decimal(p,s): the unscaled value), udf.List(T) (list<T> of a flat T) and
//! any other struct of those (struct<...>; a `?T` field may be NULL; as a result, fixed-width
//! fields only).
//! - A `?T` result may return null (a NULL row).
//! - `?T` parameters (all of them) make the function see NULLs (`nulls: "called"`);
//!   otherwise a NULL argument gives NULL without calling it.
//! - An error-union result (`!T`) fails the whole call with the error's name, or with the
//!   message given to `udf.fail` before returning the error.
//! - `udf.allocator` hands out arena memory that lives until the host resets it, e.g. for a
//!   []const u8 result.
//!
//! An aggregate is a state type with methods, declared with `udf.aggregate(name, State, opts)`:
//!
//!     const Longest = struct {
//!         best: []u8 = &.{},
//!         pub fn step(self: *Longest, s: []const u8) !void { ... }   // one row (NULLs skipped)
//!         pub fn final(self: *Longest) ?[]const u8 { ... }           // the result, ?T for NULL
//!         pub fn deinit(self: *Longest) void { ... }                 // optional: free memory
//!         pub fn merge(self: *Longest, other: *Longest) void { ... } // optional
//!         pub fn inverse(self: *Longest, s: []const u8) void { ... } // optional: a window function
//!         // optional, with merge: the state as bytes, and a state from them (ABI §5)
//!         pub fn serialize(self: *Longest) []const u8 { ... }        // may point into the state
//!         pub fn deserialize(bytes: []const u8) !Longest { ... }
//!     };
//!
//! A table function streams rows: a call type with `open` (its parameters are the SQL
//! parameters) and `next`, which appends rows of a struct type (its fields are the columns):
//!
//!     const Series = struct {
//!         at: i64, stop: i64,
//!         pub fn open(start: i64, stop: i64) !Series { return .{ .at = start, .stop = stop }; }
//!         pub fn next(self: *Series, out: *udf.Rows(struct { value: i64 })) bool {
//!             while (!out.full() and self.at <= self.stop) : (self.at += 1) out.emit(.{ .value = self.at });
//!             return self.at <= self.stop;   // false: no rows left
//!         }
//!         pub fn deinit(self: *Series) void { ... }                  // optional
//!     };
//!     udf.table("series", Series, .{ .doc = "start..stop" })
//!
//! `open` copies what it keeps of its arguments (they live in the arena). A `?T` field is a
//! column that may be NULL; a NULL argument gives no rows without calling `open`.
//!
//! A new state is `State{}` (give every field a default) or `State.init()` if it declares one.
//! Memory a state keeps across calls comes from `udf.state_allocator`, never `udf.allocator`.
//! A state of plain data (numbers, bools, arrays and structs of them: no pointers or slices)
//! that has `merge` moves between instances as its own bytes without serialize/deserialize,
//! so engines that aggregate in parallel (DuckDB's threads) combine it.
const std = @import("std");

pub const abi_version: u32 = 1;

/// A `binary` value (any bytes); `[]const u8` itself means `utf8`.
pub const Bytes = struct { data: []const u8 };

/// A `date`: days since 1970-01-01.
pub const Date = extern struct { days: i32 };
/// A `timestamp`: microseconds since 1970-01-01 00:00, no time zone.
pub const Timestamp = extern struct { micros: i64 };
/// A `timestamptz`: microseconds since the epoch, UTC.
pub const TimestampTz = extern struct { micros: i64 };

/// A `decimal(precision, scale)`: the unscaled value, value × 10^scale (12.50 in
/// decimal(18,2) is 1250), in two halves so it needs 8-byte alignment only.
pub fn Decimal(comptime precision: u8, comptime scale: u8) type {
    if (precision < 1 or precision > 38 or scale > precision) @compileError("decimal(p,s) needs 1 <= p <= 38, s <= p");
    return extern struct {
        lo: u64,
        hi: i64,
        pub const decimal_precision = precision;
        pub const decimal_scale = scale;
        pub fn of(value: i128) @This() {
            return .{ .lo = @truncate(@as(u128, @bitCast(value))), .hi = @truncate(value >> 64) };
        }
        pub fn unscaled(self: @This()) i128 {
            return (@as(i128, self.hi) << 64) | self.lo;
        }
    };
}

/// A `list<T>` of a flat T. As a parameter it views the elements (`at(i)` is null for a
/// NULL element); as a result it is `List(T).of(items)`, items copied out when the batch
/// ends (arena memory is fine).
pub fn List(comptime T: type) type {
    return struct {
        child: ?*const Column = null,
        start: u32 = 0,
        len: u32 = 0,
        items: []const T = &.{},
        pub const list_element = T;
        pub fn of(items: []const T) @This() {
            return .{ .len = @intCast(items.len), .items = items };
        }
        pub fn at(self: @This(), i: u32) ?T {
            const c = self.child.?;
            return if (valid(c, self.start + i)) get(T, c, self.start + i) else null;
        }
    };
}

/// A column descriptor (ABI §3).
pub const Column = extern struct {
    type: u32,
    length: u32,
    null_count: u32,
    validity: u32,
    offsets: u32,
    values: u32,
    values_len: u32,
    reserved: u32,
};

// ----------------------------------------------------------------------------- the arena
// Blocks live until wasmudf_reset. Memory comes in chunks from memory.grow; reset rewinds to
// the first chunk and keeps the others for reuse.

const page_size: u32 = 65536;
const max_chunks = 64;
const Chunk = struct { start: u32, end: u32 };

extern var __heap_base: u8;

var chunks: [max_chunks]Chunk = undefined;
var nchunks: u32 = 0;
var current: u32 = 0;
var cursor: u32 = 0;
var message_buf: [512]u8 = undefined;

fn setMessage(msg: []const u8) void {
    const n = @min(msg.len, message_buf.len - 1);
    @memcpy(message_buf[0..n], msg[0..n]);
    message_buf[n] = 0;
}

fn setMessage2(prefix: []const u8, rest: []const u8) void {
    const n = @min(prefix.len, message_buf.len - 1);
    @memcpy(message_buf[0..n], prefix[0..n]);
    const m = @min(rest.len, message_buf.len - 1 - n);
    @memcpy(message_buf[n .. n + m], rest[0..m]);
    message_buf[n + m] = 0;
}

/// Fail the current call with `msg` (return an error afterwards).
pub fn fail(msg: []const u8) void {
    setMessage(msg);
    explicit_message = true;
}
var explicit_message = false;

fn grow(size: u32) ?Chunk {
    var pages: u32 = @max(16, (size +| (page_size - 1)) / page_size);
    var old = @wasmMemoryGrow(0, pages);
    if (old < 0) {
        pages = (size +| (page_size - 1)) / page_size;
        old = @wasmMemoryGrow(0, pages);
        if (old < 0) return null;
    }
    const start: u32 = @as(u32, @intCast(old)) * page_size;
    return .{ .start = start, .end = start + pages * page_size };
}

pub fn alloc(size: u32, alignment: u32) u32 {
    if (alignment == 0 or (alignment & (alignment - 1)) != 0 or alignment > 16) {
        setMessage("wasmudf_alloc: align must be a power of two, at most 16");
        return 0;
    }
    arenaInit();
    while (true) {
        const c = chunks[current];
        const p = (cursor +% (alignment - 1)) & ~(alignment - 1);
        if (p >= cursor and p <= c.end and size <= c.end - p) {
            cursor = p + size;
            return if (p == 0) 16 else p;
        }
        if (current + 1 < nchunks) {
            current += 1;
            cursor = chunks[current].start;
            continue;
        }
        if (nchunks == max_chunks) {
            setMessage("wasmudf_alloc: arena exhausted");
            return 0;
        }
        const fresh = grow(size +| alignment) orelse {
            setMessage("wasmudf_alloc: out of memory (memory.grow refused)");
            return 0;
        };
        if (fresh.start == c.end and current == nchunks - 1) {
            chunks[current].end = fresh.end;
        } else {
            chunks[nchunks] = fresh;
            nchunks += 1;
            current = nchunks - 1;
            cursor = fresh.start;
        }
    }
}

/// The arena's first chunk is the memory the module starts with: claim it before anything
/// else (aggregate states) grows memory.
fn arenaInit() void {
    if (nchunks != 0) return;
    const start: u32 = @intCast(@intFromPtr(&__heap_base));
    chunks[0] = .{ .start = start, .end = @as(u32, @intCast(@wasmMemorySize(0))) * page_size };
    nchunks = 1;
    current = 0;
    cursor = start;
}

fn reset() void {
    current = 0;
    cursor = if (nchunks > 0) chunks[0].start else 0;
}

fn arenaAlloc(_: *anyopaque, len: usize, alignment: std.mem.Alignment, _: usize) ?[*]u8 {
    const a: u32 = @intCast(@min(alignment.toByteUnits(), 16));
    const p = alloc(@intCast(len), a);
    return if (p == 0) null else @ptrFromInt(p);
}
fn arenaResize(_: *anyopaque, _: []u8, _: std.mem.Alignment, _: usize, _: usize) bool {
    return false;
}
fn arenaRemap(_: *anyopaque, _: []u8, _: std.mem.Alignment, _: usize, _: usize) ?[*]u8 {
    return null;
}
fn arenaFree(_: *anyopaque, _: []u8, _: std.mem.Alignment, _: usize) void {}

/// Arena memory, freed by the host after each call: use it for results and scratch.
pub const allocator: std.mem.Allocator = .{
    .ptr = undefined,
    .vtable = &.{ .alloc = arenaAlloc, .resize = arenaResize, .remap = arenaRemap, .free = arenaFree },
};

// ------------------------------------------------------------------------------ types

fn sqlType(comptime T: type) []const u8 {
    return switch (T) {
        bool => "bool",
        i32 => "int32",
        i64 => "int64",
        f32 => "float32",
        f64 => "float64",
        []const u8 => "utf8",
        Bytes => "binary",
        Date => "date",
        Timestamp => "timestamp",
        TimestampTz => "timestamptz",
        else => if (@hasDecl(T, "decimal_precision"))
            std.fmt.comptimePrint("decimal({d},{d})", .{ T.decimal_precision, T.decimal_scale })
        else if (@hasDecl(T, "list_element"))
            "list<" ++ sqlType(T.list_element) ++ ">"
        else if (@typeInfo(T) == .@"struct")
            structType(T)
        else
            @compileError("wasmudf: unsupported type " ++ @typeName(T) ++
                "; use bool, i32, i64, f32, f64, []const u8, udf.Bytes, udf.Date, udf.Timestamp, " ++
                "udf.TimestampTz, udf.Decimal(p, s), udf.List(T) or a struct of those"),
    };
}

/// A struct of SQL-typed fields (`?T` for one that may be NULL) is a `struct<...>`.
fn structType(comptime T: type) []const u8 {
    comptime var out: []const u8 = "struct<";
    const info = @typeInfo(T).@"struct";
    inline for (info.field_names, info.field_types, 0..) |fname, ftype, i| {
        out = out ++ (if (i > 0) ", " else "") ++ fname ++ ": " ++ sqlType(Base(ftype));
    }
    return out ++ ">";
}

fn isList(comptime T: type) bool {
    return @typeInfo(T) == .@"struct" and @hasDecl(T, "list_element");
}

fn isStruct(comptime T: type) bool {
    return @typeInfo(T) == .@"struct" and !isList(T) and !@hasDecl(T, "decimal_precision") and
        T != Bytes and T != Date and T != Timestamp and T != TimestampTz;
}

fn isVarlen(comptime T: type) bool {
    return T == []const u8 or T == Bytes;
}

/// Plain data: its bytes are its whole value (no pointers or slices anywhere inside).
fn isPlain(comptime T: type) bool {
    return switch (@typeInfo(T)) {
        .int, .float, .bool => true,
        .array => |a| isPlain(a.child),
        .@"struct" => |st| blk: {
            inline for (st.field_types) |field_type| {
                if (!isPlain(field_type)) break :blk false;
            }
            break :blk true;
        },
        else => false,
    };
}

fn Base(comptime T: type) type {
    return switch (@typeInfo(T)) {
        .optional => |o| o.child,
        else => T,
    };
}

fn ptr(comptime T: type, addr: u32) [*]T {
    return @ptrFromInt(addr);
}

fn valid(c: *const Column, i: u32) bool {
    if (c.validity == 0) return true;
    return (ptr(u8, c.validity)[i >> 3] >> @intCast(i & 7)) & 1 == 1;
}

fn get(comptime T: type, c: *const Column, i: u32) T {
    return switch (T) {
        bool => ptr(u8, c.values)[i] != 0,
        i32, i64, f32, f64, Date, Timestamp, TimestampTz => ptr(T, c.values)[i],
        []const u8 => blk: {
            const o = ptr(u32, c.offsets);
            break :blk ptr(u8, c.values)[o[i]..o[i + 1]];
        },
        Bytes => .{ .data = get([]const u8, c, i) },
        else => if (@hasDecl(T, "decimal_precision"))
            ptr(T, c.values)[i]
        else if (comptime isList(T)) blk: {
            const o = ptr(u32, c.offsets);
            break :blk .{ .child = &ptr(Column, c.values)[0], .start = o[i], .len = o[i + 1] - o[i] };
        } else blk: {
            var v: T = undefined;
            const info = @typeInfo(T).@"struct";
            inline for (info.field_names, info.field_types, 0..) |fname, ftype, k| {
                const field = &ptr(Column, c.values)[k];
                if (@typeInfo(ftype) == .optional) {
                    @field(v, fname) = if (valid(field, i)) get(Base(ftype), field, i) else null;
                } else {
                    @field(v, fname) = get(ftype, field, i);
                }
            }
            break :blk v;
        },
    };
}

/// Write one non-NULL fixed-width value (or a struct of them) at row `r` of a result column
/// whose buffers the host prepared.
fn put(comptime T: type, o: *Column, r: u32, x: T) void {
    if (T == bool) {
        ptr(u8, o.values)[r] = @intFromBool(x);
    } else if (comptime isStruct(T)) {
        const info = @typeInfo(T).@"struct";
        inline for (info.field_names, info.field_types, 0..) |fname, ftype, k| {
            const field = &ptr(Column, o.values)[k];
            const value: ?Base(ftype) = @field(x, fname);
            if (value) |fv| put(Base(ftype), field, r, fv) else setNull(field, r);
        }
    } else {
        if (comptime isVarlen(T) or isList(T)) @compileError("wasmudf: a struct result's fields are fixed-width types");
        ptr(T, o.values)[r] = x;
    }
}

fn setNull(o: *Column, r: u32) void {
    ptr(u8, o.validity)[r >> 3] &= ~(@as(u8, 1) << @intCast(r & 7));
    o.null_count += 1;
}

/// A list result's rows, gathered as element slices, become the offsets the host prepared
/// and a child column of the guest's own (docs/abi.md §3.2).
fn packList(comptime E: type, o: *Column, rows: []const []const E) i32 {
    var total: u64 = 0;
    const off = ptr(u32, o.offsets);
    off[0] = 0;
    for (rows, 0..) |items, i| {
        total += items.len;
        if (total > 0x7FFF_FFFF) {
            setMessage("list result over 2^31 elements");
            return 1;
        }
        off[i + 1] = @intCast(total);
    }
    const child = &ptr(Column, o.values)[0];
    const n: u32 = @intCast(total);
    child.length = n;
    child.null_count = 0;
    child.validity = 0;
    if (comptime isVarlen(E)) {
        const spans = allocator.alloc([]const u8, n) catch return 1;
        var k: usize = 0;
        for (rows) |items| for (items) |item| {
            spans[k] = bytesOf(E, item);
            k += 1;
        };
        child.offsets = alloc((n + 1) * 4, 4);
        if (child.offsets == 0) return 1;
        return pack(child, spans);
    }
    if (comptime isList(E) or isStruct(E)) @compileError("wasmudf: a list result's elements are flat types");
    const width: u32 = if (E == bool) 1 else @sizeOf(E);
    if (total * width > 0xFFFF_0000) {
        setMessage("list result over 4 GiB");
        return 1;
    }
    const dst = alloc(n * width, 8);
    if (dst == 0) return 1;
    var k: u32 = 0;
    for (rows) |items| for (items) |item| {
        if (E == bool) ptr(u8, dst)[k] = @intFromBool(item) else ptr(E, dst)[k] = item;
        k += 1;
    };
    child.values = dst;
    child.values_len = n * width;
    return 0;
}

fn bytesOf(comptime T: type, v: T) []const u8 {
    return if (T == Bytes) v.data else v;
}

// ----------------------------------------------------------------------- declarations

pub const Options = struct {
    doc: []const u8 = "",
    deterministic: bool = true,
};

/// What `scalar` and `aggregate` return: the manifest entry and a struct of exports.
pub const Declaration = struct {
    name: []const u8,
    json: []const u8,
    Impl: type,
};

/// Memory for aggregate states and what they own: it outlives the arena's resets.
pub const state_allocator: std.mem.Allocator = std.heap.wasm_allocator;

fn jsonString(comptime s: []const u8) []const u8 {
    comptime var out: []const u8 = "\"";
    inline for (s) |ch| {
        out = out ++ switch (ch) {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            else => &[_]u8{ch},
        };
    }
    return out ++ "\"";
}

/// Declare a scalar function: `name` is its SQL name, `f` the per-row implementation.
pub fn scalar(comptime name: []const u8, comptime f: anytype, comptime opts: Options) Declaration {
    const info = @typeInfo(@TypeOf(f)).@"fn";
    const RetFull = info.return_type.?;
    const fallible = @typeInfo(RetFull) == .error_union;
    const RetOpt = if (fallible) @typeInfo(RetFull).error_union.payload else RetFull;
    const Ret = Base(RetOpt);
    const nullable_ret = @typeInfo(RetOpt) == .optional;
    comptime var called = false;
    comptime var strict = false;
    comptime var params_json: []const u8 = "";
    inline for (info.param_types, 0..) |p, i| {
        const P = p.?;
        if (@typeInfo(P) == .optional) called = true else strict = true;
        params_json = params_json ++ (if (i > 0) "," else "") ++ "\"" ++ sqlType(Base(P)) ++ "\"";
    }
    if (called and strict) @compileError("wasmudf: " ++ name ++ ": make every parameter optional (?T) or none");

    const Impl = struct {
        pub fn call(args_addr: u32, nargs: u32, out_addr: u32) callconv(.c) i32 {
            const a: [*]const Column = @ptrFromInt(args_addr);
            const o: *Column = @ptrFromInt(out_addr);
            const n = o.length;
            if (nargs != info.param_types.len) {
                setMessage(name ++ ": wrong number of arguments");
                return 1;
            }
            explicit_message = false;
            o.null_count = 0;
            var spans: [][]const u8 = &.{};
            if (comptime isVarlen(Ret)) {
                spans = allocator.alloc([]const u8, n) catch return 1;
            }
            const Items = if (comptime isList(Ret)) []const Ret.list_element else void;
            var lists: []Items = &.{};
            if (comptime isList(Ret)) {
                lists = allocator.alloc(Items, n) catch return 1;
            }
            var r: u32 = 0;
            while (r < n) : (r += 1) {
                var args: std.meta.ArgsTuple(@TypeOf(f)) = undefined;
                inline for (info.param_types, 0..) |p, i| {
                    const P = p.?;
                    if (@typeInfo(P) == .optional) {
                        args[i] = if (valid(&a[i], r)) get(Base(P), &a[i], r) else null;
                    } else {
                        args[i] = get(P, &a[i], r);
                    }
                }
                const result = @call(.auto, f, args);
                const value: RetOpt = if (fallible) (result catch |err| {
                    if (!explicit_message) setMessage2(name ++ ": ", @errorName(err));
                    return 1;
                }) else result;
                const v: ?Ret = value;
                if (v) |x| {
                    if (comptime isVarlen(Ret)) {
                        spans[r] = bytesOf(Ret, x);
                    } else if (comptime isList(Ret)) {
                        lists[r] = x.items;
                    } else {
                        put(Ret, o, r, x);
                    }
                } else {
                    setNull(o, r);
                    if (comptime isVarlen(Ret)) spans[r] = "";
                    if (comptime isList(Ret)) lists[r] = &.{};
                }
            }
            if (comptime isVarlen(Ret)) return pack(o, spans);
            if (comptime isList(Ret)) return packList(Ret.list_element, o, lists);
            return 0;
        }
    };
    _ = nullable_ret;
    const json = "{\"name\":\"" ++ name ++ "\",\"kind\":\"scalar\",\"params\":[" ++ params_json ++
        "],\"returns\":\"" ++ sqlType(Ret) ++ "\",\"nulls\":\"" ++ (if (called) "called" else "strict") ++
        "\",\"deterministic\":" ++ (if (opts.deterministic) "true" else "false") ++
        ",\"doc\":" ++ jsonString(opts.doc) ++ "}";
    return .{ .name = name, .json = json, .Impl = Impl };
}

fn writeOne(comptime Ret: type, o: *Column, value: ?Ret) i32 {
    o.null_count = 0;
    if (value) |x| {
        if (comptime isVarlen(Ret)) {
            const spans = [_][]const u8{bytesOf(Ret, x)};
            return pack(o, &spans);
        } else if (comptime isList(Ret)) {
            const rows = [_][]const Ret.list_element{x.items};
            return packList(Ret.list_element, o, &rows);
        } else {
            put(Ret, o, 0, x);
        }
    } else {
        setNull(o, 0);
        if (comptime isVarlen(Ret)) return pack(o, &[_][]const u8{""});
        if (comptime isList(Ret)) return packList(Ret.list_element, o, &[_][]const Ret.list_element{&.{}});
    }
    return 0;
}

/// Declare an aggregate over `State`, whose methods do the work (see the top of this file).
pub fn aggregate(comptime name: []const u8, comptime State: type, comptime opts: Options) Declaration {
    const step_info = @typeInfo(@TypeOf(State.step)).@"fn";
    const params = step_info.param_types[1..];
    const final_info = @typeInfo(@TypeOf(State.final)).@"fn";
    const FinalFull = final_info.return_type.?;
    const final_fallible = @typeInfo(FinalFull) == .error_union;
    const FinalOpt = if (final_fallible) @typeInfo(FinalFull).error_union.payload else FinalFull;
    const Ret = Base(FinalOpt);
    const window = @hasDecl(State, "inverse");
    const custom_bytes = @hasDecl(State, "serialize") or @hasDecl(State, "deserialize");
    if (custom_bytes and !(@hasDecl(State, "serialize") and @hasDecl(State, "deserialize") and @hasDecl(State, "merge")))
        @compileError(name ++ ": serialize, deserialize and merge come together");
    const movable = @hasDecl(State, "merge") and (custom_bytes or isPlain(State));
    comptime var params_json: []const u8 = "";
    inline for (params, 0..) |p, i| {
        params_json = params_json ++ (if (i > 0) "," else "") ++ "\"" ++ sqlType(p.?) ++ "\"";
    }

    const Impl = struct {
        fn release(s: *State) void {
            if (@hasDecl(State, "deinit")) s.deinit();
            state_allocator.destroy(s);
        }
        fn fold(comptime method: anytype, state: u32, args_addr: u32, nargs: u32) i32 {
            const s: *State = @ptrFromInt(state);
            const a: [*]const Column = @ptrFromInt(args_addr);
            if (nargs != params.len) {
                setMessage(name ++ ": wrong number of arguments");
                return 1;
            }
            explicit_message = false;
            const n = if (params.len > 0) a[0].length else 0;
            var r: u32 = 0;
            rows: while (r < n) : (r += 1) {
                var args: std.meta.ArgsTuple(@TypeOf(method)) = undefined;
                args[0] = s;
                inline for (params, 0..) |p, i| {
                    if (!valid(&a[i], r)) continue :rows; // strict: rows with a NULL are skipped
                    args[i + 1] = get(p.?, &a[i], r);
                }
                const outcome = @call(.auto, method, args);
                if (@typeInfo(@TypeOf(outcome)) == .error_union) {
                    outcome catch |err| {
                        if (!explicit_message) setMessage2(name ++ ": ", @errorName(err));
                        return 1;
                    };
                }
            }
            return 0;
        }
        fn writeResult(state: u32, out_addr: u32) i32 {
            const s: *State = @ptrFromInt(state);
            explicit_message = false;
            const final_value: FinalOpt = if (final_fallible) (s.final() catch |err| {
                if (!explicit_message) setMessage2(name ++ ": ", @errorName(err));
                return 1;
            }) else s.final();
            return writeOne(Ret, @ptrFromInt(out_addr), final_value);
        }

        pub fn init() callconv(.c) u32 {
            arenaInit(); // before the state allocator takes pages of its own
            const s = state_allocator.create(State) catch {
                setMessage(name ++ ": out of memory for a new state");
                return 0;
            };
            s.* = if (@hasDecl(State, "init")) State.init() else State{};
            return @intCast(@intFromPtr(s));
        }
        pub fn update(state: u32, args: u32, nargs: u32) callconv(.c) i32 {
            return fold(State.step, state, args, nargs);
        }
        pub fn finalize(state: u32, out: u32) callconv(.c) i32 {
            // The result is packed into the arena before the state (which it may point into) goes.
            const status = writeResult(state, out);
            release(@ptrFromInt(state));
            return status;
        }
        // Optional exports: a struct with `f` when the state supports it, else an empty one.
        pub const Merge = if (@hasDecl(State, "merge")) struct {
            pub fn f(state: u32, other: u32) callconv(.c) i32 {
                const o: *State = @ptrFromInt(other);
                explicit_message = false;
                const r = @as(*State, @ptrFromInt(state)).merge(o);
                release(o);
                if (@typeInfo(@TypeOf(r)) == .error_union) {
                    r catch |err| {
                        if (!explicit_message) setMessage2(name ++ ": ", @errorName(err));
                        return 1;
                    };
                }
                return 0;
            }
        } else struct {};
        pub const Serialize = if (movable) struct {
            pub fn f(state: u32, out: u32) callconv(.c) i32 {
                const s: *State = @ptrFromInt(state);
                explicit_message = false;
                // Packed into the arena (writeOne) before the state, which it may point into, goes.
                const status = if (custom_bytes) blk: {
                    const r = s.serialize();
                    const bytes = if (@typeInfo(@TypeOf(r)) == .error_union) (r catch |err| {
                        if (!explicit_message) setMessage2(name ++ ": ", @errorName(err));
                        release(s);
                        return 1;
                    }) else r;
                    break :blk writeOne(Bytes, @ptrFromInt(out), Bytes{ .data = bytes });
                } else writeOne(Bytes, @ptrFromInt(out), Bytes{ .data = std.mem.asBytes(s) });
                release(s);
                return status;
            }
        } else struct {};
        pub const Deserialize = if (movable) struct {
            pub fn f(addr: u32, len: u32) callconv(.c) u32 {
                arenaInit();
                const bytes = if (len == 0) &[_]u8{} else @as([*]const u8, @ptrFromInt(addr))[0..len];
                explicit_message = false;
                const value: State = if (custom_bytes) (State.deserialize(bytes) catch |err| {
                    if (!explicit_message) setMessage2(name ++ ": ", @errorName(err));
                    return 0;
                }) else blk: {
                    if (bytes.len != @sizeOf(State)) {
                        setMessage(name ++ ": a serialized state of the wrong size");
                        return 0;
                    }
                    var v: State = undefined;
                    @memcpy(std.mem.asBytes(&v), bytes);
                    break :blk v;
                };
                const s = state_allocator.create(State) catch {
                    setMessage(name ++ ": out of memory for a state");
                    return 0;
                };
                s.* = value;
                return @intCast(@intFromPtr(s));
            }
        } else struct {};
        pub const Inverse = if (window) struct {
            pub fn f(state: u32, args: u32, nargs: u32) callconv(.c) i32 {
                return fold(State.inverse, state, args, nargs);
            }
        } else struct {};
        pub const Value = if (window) struct {
            pub fn f(state: u32, out: u32) callconv(.c) i32 {
                return writeResult(state, out);
            }
        } else struct {};
    };
    const json = "{\"name\":\"" ++ name ++ "\",\"kind\":\"aggregate\",\"params\":[" ++ params_json ++
        "],\"returns\":\"" ++ sqlType(Ret) ++ "\",\"window\":" ++ (if (window) "true" else "false") ++
        ",\"deterministic\":" ++ (if (opts.deterministic) "true" else "false") ++
        ",\"doc\":" ++ jsonString(opts.doc) ++ "}";
    return .{ .name = name, .json = json, .Impl = Impl };
}

/// The rows one `next` call appends to: at most `capacity`; `Row`'s fields are the columns.
pub fn Rows(comptime Row: type) type {
    const info = @typeInfo(Row).@"struct";
    return struct {
        cols: [*]Column,
        capacity: u32,
        count: u32 = 0,
        spans: [][]const u8,

        pub fn full(self: *const @This()) bool {
            return self.count >= self.capacity;
        }

        /// Append one row (ignored when the batch is full: check `full()` first).
        pub fn emit(self: *@This(), row: Row) void {
            if (self.full()) return;
            const r = self.count;
            inline for (info.field_names, info.field_types, 0..) |fname, F, c| {
                const col = &self.cols[c];
                const value: ?Base(F) = @field(row, fname);
                if (value) |x| {
                    if (comptime isVarlen(Base(F))) {
                        self.spans[c * self.capacity + r] = bytesOf(Base(F), x);
                    } else if (Base(F) == bool) {
                        ptr(u8, col.values)[r] = @intFromBool(x);
                    } else {
                        ptr(Base(F), col.values)[r] = x;
                    }
                } else {
                    ptr(u8, col.validity)[r >> 3] &= ~(@as(u8, 1) << @intCast(r & 7));
                    col.null_count += 1;
                }
            }
            self.count += 1;
        }
    };
}

/// Declare a table function over `Call`, whose `open` and `next` do the work (see the top).
pub fn table(comptime name: []const u8, comptime Call: type, comptime opts: Options) Declaration {
    const open_info = @typeInfo(@TypeOf(Call.open)).@"fn";
    const open_fallible = @typeInfo(open_info.return_type.?) == .error_union;
    const next_info = @typeInfo(@TypeOf(Call.next)).@"fn";
    const RowsType = @typeInfo(next_info.param_types[1].?).pointer.child;
    const Row = @typeInfo(@TypeOf(RowsType.emit)).@"fn".param_types[1].?;
    const next_fallible = @typeInfo(next_info.return_type.?) == .error_union;
    const row_info = @typeInfo(Row).@"struct";
    comptime var params_json: []const u8 = "";
    inline for (open_info.param_types, 0..) |p, i| {
        params_json = params_json ++ (if (i > 0) "," else "") ++ "\"" ++ sqlType(p.?) ++ "\"";
    }
    comptime var columns_json: []const u8 = "";
    inline for (row_info.field_names, row_info.field_types, 0..) |fname, F, i| {
        columns_json = columns_json ++ (if (i > 0) "," else "") ++ "{\"name\":\"" ++ fname ++ "\",\"type\":\"" ++
            sqlType(Base(F)) ++ "\"}";
    }
    const Wrapper = struct { user: Call, finished: bool };

    const Impl = struct {
        pub fn open(args_addr: u32, nargs: u32) callconv(.c) u32 {
            arenaInit(); // before the state allocator takes pages of its own
            const a: [*]const Column = @ptrFromInt(args_addr);
            if (nargs != open_info.param_types.len) {
                setMessage(name ++ ": wrong number of arguments");
                return 0;
            }
            explicit_message = false;
            var args: std.meta.ArgsTuple(@TypeOf(Call.open)) = undefined;
            inline for (open_info.param_types, 0..) |p, i| args[i] = get(p.?, &a[i], 0);
            const result = @call(.auto, Call.open, args);
            const user: Call = if (open_fallible) (result catch |err| {
                if (!explicit_message) setMessage2(name ++ ": ", @errorName(err));
                return 0;
            }) else result;
            const w = state_allocator.create(Wrapper) catch {
                setMessage(name ++ ": out of memory for a call");
                return 0;
            };
            w.* = .{ .user = user, .finished = false };
            return @intCast(@intFromPtr(w));
        }
        pub fn next(state: u32, outs: u32, ncols: u32) callconv(.c) i32 {
            const w: *Wrapper = @ptrFromInt(state);
            if (w.finished or ncols != row_info.field_names.len) return 0;
            const cols: [*]Column = @ptrFromInt(outs);
            const capacity = cols[0].length;
            const spans = allocator.alloc([]const u8, ncols * capacity) catch return -1;
            @memset(spans, "");
            for (0..ncols) |c| cols[c].null_count = 0;
            var rows = RowsType{ .cols = cols, .capacity = capacity, .spans = spans };
            explicit_message = false;
            var more = true;
            while (more and rows.count == 0) {
                const r = w.user.next(&rows);
                more = if (next_fallible) (r catch |err| {
                    if (!explicit_message) setMessage2(name ++ ": ", @errorName(err));
                    return -1;
                }) else r;
            }
            if (!more) w.finished = true;
            inline for (row_info.field_types, 0..) |F, c| {
                if (comptime isVarlen(Base(F))) {
                    if (pack(&cols[c], spans[c * capacity .. c * capacity + rows.count]) != 0) return -1;
                }
            }
            return @intCast(rows.count);
        }
        pub fn close(state: u32) callconv(.c) void {
            const w: *Wrapper = @ptrFromInt(state);
            if (@hasDecl(Call, "deinit")) w.user.deinit();
            state_allocator.destroy(w);
        }
    };
    const json = "{\"name\":\"" ++ name ++ "\",\"kind\":\"table\",\"params\":[" ++ params_json ++
        "],\"columns\":[" ++ columns_json ++ "],\"deterministic\":" ++
        (if (opts.deterministic) "true" else "false") ++ ",\"doc\":" ++ jsonString(opts.doc) ++ "}";
    return .{ .name = name, .json = json, .Impl = Impl };
}

fn pack(o: *Column, spans: []const []const u8) i32 {
    var total: u64 = 0;
    for (spans) |s| total += s.len;
    if (total > 0xFFFF_0000) {
        setMessage("result over 4 GiB");
        return 1;
    }
    const dst_addr = alloc(@intCast(total), 1);
    if (dst_addr == 0) return 1;
    const dst = ptr(u8, dst_addr);
    const off = ptr(u32, o.offsets);
    var pos: u32 = 0;
    off[0] = 0;
    for (spans, 0..) |s, i| {
        @memcpy(dst[pos .. pos + s.len], s);
        pos += @intCast(s.len);
        off[i + 1] = pos;
    }
    o.values = dst_addr;
    o.values_len = pos;
    return 0;
}

/// Export every declaration, the ABI's own exports, and the manifest fragment.
pub fn module(comptime decls: anytype) void {
    comptime var functions: []const u8 = "";
    inline for (decls, 0..) |d, i| {
        functions = functions ++ (if (i > 0) "," else "") ++ d.json;
        if (@hasDecl(d.Impl, "call")) {
            @export(&d.Impl.call, .{ .name = d.name });
        } else if (@hasDecl(d.Impl, "open")) {
            @export(&d.Impl.open, .{ .name = d.name ++ "__open" });
            @export(&d.Impl.next, .{ .name = d.name ++ "__next" });
            @export(&d.Impl.close, .{ .name = d.name ++ "__close" });
        } else {
            @export(&d.Impl.init, .{ .name = d.name ++ "__init" });
            @export(&d.Impl.update, .{ .name = d.name ++ "__update" });
            @export(&d.Impl.finalize, .{ .name = d.name ++ "__finalize" });
            if (@hasDecl(d.Impl.Merge, "f")) @export(&d.Impl.Merge.f, .{ .name = d.name ++ "__merge" });
            if (@hasDecl(d.Impl.Serialize, "f")) @export(&d.Impl.Serialize.f, .{ .name = d.name ++ "__serialize" });
            if (@hasDecl(d.Impl.Deserialize, "f")) @export(&d.Impl.Deserialize.f, .{ .name = d.name ++ "__deserialize" });
            if (@hasDecl(d.Impl.Inverse, "f")) @export(&d.Impl.Inverse.f, .{ .name = d.name ++ "__inverse" });
            if (@hasDecl(d.Impl.Value, "f")) @export(&d.Impl.Value.f, .{ .name = d.name ++ "__value" });
        }
    }
    const Exports = struct {
        const manifest = "WASMUDF-MANIFEST-FRAGMENT:{\"manifest\":{\"functions\":[" ++ functions ++ "]}}";
        const manifest_z: [manifest.len:0]u8 = manifest.*;

        fn abiVersion() callconv(.c) u32 {
            // Keeps the manifest fragment in the data segment for `wasmudf build`.
            std.mem.doNotOptimizeAway(&manifest_z);
            return abi_version;
        }
        fn allocExport(size: u32, alignment: u32) callconv(.c) u32 {
            return alloc(size, alignment);
        }
        fn resetExport() callconv(.c) void {
            reset();
        }
        fn errorExport() callconv(.c) u32 {
            return @intCast(@intFromPtr(&message_buf));
        }
    };
    @export(&Exports.abiVersion, .{ .name = "wasmudf_abi_version" });
    @export(&Exports.allocExport, .{ .name = "wasmudf_alloc" });
    @export(&Exports.resetExport, .{ .name = "wasmudf_reset" });
    @export(&Exports.errorExport, .{ .name = "wasmudf_error" });
}
