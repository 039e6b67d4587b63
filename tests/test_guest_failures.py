"""A guest that traps, fails, loops or returns malformed data gets a clear error, and
nothing else is lost: the connection, the database and the other functions keep working."""

from __future__ import annotations

import time

import pyarrow as pa
import pytest
import wat
from engines import guest_error, missing_function_error, query

import wasmudf
from wasmudf import GuestFailure, GuestTrap, InvalidGuestOutput, OutputLimitExceeded, TimeLimitExceeded
from wasmudf.adapters.sqlite_apsw import row_function

OK = wat.scalar("add_i64", ["int64", "int64"], "int64")


def one_function(name: str, body: str, returns: str = "int64", params=("int64",), **kw) -> wasmudf.Module:
    fns = [wat.scalar(name, list(params), returns), OK]
    return wasmudf.load(wat.module(body + wat.ADD_I64, fns), **kw)


def utf8_result(name: str, off0: int, off1: int, values: str, values_len: int, data: str = "") -> str:
    """A utf8 function of one row that reports the given offsets and values buffer."""
    return f"""
      (data (i32.const 512) "{data}")
      (func (export "{name}") (param $args i32) (param $nargs i32) (param $out i32) (result i32)
        (local $off i32)
        (local.set $off (i32.load offset=16 (local.get $out)))
        (i32.store (local.get $off) (i32.const {off0}))
        (i32.store offset=4 (local.get $off) (i32.const {off1}))
        (i32.store offset=20 (local.get $out) (i32.const {values}))
        (i32.store offset=24 (local.get $out) (i32.const {values_len}))
        (i32.const 0))
    """


TRAP = '(func (export "boom") (param i32 i32 i32) (result i32) unreachable)'
FAILS = """
  (data (i32.const 600) "division by banana\\00")
  (func (export "wasmudf_error") (result i32) (i32.const 600))
  (func (export "boom") (param i32 i32 i32) (result i32) (i32.const 7))
"""
LOOP = '(func (export "boom") (param i32 i32 i32) (result i32) (loop $l (br $l)) (i32.const 0))'


@pytest.fixture(params=["batch", "row"])
def call(request):
    """Call a function on one row: as a batch of Arrow arrays, or through the per-row
    callable SQLite registers (the C accelerator's RowCaller when it is built)."""
    if request.param == "batch":
        return lambda fn, *values: fn(*[[v] for v in values]).to_pylist()[0]
    return lambda fn, *values: row_function(fn)(*values)


def test_trap_names_function_and_cause(call):
    mod = one_function("boom", TRAP)
    with pytest.raises(GuestTrap, match=r"`boom` in sha256:\w{12} \(boom, add_i64\) trapped: .*unreachable") as info:
        call(mod.functions["boom"], 1)
    assert info.value.trap_code == "unreachable"
    assert call(mod.functions["add_i64"], 1, 2) == 3  # a fresh instance answers


def test_nonzero_status_carries_guest_message(call):
    mod = one_function("boom", FAILS)
    with pytest.raises(GuestFailure, match="status 7.*division by banana") as info:
        call(mod.functions["boom"], 1)
    assert info.value.guest_message == "division by banana"


def test_endless_loop_stops_at_the_time_limit(call):
    # The per-row path keeps the GIL while the guest runs: the epoch ticker must not need it.
    mod = one_function("boom", LOOP, limits=wasmudf.Limits(timeout_ms=100))
    start = time.monotonic()
    with pytest.raises(TimeLimitExceeded, match=r"100 ms time limit \(Limits.timeout_ms\)"):
        call(mod.functions["boom"], 1)
    assert time.monotonic() - start < 1.0
    assert call(mod.functions["add_i64"], 1, 2) == 3


