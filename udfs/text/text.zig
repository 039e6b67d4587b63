//! Text UDFs: edit distance, URL slugs, accent folding, card-number checks.
const std = @import("std");
const udf = @import("wasmudf");
const fold = @import("fold_table.zig");

/// Decode one code point at `s[i.*]`, advancing `i`; invalid bytes decode as U+FFFD, one
/// byte at a time, so the functions are total on any input.
fn nextCodepoint(s: []const u8, i: *usize) u21 {
    const b0 = s[i.*];
    const len: usize = if (b0 < 0x80) 1 else if (b0 & 0xE0 == 0xC0) 2 else if (b0 & 0xF0 == 0xE0) 3 else if (b0 & 0xF8 == 0xF0) 4 else 0;
    if (len == 0 or i.* + len > s.len) {
        i.* += 1;
        return 0xFFFD;
    }
    const cp = std.unicode.utf8Decode(s[i.* .. i.* + len]) catch {
        i.* += 1;
        return 0xFFFD;
    };
    i.* += len;
    return cp;
}

fn codepoints(s: []const u8) ![]u21 {
    var out = try udf.allocator.alloc(u21, s.len);
    var n: usize = 0;
    var i: usize = 0;
    while (i < s.len) : (n += 1) out[n] = nextCodepoint(s, &i);
    return out[0..n];
}

/// Levenshtein distance in code points (insertions, deletions, substitutions cost 1).
fn levenshtein(a_text: []const u8, b_text: []const u8) !i64 {
    const a = try codepoints(a_text);
    const b = try codepoints(b_text);
    if (a.len == 0) return @intCast(b.len);
    if (b.len == 0) return @intCast(a.len);
    var row = try udf.allocator.alloc(u32, b.len + 1);
    for (row, 0..) |*cell, j| cell.* = @intCast(j);
    for (a, 0..) |ca, i| {
        var diagonal = row[0];
        row[0] = @intCast(i + 1);
        for (b, 0..) |cb, j| {
            const above = row[j + 1];
            const cost: u32 = if (ca == cb) 0 else 1;
            row[j + 1] = @min(@min(above + 1, row[j] + 1), diagonal + cost);
            diagonal = above;
        }
    }
    return row[b.len];
}

fn foldInto(out: *std.ArrayList(u8), cp: u21) !void {
    if (cp >= fold.first and cp - fold.first < fold.table.len and fold.table[cp - fold.first].len > 0) {
        try out.appendSlice(udf.allocator, fold.table[cp - fold.first]);
        return;
    }
    var buf: [4]u8 = undefined;
    const n = std.unicode.utf8Encode(cp, &buf) catch std.unicode.utf8Encode(0xFFFD, &buf) catch unreachable;
    try out.appendSlice(udf.allocator, buf[0..n]);
}

/// Latin letters with accents replaced by their ASCII base (é → e, ß → ss); the rest kept.
fn ascii_fold(s: []const u8) ![]const u8 {
    var out: std.ArrayList(u8) = .empty;
    try out.ensureTotalCapacity(udf.allocator, s.len);
    var i: usize = 0;
    while (i < s.len) try foldInto(&out, nextCodepoint(s, &i));
    return out.items;
}

/// A URL slug: folded to ASCII, lower case, runs of anything but letters and digits
/// become one '-', no leading or trailing '-'.
fn slugify(s: []const u8) ![]const u8 {
    const folded = try ascii_fold(s);
    var out = try udf.allocator.alloc(u8, folded.len);
    var n: usize = 0;
    var gap = false;
    for (folded) |c| {
        if (std.ascii.isAlphanumeric(c)) {
            if (gap and n > 0) {
                out[n] = '-';
                n += 1;
            }
            gap = false;
            out[n] = std.ascii.toLower(c);
            n += 1;
        } else {
            gap = true;
        }
    }
    return out[0..n];
}

/// Luhn checksum of a card or account number; spaces are ignored. False when anything else
/// than digits and spaces appears, or when there are fewer than two digits.
fn luhn_check(s: []const u8) bool {
    var sum: u32 = 0;
    var digits: u32 = 0;
    var i = s.len;
    while (i > 0) {
        i -= 1;
        const c = s[i];
        if (c == ' ') continue;
        if (c < '0' or c > '9') return false;
        var d: u32 = c - '0';
        if (digits % 2 == 1) {
            d *= 2;
            if (d > 9) d -= 9;
        }
        sum += d;
        digits += 1;
    }
    return digits >= 2 and sum % 10 == 0;
}

