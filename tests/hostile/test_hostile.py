"""Modules written to break the sandbox, one attack each (WAT). Every case asserts the
specific error and what it says, that the process and the connection survived, and, for
call-time attacks, that a SQLite file written before the attack is intact.

Cases that could take the process down run in a subprocess.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import wat

import wasmudf
from wasmudf import (
    ExportError,
    FuelExhausted,
    GuestFailure,
    GuestTrap,
    InvalidGuestOutput,
    Limits,
    ManifestError,
    MemoryLimitExceeded,
    ModuleError,
    OutputLimitExceeded,
    PolicyError,
    StackLimitExceeded,
    TableLimitExceeded,
    TimeLimitExceeded,
)

OK = wat.scalar("add_i64", ["int64", "int64"], "int64")
I64 = wat.scalar("f", ["int64"], "int64")
UTF8 = wat.scalar("f", ["int64"], "utf8")


def build(body: str, functions=(I64,), **kw) -> bytes:
    return wat.module(body + wat.ADD_I64, [*functions, OK], **kw)


def scalar_body(code: str) -> str:
    """The export `f(args, nargs, out)` with ``code`` as its body (must leave an i32)."""
    return f'(func (export "f") (param $args i32) (param $nargs i32) (param $out i32) (result i32) {code})'


def utf8_output(offsets: tuple[int, int], values: int, values_len: int, length: int | None = None) -> str:
    """`f` of one row returning a utf8 result with the given offsets and values fields."""
    set_length = f"(i32.store offset=4 (local.get $out) (i32.const {length}))" if length is not None else ""
    return scalar_body(f"""
        (i32.store (i32.load offset=16 (local.get $out)) (i32.const {offsets[0]}))
        (i32.store offset=4 (i32.load offset=16 (local.get $out)) (i32.const {offsets[1]}))
        (i32.store offset=20 (local.get $out) (i32.const {values}))
        (i32.store offset=24 (local.get $out) (i32.const {values_len}))
        {set_length}
        (i32.const 0)""")


# -- load-time attacks: refused before any guest code runs -------------------------------

def _load_cases():
    prelude_without_memory = wat.PRELUDE.replace('(memory (export "memory") 1)', "")
    manifest = wat.custom("wasmudf", wat.manifest([OK]))

    def raw(text: str) -> bytes:
        return wat.wasmtime.wat2wasm(f"(module {manifest} {text})")

    return {
        "shared memory (threads)": (
            raw(prelude_without_memory + '(memory (export "memory") 1 1 shared)' + wat.ADD_I64),
            {},
            ModuleError,
            r"(?i)shared|threads",
        ),
        "memory64": (
            raw(prelude_without_memory + '(memory (export "memory") i64 1)' + wat.ADD_I64),
            {},
            ModuleError,
            r"(?i)memory64|64-bit",
        ),
        "multiple memories": (
            raw(wat.PRELUDE + "(memory 1)" + wat.ADD_I64),
            {},
            ModuleError,
            r"(?i)multiple memor",
        ),
        "GC types": (raw(wat.PRELUDE + "(type (struct (field i32)))" + wat.ADD_I64), {}, ModuleError, r"(?i)gc|struct"),
        "exceptions": (raw(wat.PRELUDE + "(tag $t)" + wat.ADD_I64), {}, ModuleError, r"(?i)exception"),
        "unknown import": (
            build("", imports='(import "env" "system" (func (param i32)))'),
            {},
            PolicyError,
            r"env\.system",
        ),
        "ungranted capability": (
            build("", imports='(import "wasmudf" "log" (func (param i32 i32 i32)))', capabilities=["log"]),
            {},
            PolicyError,
            r"log.*grant",
        ),
        "import the manifest does not ask for": (
            build("", imports='(import "wasmudf" "secret_get" (func (param i32 i32 i32 i32) (result i32)))'),
            {"grant": ["secret_get"], "tenant": "t1"},
            PolicyError,
            r"secret_get",
        ),
        "manifest types vs export signature": (
            build('(func (export "f") (param i32) (result i32) (i32.const 0))'),
            {},
            ExportError,
            r"'f' has signature \(i32\) -> \(i32\); expected \(i32, i32, i32\) -> \(i32\)",
        ),
        "missing export": (build(""), {}, ExportError, r"export 'f'.*missing"),
        "duplicate names": (
            wat.module(wat.ADD_I64, [OK, OK]),
            {},
            ManifestError,
            r"'add_i64' and 'add_i64' have the same SQL name",
        ),
        "unknown manifest field": (
            wat.module(wat.ADD_I64, [{**OK, "sandbox": "off"}]),
            {},
            ManifestError,
            r"sandbox",
        ),
        "wrong ABI version in the manifest": (
            wat.module(wat.ADD_I64, raw_manifest='{"abi": 2, "functions": []}'),
            {},
            ManifestError,
            r"(?i)abi",
        ),
        "compile bomb: too many functions": (
            build("".join("(func)" for _ in range(300))),
            {"limits": Limits(max_functions=200)},
            ModuleError,
            r"over Limits\.max_functions = 200",
        ),
        "oversized module": (
            build('(data (i32.const 4096) "' + "x" * 5000 + '")'),
            {"limits": Limits(module_bytes=4000)},
            ModuleError,
            r"over Limits\.module_bytes = 4000",
        ),
    }


LOAD_CASES = _load_cases()


@pytest.mark.parametrize("attack", list(LOAD_CASES))
def test_load_time_attacks_are_refused(attack):
    wasm, kwargs, error, message = LOAD_CASES[attack]
    with pytest.raises(error, match=message):
        wasmudf.load(wasm, **kwargs)


# -- instantiation-time attacks: a module that can never run is refused by load() ------------


def refused_at_load(wasm: bytes, cause: type, message: str, **kw) -> None:
    """load() refuses the module with a ModuleError saying why; the specific cause is chained."""
    with pytest.raises(ModuleError, match=message) as info:
        wasmudf.load(wasm, **kw)
    assert isinstance(info.value.__cause__, cause)
    assert "could not be instantiated" in str(info.value)


def test_initial_memory_over_the_cap():
    body = wat.PRELUDE.replace('(memory (export "memory") 1)', '(memory (export "memory") 2000)')
    wasm = wat.wasmtime.wat2wasm(f"(module {wat.custom('wasmudf', wat.manifest([OK]))} {body} {wat.ADD_I64})")
    refused_at_load(wasm, MemoryLimitExceeded, r"Limits\.memory_bytes = 67108864", limits=Limits(memory_bytes=64 << 20))


def test_huge_initial_table():
    refused_at_load(
        build("(table 200000 funcref)", functions=()),
        TableLimitExceeded,
        r"table does not fit in Limits\.table_elements = 10000",
        limits=Limits(table_elements=10_000),
    )


def test_endless_loop_in_the_start_function():
    wasm = build("(func $spin (loop $l (br $l))) (start $spin)", functions=())
    start = time.monotonic()
    refused_at_load(wasm, TimeLimitExceeded, r"start function.*100 ms time limit", limits=Limits(timeout_ms=100))
    assert time.monotonic() - start < 1.0


def test_endless_loop_in_initialize():
    wasm = build('(func (export "_initialize") (loop $l (br $l)))', functions=())
    start = time.monotonic()
    refused_at_load(wasm, TimeLimitExceeded, r"\(_initialize\).*100 ms time limit", limits=Limits(timeout_ms=100))
    assert time.monotonic() - start < 1.0


def test_abi_version_lie():
    body = wat.PRELUDE.replace("(i32.const 1))", "(i32.const 2))", 1)
    wasm = wat.wasmtime.wat2wasm(f"(module {wat.custom('wasmudf', wat.manifest([OK]))} {body} {wat.ADD_I64})")
    refused_at_load(wasm, InvalidGuestOutput, r"returned 2; this host speaks ABI 1")


def test_an_instance_that_fails_to_start_on_another_thread_names_the_function(tmp_path):
    # The start function reads a secret; the store answers the loading thread at once and
    # stalls for everyone after, so only a second thread's new instance runs out of time.
    class SlowAfterFirst:
        calls = 0

        def get(self, tenant, key):
            SlowAfterFirst.calls += 1
            if SlowAfterFirst.calls > 1:
                time.sleep(0.5)
            return "v"

    start = (
        '(data (i32.const 3000) "k")'
        '(func $s (local $i i32)'
        ' (drop (call $secret (i32.const 3000) (i32.const 1) (i32.const 3100) (i32.const 8)))'
        # a loop after the import: where wasmtime looks at the deadline again
        ' (loop $l (local.set $i (i32.add (local.get $i) (i32.const 1)))'
        '  (br_if $l (i32.lt_u (local.get $i) (i32.const 1000)))))'
        "(start $s)"
    )
    path = tmp_path / "stalls.wasm"
    path.write_bytes(build(start, functions=(), imports=SECRET_IMPORT, capabilities=["secret_get"]))
    module = wasmudf.load(path, grant=["secret_get"], tenant="acme", secrets=SlowAfterFirst(), limits=Limits(timeout_ms=100))
    errors: list[BaseException] = []

    def call() -> None:
        try:
            module.functions["add_i64"]([1], [2])
        except wasmudf.WasmUdfError as exc:
            errors.append(exc)

    worker = threading.Thread(target=call)
    worker.start()
    worker.join()
    assert len(errors) == 1 and isinstance(errors[0], TimeLimitExceeded)
    assert errors[0].function == "add_i64" and errors[0].module == "stalls.wasm"
    assert str(errors[0]).startswith("`add_i64` in stalls.wasm: a new instance could not start (its start function")
    assert "100 ms time limit" in str(errors[0])
    assert module.functions["add_i64"]([1], [2]).to_pylist() == [3]  # the loading thread's instance


# -- call-time attacks: the statement fails, nothing else does ----------------------------

SPIN = scalar_body("(loop $l (br $l)) (i32.const 0)")
GROW_BOMB = scalar_body("(loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) unreachable")
TABLE_BOMB = "(table $t 1 funcref)" + scalar_body(
    "(loop $l (br_if $l (i32.ne (table.grow $t (ref.null func) (i32.const 1000)) (i32.const -1)))) unreachable"
)
RECURSE = '(func $r (param i32) (result i32) (call $r (i32.add (local.get 0) (i32.const 1))))' + scalar_body(
    "(call $r (i32.const 0))"
)
FILL = scalar_body("""
    (drop (memory.grow (i32.const 1000)))
    (loop $l (memory.fill (i32.const 0) (i32.const 7) (i32.mul (memory.size) (i32.const 65536))) (br $l))
    (i32.const 0)""")

CALL_ATTACKS = {
    "endless loop": (build(SPIN), {"limits": Limits(timeout_ms=100)}, TimeLimitExceeded, r"`f`.*100 ms time limit"),
    "fuel": (build(SPIN), {"limits": Limits(fuel=100_000)}, FuelExhausted, r"`f`.*100000 units"),
    "memory.grow bomb": (build(GROW_BOMB), {"limits": Limits(memory_bytes=16 << 20)}, GuestTrap, r"`f`.*unreachable"),
    "table.grow bomb": (build(TABLE_BOMB), {"limits": Limits(table_elements=5000)}, GuestTrap, r"`f`.*unreachable"),
    "deep recursion": (build(RECURSE), {}, StackLimitExceeded, r"`f`.*512 KiB Wasm stack"),
    "long memory.fill under a short deadline": (
        build(FILL),
        {"limits": Limits(timeout_ms=50, memory_bytes=128 << 20)},
        TimeLimitExceeded,
        r"50 ms time limit",
    ),
    "values out of bounds": (build(utf8_output((0, 4), 0x7FFF0000, 4), [UTF8]), {}, InvalidGuestOutput, r"outside the \d+-byte linear memory"),
    "values at or above 2**31": (build(utf8_output((0, 4), -16, 4), [UTF8]), {}, InvalidGuestOutput, r"outside"),
    "values + values_len overflows u32": (
        build(utf8_output((0, -32), 0x1000, -32), [UTF8]),
        {"limits": Limits(output_bytes=None)},
        InvalidGuestOutput,
        r"over 2 GiB",
    ),
    "offsets run past values_len": (build(utf8_output((0, 9), 0x1000, 4), [UTF8]), {}, InvalidGuestOutput, r"offsets\[1\] is 9 but values_len is 4"),
    "offsets[0] not zero": (build(utf8_output((2, 4), 0x1000, 4), [UTF8]), {}, InvalidGuestOutput, r"offsets\[0\] is 2"),
    "wrong length": (build(utf8_output((0, 4), 0x1000, 4, length=5), [UTF8]), {}, InvalidGuestOutput, r"'length' field from 1 to 5"),
    "invalid UTF-8": (build('(data (i32.const 4096) "\\ff\\fe\\fd\\fc")' + utf8_output((0, 4), 4096, 4), [UTF8]), {}, InvalidGuestOutput, r"not valid UTF-8"),
    "oversized output": (
        build(utf8_output((0, 60000), 4096, 60000), [UTF8]),
        {"limits": Limits(output_bytes=1000)},
        OutputLimitExceeded,
        r"60000 bytes in one call, over Limits\.output_bytes = 1000",
    ),
    "failure status": (
        build('(data (i32.const 900) "nope\\00") (func (export "wasmudf_error") (result i32) (i32.const 900))'
              + scalar_body("(i32.const 9)")),
        {},
        GuestFailure,
        r"status 9.*nope",
    ),
}


@pytest.fixture
def sqlite_file(tmp_path):
    """A SQLite file with rows committed before the attack."""
    import apsw

    path = tmp_path / "kept.db"
    con = apsw.Connection(str(path))
    with con:
        con.execute("CREATE TABLE kept (x INTEGER)")
        con.executemany("INSERT INTO kept VALUES (?)", [(i,) for i in range(100)])
    yield con, path
    con.close()


def assert_intact(con, path: Path) -> None:
    import apsw

    assert con.execute("SELECT sum(add_i64(x, 1)) FROM kept").fetchall() == [(5050,)]
    assert con.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    other = apsw.Connection(str(path))
    assert other.execute("SELECT count(*) FROM kept").fetchall() == [(100,)]
    other.close()


@pytest.mark.parametrize("attack", list(CALL_ATTACKS))
def test_call_time_attacks(attack, sqlite_file):
    wasm, kwargs, error, message = CALL_ATTACKS[attack]
    module = wasmudf.load(wasm, **kwargs)
    start = time.monotonic()
    with pytest.raises(error, match=message):
        module.functions["f"]([1])
    assert time.monotonic() - start < 2.0
    # The same attack as SQL, on a database with committed rows.
    con, path = sqlite_file
    wasmudf.register(con, module)
    with pytest.raises(error, match=message):
        con.execute("UPDATE kept SET x = f(x)").fetchall()  # the failed statement changes nothing
    assert_intact(con, path)
    assert module.functions["add_i64"]([1], [2]).to_pylist() == [3]


def test_decreasing_offsets():
    body = scalar_body("""
        (i32.store offset=0 (i32.load offset=16 (local.get $out)) (i32.const 0))
        (i32.store offset=4 (i32.load offset=16 (local.get $out)) (i32.const 3))
        (i32.store offset=8 (i32.load offset=16 (local.get $out)) (i32.const 1))
        (i32.store offset=20 (local.get $out) (i32.const 4096))
        (i32.store offset=24 (local.get $out) (i32.const 1))
        (i32.const 0)""")
    with pytest.raises(InvalidGuestOutput, match=r"offsets decrease at row 1 \(3 then 1\)"):
        wasmudf.load(build(body, [UTF8])).functions["f"]([1, 2])


def test_memory_grow_bomb_never_exceeds_the_cap():
    module = wasmudf.load(build(GROW_BOMB), limits=Limits(memory_bytes=16 << 20))
    with pytest.raises(GuestTrap):
        module.functions["f"]([1])
    instance = module.instantiate()
    _, size = instance.memory()
    assert size <= 16 << 20


# -- capabilities ---------------------------------------------------------------------------

SECRET_READER = (
    '(data (i32.const 3000) "api_key")'
    + scalar_body("""
        (i64.store (i32.load offset=20 (local.get $out))
          (i64.extend_i32_s (call $secret (i32.const 3000) (i32.const 7) (i32.const 3100) (i32.const 64))))
        (i32.const 0)""")
    + '(func (export "secret_text") (result i32) (i32.const 3100))'
)
SECRET_IMPORT = '(import "wasmudf" "secret_get" (func $secret (param i32 i32 i32 i32) (result i32)))'


def secret_module(tenant: str, store) -> wasmudf.Module:
    wasm = build(SECRET_READER, imports=SECRET_IMPORT, capabilities=["secret_get"])
    return wasmudf.load(wasm, grant=["secret_get"], tenant=tenant, secrets=store)


def read_secret(module: wasmudf.Module) -> tuple[int, bytes]:
    length = module.functions["f"]([0]).to_pylist()[0]
    instance = module.instantiate()
    base, _ = instance.memory()
    import ctypes

    return length, ctypes.string_at(base + 3100, max(length, 0))


def test_secrets_are_scoped_to_the_registering_tenant():
    store = wasmudf.DictSecretStore({"acme": {"api_key": "acme-123"}, "globex": {"api_key": "globex-999"}})
    assert read_secret(secret_module("acme", store)) == (8, b"acme-123")
    assert read_secret(secret_module("globex", store)) == (10, b"globex-999")
    assert read_secret(secret_module("initech", store)) == (-1, b"")  # no such tenant: absent


def test_a_plain_mapping_of_tenants_is_a_secret_store():
    secrets = {"acme": {"api_key": "acme-123"}, "globex": {"other": "x"}}
    assert read_secret(secret_module("acme", secrets)) == (8, b"acme-123")
    # A missing key is absent (-1), never the text of the tenant's whole mapping.
    assert read_secret(secret_module("globex", secrets)) == (-1, b"")


@pytest.mark.parametrize("secrets", [["acme", "api_key"], "acme=1", 42, {"acme": "not a mapping"}])
def test_something_that_is_not_a_secret_store_is_refused(secrets):
    with pytest.raises(wasmudf.UsageError, match=r"secrets="):
        secret_module("acme", secrets)


@pytest.mark.parametrize("value", [{"nested": "mapping"}, 12345, ["a", "b"], None])
def test_a_secret_that_is_not_text_or_bytes_is_absent_for_the_guest(value, caplog):
    class Odd:
        def get(self, tenant, key):
            return value

    with caplog.at_level(logging.ERROR, logger="wasmudf"):
        assert read_secret(secret_module("acme", Odd())) == (-1, b"")
    logged = [r.getMessage() for r in caplog.records if r.name == "wasmudf"]
    if value is None:
        assert logged == []  # absent, as the store says: nothing to report
    else:
        assert len(logged) == 1
        assert logged[0].endswith(
            f": secret value for key 'api_key' is a {type(value).__name__}, not str or bytes; "
            "the guest was told it is absent"
        )


def test_a_failing_secret_store_is_a_status_not_an_exception():
    class Broken:
        def get(self, tenant, key):
            raise RuntimeError("vault is down")

    assert read_secret(secret_module("acme", Broken())) == (-1, b"")


# 20,000 log calls a guest call (200x the per-call budget); each crosses into Python, so the
# tests using it set no time limit (a slow machine, or the sanitizer build, may need it).
LOG_FLOOD = (
    '(data (i32.const 3000) "spam")'
    + scalar_body("""
        (local $i i32)
        (loop $l
          (call $log (i32.const 30) (i32.const 3000) (i32.const 4))
          (call $log (i32.const 30) (i32.const 0x7FFFFFF0) (i32.const 100000))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $l (i32.lt_u (local.get $i) (i32.const 10000))))
        (i64.store (i32.load offset=20 (local.get $out)) (i64.const 1))
        (i32.const 0)""")
)


def test_log_flood_is_bounded(caplog):
    wasm = build(LOG_FLOOD, imports='(import "wasmudf" "log" (func $log (param i32 i32 i32)))', capabilities=["log"])
    module = wasmudf.load(wasm, grant=["log"], limits=wasmudf.Limits(timeout_ms=None))  # about the budget only
    with caplog.at_level(logging.WARNING, logger="wasmudf.guest"):
        assert module.functions["f"]([1]).to_pylist() == [1]
        assert module.functions["f"]([1]).to_pylist() == [1]
    records = [r for r in caplog.records if r.name == "wasmudf.guest"]
    per_call = wasmudf.capabilities.LOG_MAX_MESSAGES_PER_CALL
    assert 0 < len(records) <= 2 * per_call
    assert all(r.getMessage().endswith("spam") for r in records)


def test_the_log_budget_is_per_instance_on_several_threads(caplog):
    # Each call logs 10,000 good and 10,000 bad messages; the budget (counting both) lets
    # exactly half of LOG_MAX_MESSAGES_PER_CALL through per call, whatever other threads do.
    wasm = build(LOG_FLOOD, imports='(import "wasmudf" "log" (func $log (param i32 i32 i32)))', capabilities=["log"])
    # 20,000 host calls a call, three threads taking turns with the GIL (and the sanitizer
    # build slower still): this is about the budget, so no time limit.
    module = wasmudf.load(wasm, grant=["log"], limits=wasmudf.Limits(timeout_ms=None))
    calls_per_thread = 4

    def worker() -> None:
        for _ in range(calls_per_thread):
            module.functions["f"]([1])

    with caplog.at_level(logging.WARNING, logger="wasmudf.guest"):
        threads = [threading.Thread(target=worker) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    records = [r for r in caplog.records if r.name == "wasmudf.guest"]
    assert len(records) == 3 * calls_per_thread * wasmudf.capabilities.LOG_MAX_MESSAGES_PER_CALL // 2


# -- threads -------------------------------------------------------------------------------


def test_concurrent_traps_and_a_failing_host_import_stay_on_their_own_thread():
    class Broken:
        def get(self, tenant, key):
            raise RuntimeError("vault is down")

    trapping = wasmudf.load(build(scalar_body("unreachable")))
    reader = secret_module("acme", Broken())
    results: dict[str, list] = {"trap": [], "secret": []}

    def trap_many():
        for _ in range(200):
            try:
                trapping.functions["f"]([1])
            except GuestTrap as exc:
                results["trap"].append(type(exc).__name__)

    def read_many():
        for _ in range(200):
            results["secret"].append(reader.functions["f"]([0]).to_pylist()[0])

    threads = [threading.Thread(target=trap_many), threading.Thread(target=read_many)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results["trap"] == ["GuestTrap"] * 200
    assert results["secret"] == [-1] * 200


DEEP_RECURSION_ON_DUCKDB_WORKERS = """
import duckdb, wasmudf, sys
sys.path.insert(0, {tests!r})
import wat
body = {recurse!r}
wasm = wat.module(body + wat.ADD_I64, [wat.scalar("f", ["int64"], "int64"), wat.scalar("add_i64", ["int64", "int64"], "int64")])
con = duckdb.connect()
con.execute("SET threads = 4")
wasmudf.register(con, wasm)
con.execute("CREATE TABLE t AS SELECT range AS x FROM range(200000)")
for _ in range(3):
    try:
        con.execute("SELECT sum(f(x)) FROM t").fetchall()
    except Exception as exc:
        assert "overflowed its 512 KiB Wasm stack" in str(exc), exc
    else:
        raise AssertionError("no error")