def test_state_written_before_a_trap_is_gone(call):
    body = """
      (global $calls (mut i32) (i32.const 0))
      (func (export "count") (param $args i32) (param i32) (param $out i32) (result i32)
        (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
        (i64.store (i32.load offset=20 (local.get $out)) (i64.extend_i32_u (global.get $calls)))
        (if (i64.eq (i64.load (i32.load offset=20 (local.get $args))) (i64.const 0)) (then unreachable))
        (i32.const 0))
    """
    f = one_function("count", body).functions["count"]
    assert call(f, 5) == 1
    assert call(f, 5) == 2
    with pytest.raises(GuestTrap):
        call(f, 0)
    assert call(f, 5) == 1  # a fresh instance, not the one that trapped


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((0, 3, 512, 2, "ab"), "offsets\\[1\\] is 3 but values_len is 2"),
        ((0, 2, 512, 2, "\\ff\\fe"), "not valid UTF-8"),
        ((1, 2, 512, 2, "ab"), "offsets\\[0\\] is 1"),
        ((0, 2, 0x7FFFFFF0, 2, ""), "outside the"),
        ((0, 2, -16, 2, ""), "outside the"),  # an address >= 2**31 arrives as a negative i32
        ((0, 0, 0, 0, ""), None),  # an empty string with values = 0 is fine
    ],
)
def test_invalid_utf8_results_are_refused(args, message):
    off0, off1, values, values_len, data = args
    mod = one_function("bad", utf8_result("bad", off0, off1, values, values_len, data), returns="utf8")
    if message is None:
        assert mod.functions["bad"]([1]).to_pylist() == [""]
        return
    with pytest.raises(InvalidGuestOutput, match=f"`bad` in .* returned invalid data: .*{message}"):
        mod.functions["bad"]([1])


def test_decreasing_offsets_are_refused():
    body = """
      (func (export "bad") (param $args i32) (param $nargs i32) (param $out i32) (result i32)
        (local $off i32)
        (local.set $off (i32.load offset=16 (local.get $out)))
        (i32.store offset=4 (local.get $off) (i32.const 2))
        (i32.store offset=8 (local.get $off) (i32.const 1))
        (i32.store offset=12 (local.get $off) (i32.const 2))
        (i32.store offset=20 (local.get $out) (i32.const 512))
        (i32.store offset=24 (local.get $out) (i32.const 2))
        (i32.const 0))
    """
    mod = one_function("bad", body, returns="utf8")
    with pytest.raises(InvalidGuestOutput, match="offsets decrease at row 1"):
        mod.functions["bad"]([1, 2, 3])


@pytest.mark.parametrize(
    ("offset", "field"), [(0, "type"), (4, "length"), (12, "validity"), (28, "reserved")]
)
def test_changed_descriptor_fields_are_refused(call, offset, field):
    body = f"""
      (func (export "bad") (param i32 i32) (param $out i32) (result i32)
        (i32.store offset={offset} (local.get $out) (i32.const 99))
        (i32.const 0))
    """
    with pytest.raises(InvalidGuestOutput, match=f"changed the output descriptor's '{field}'"):
        call(one_function("bad", body).functions["bad"], 1)


def test_output_limit():
    mod = one_function(
        "big", utf8_result("big", 0, 100, 512, 100), returns="utf8", limits=wasmudf.Limits(output_bytes=50)
    )
    with pytest.raises(OutputLimitExceeded, match="100 bytes in one call, over Limits.output_bytes = 50"):
        mod.functions["big"]([1])


@pytest.mark.parametrize(
    ("returned", "error", "message"),
    [
        ("(i32.const 0)", GuestFailure, "could not allocate"),
        ("(i32.const 0x7FFFFFF0)", InvalidGuestOutput, "outside linear memory"),
        ("(i32.const -8)", InvalidGuestOutput, "outside linear memory"),
        ("(i32.const 1025)", InvalidGuestOutput, "misaligned"),
    ],
)
def test_bad_allocator_results(call, returned, error, message):
    prelude = wat.PRELUDE.replace('(export "wasmudf_alloc")', "")
    data = wat.wasmtime.wat2wasm(
        "(module "
        + wat.custom("wasmudf", wat.manifest([OK]))
        + prelude
        + f'(func (export "wasmudf_alloc") (param i32 i32) (result i32) {returned})'
        + wat.ADD_I64
        + ")"
    )
    with pytest.raises(error, match=message):
        call(wasmudf.load(data).functions["add_i64"], 1, 2)