/// FizzBuzz, the same function as fizzbuzz_c, fizzbuzz_rs and the AssemblyScript fizzbuzz.
fn fizzbuzz_zig(n: i64) ![]const u8 {
    if (@rem(n, 15) == 0) return "FizzBuzz";
    if (@rem(n, 3) == 0) return "Fizz";
    if (@rem(n, 5) == 0) return "Buzz";
    return std.fmt.allocPrint(udf.allocator, "{d}", .{n});
}

/// The longest string of a group; of equally long ones the smallest (byte order).
const Longest = struct {
    best: []u8 = &.{},
    seen: bool = false,

    pub fn step(self: *Longest, s: []const u8) !void {
        const better = !self.seen or s.len > self.best.len or
            (s.len == self.best.len and std.mem.order(u8, s, self.best) == .lt);
        if (!better) return;
        const copy = try udf.state_allocator.dupe(u8, s);
        udf.state_allocator.free(self.best);
        self.best = copy;
        self.seen = true;
    }
    pub fn final(self: *Longest) ?[]const u8 {
        return if (self.seen) self.best else null;
    }
    pub fn merge(self: *Longest, other: *Longest) !void {
        if (other.seen) try self.step(other.best);
    }
    /// Moving between instances: empty for a state that saw no row, else a 1 and the string.
    pub fn serialize(self: *Longest) ![]const u8 {
        if (!self.seen) return &.{};
        const out = try udf.allocator.alloc(u8, self.best.len + 1);
        out[0] = 1;
        @memcpy(out[1..], self.best);
        return out;
    }
    pub fn deserialize(bytes: []const u8) !Longest {
        var s = Longest{};
        if (bytes.len == 0) return s;
        if (bytes[0] != 1) return error.NotALongestState;
        try s.step(bytes[1..]);
        return s;
    }
    pub fn deinit(self: *Longest) void {
        udf.state_allocator.free(self.best);
    }
};

/// Characters seen in a window of rows: the total, with rows taken out again as the window moves.
const CharCount = struct {
    total: i64 = 0,

    pub fn step(self: *CharCount, s: []const u8) !void {
        self.total += @intCast(try std.unicode.utf8CountCodepoints(s));
    }
    pub fn inverse(self: *CharCount, s: []const u8) !void {
        self.total -= @intCast(try std.unicode.utf8CountCodepoints(s));
    }
    pub fn final(self: *CharCount) i64 {
        return self.total;
    }
    /// A plain state with merge: it moves between instances as its bytes.
    pub fn merge(self: *CharCount, other: *CharCount) void {
        self.total += other.total;
    }
};

/// fizzbuzz_zig's words as rows: (n, word) for n = 1..count, the same table as fizzbuzz_rows_rs.
const FizzBuzzRows = struct {
    n: i64 = 1,
    count: i64,

    pub fn open(count: i64) FizzBuzzRows {
        return .{ .count = count };
    }
    pub fn next(self: *FizzBuzzRows, out: *udf.Rows(struct { n: i64, word: []const u8 })) !bool {
        while (!out.full() and self.n <= self.count) : (self.n += 1) {
            out.emit(.{ .n = self.n, .word = try fizzbuzz_zig(self.n) });
        }
        return self.n <= self.count;
    }
};

comptime {
    udf.module(.{
        udf.scalar("edit_distance", levenshtein, .{ .doc = "edit distance between two strings, in code points" }),
        udf.scalar("ascii_fold", ascii_fold, .{ .doc = "accented Latin letters replaced by ASCII (é to e, ß to ss)" }),
        udf.scalar("slugify", slugify, .{ .doc = "lower-case ASCII slug with '-' between words" }),
        udf.scalar("luhn_check", luhn_check, .{ .doc = "true when the digits pass the Luhn checksum (spaces ignored)" }),
        udf.scalar("fizzbuzz_zig", fizzbuzz_zig, .{ .doc = "Fizz for multiples of 3, Buzz of 5, FizzBuzz of both, else the number" }),
        udf.aggregate("longest", Longest, .{ .doc = "the longest string (in UTF-8 bytes); the smallest of equally long ones" }),
        udf.aggregate("char_total", CharCount, .{ .doc = "total characters (code points) of the strings; a window function" }),
        udf.table("fizzbuzz_rows_zig", FizzBuzzRows, .{ .doc = "rows (n, fizzbuzz word) for n from 1 to count" }),
    });
}