print(con.execute("SELECT sum(add_i64(x, 1)) FROM t").fetchall()[0][0])
"""


def test_deep_recursion_on_duckdb_worker_threads():
    # In a subprocess: a stack limit above the real thread stack would kill the process.
    script = DEEP_RECURSION_ON_DUCKDB_WORKERS.format(tests=str(Path(__file__).resolve().parent.parent), recurse=RECURSE)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == str(sum(range(200000)) + 200000)


def test_two_tenants_on_several_threads_see_only_their_own_secrets():
    store = wasmudf.DictSecretStore({"acme": {"api_key": "acme-123"}, "globex": {"api_key": "globex-99999"}})
    modules = {"acme": secret_module("acme", store), "globex": secret_module("globex", store)}
    expected = {"acme": (8, b"acme-123"), "globex": (12, b"globex-99999")}
    seen: list[tuple[str, tuple[int, bytes]]] = []

    def worker(tenant: str) -> None:
        for _ in range(50):
            seen.append((tenant, read_secret(modules[tenant])))

    threads = [threading.Thread(target=worker, args=(t,)) for t in ("acme", "globex") * 3]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 300
    assert all(result == expected[tenant] for tenant, result in seen)


CONFIG_READER = (
    '(data (i32.const 3000) "region")'
    + scalar_body("""
        (i64.store (i32.load offset=20 (local.get $out))
          (i64.extend_i32_s (call $config (i32.const 3000) (i32.const 6) (i32.const 3100) (i32.const 4))))
        (i32.const 0)""")
)


def test_config_get_reads_registration_config_and_never_overflows_the_buffer():
    wasm = build(
        CONFIG_READER,
        imports='(import "wasmudf" "config_get" (func $config (param i32 i32 i32 i32) (result i32)))',
        capabilities=["config_get"],
    )
    short = wasmudf.load(wasm, grant=["config_get"], config={"region": "eu"})
    assert short.functions["f"]([0]).to_pylist() == [2]
    long = wasmudf.load(wasm, grant=["config_get"], config={"region": "eu-central-1"})
    # The value's full length comes back; nothing is copied into a 4-byte buffer.
    assert long.functions["f"]([0]).to_pylist() == [12]
    absent = wasmudf.load(wasm, grant=["config_get"], config={})
    assert absent.functions["f"]([0]).to_pylist() == [-1]


WASI_IMPORTS = """
  (import "wasi_snapshot_preview1" "environ_sizes_get" (func $env_sizes (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
"""
WASI_BODY = (
    '(data (i32.const 3000) "hello from the guest\\n")'
    + scalar_body("""
        (local $i i32)
        (drop (call $env_sizes (i32.const 3200) (i32.const 3204)))
        ;; an iovec {ptr, len} at 3300, written 5000 times
        (i32.store (i32.const 3300) (i32.const 3000))
        (i32.store (i32.const 3304) (i32.const 21))
        (loop $l
          (drop (call $fd_write (i32.const 1) (i32.const 3300) (i32.const 1) (i32.const 3400)))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $l (i32.lt_u (local.get $i) (i32.const 5000))))
        (i64.store (i32.load offset=20 (local.get $out)) (i64.extend_i32_u (i32.load (i32.const 3200))))
        (i32.const 0)""")
)


def test_wasi_needs_its_grant():
    with pytest.raises(PolicyError, match=r"wasi_snapshot_preview1\.environ_sizes_get"):
        wasmudf.load(build(WASI_BODY, imports=WASI_IMPORTS, capabilities=["wasi"]))


def test_granted_wasi_has_no_environment_and_writes_go_nowhere(capfd, monkeypatch):
    monkeypatch.setenv("SECRET_TOKEN", "do-not-leak")
    module = wasmudf.load(build(WASI_BODY, imports=WASI_IMPORTS, capabilities=["wasi"]), grant=["wasi"])
    assert module.functions["f"]([0]).to_pylist() == [0]  # no environment variables
    out, err = capfd.readouterr()
    assert "hello from the guest" not in out + err