def test_failures_are_sql_errors_and_the_connection_survives(conn, tmp_path):
    mod = one_function("boom", TRAP)
    wasmudf.register(conn, mod)
    query(conn, "CREATE TABLE kept (x BIGINT)")
    query(conn, "INSERT INTO kept VALUES (1), (2)")
    with pytest.raises(guest_error(conn, wasmudf.GuestTrap), match=r"`boom` in sha256:\w{12} \(boom, add_i64\) trapped: .*unreachable"):
        query(conn, "SELECT boom(x) FROM kept")
    assert query(conn, "SELECT sum(add_i64(x, 10)) FROM kept") == [(23,)]
    assert query(conn, "SELECT count(*) FROM kept") == [(2,)]


def test_sqlite_wrong_value_types_are_sql_errors(example_modules):
    import apsw

    con = apsw.Connection(":memory:")
    wasmudf.register(con, example_modules["numeric"])
    with pytest.raises(wasmudf.ArgumentTypeError, match="argument 1 must be int64, got TEXT 'x'"):
        con.execute("SELECT add_i64('x', 1)").fetchall()
    with pytest.raises(wasmudf.ArgumentTypeError, match="int32.*out of range"):
        con.execute("SELECT gcd_i32(5000000000, 1)").fetchall()
    assert con.execute("SELECT add_i64(1, 2), clamp(5, 0, 1)").fetchall() == [(3, 1.0)]


def test_register_refuses_duplicates_unless_replace(conn, example_modules):
    mod = example_modules["numeric"]
    names = wasmudf.register(conn, mod)
    assert "haversine_km" in names
    with pytest.raises(wasmudf.RegistrationError, match="already exists.*replace=True"):
        wasmudf.register(conn, mod)
    assert wasmudf.register(conn, mod, replace=True) == names
    assert query(conn, "SELECT add_i64(2, 3)") == [(5,)]


def test_register_refuses_other_objects():
    with pytest.raises(
        wasmudf.RegistrationError, match="supports duckdb.DuckDBPyConnection, apsw.Connection and sqlite3.Connection"
    ):
        wasmudf.register(object(), b"")


def test_direct_pyarrow_and_registered_results_agree(conn, example_modules):
    mod = example_modules["text"]
    wasmudf.register(conn, mod)
    words = ["Café au lait", "", "naïve résumé", "ŁÓDŹ"]
    direct = mod.functions["slugify"](pa.array(words)).to_pylist()
    via_sql = [query(conn, "SELECT slugify(?)", (w,))[0][0] for w in words]
    assert direct == via_sql == ["cafe-au-lait", "", "naive-resume", "lodz"]


def test_register_is_all_or_nothing_and_never_replaces_built_ins(conn):
    # `abs` is built in on both engines; `add_i64` comes first and must not stay behind.
    body = wat.ADD_I64 + '(func (export "abs") (param i32 i32 i32) (result i32) (i32.const 0))'
    module = wasmudf.load(wat.module(body, [OK, wat.scalar("abs", ["int64"], "int64")]))
    with pytest.raises(wasmudf.RegistrationError, match="`abs` is a built-in"):
        wasmudf.register(conn, module, replace=True)
    with pytest.raises(missing_function_error(conn), match="add_i64"):
        query(conn, "SELECT add_i64(1, 2)")
    assert query(conn, "SELECT abs(-3)") == [(3,)]


def test_replace_takes_over_an_applications_own_python_udf(conn):
    if type(conn).__module__.split(".")[0] in ("duckdb", "_duckdb"):
        conn.create_function("add_i64", lambda a, b: 0, ["BIGINT", "BIGINT"], "BIGINT")
    else:
        conn.create_scalar_function("add_i64", lambda a, b: 0, 2)
    module = wasmudf.load(wat.module(wat.ADD_I64, [OK]))
    with pytest.raises(wasmudf.RegistrationError, match="already exists.*replace=True"):
        wasmudf.register(conn, module)
    wasmudf.register(conn, module, replace=True)
    assert query(conn, "SELECT add_i64(1, 2)") == [(3,)]
