"""load() refuses what ABI v1 §1–§2 forbids, with an error naming the problem."""

from __future__ import annotations

import pytest
import wasmtime
import wat

import wasmudf
from wasmudf import ExportError, ManifestError, ModuleError, PolicyError

ADD = [wat.scalar("add_i64", ["int64", "int64"], "int64")]


def load_wat(body: str, functions=ADD, **kw):
    opts = {k: kw.pop(k) for k in ("grant", "limits", "tenant") if k in kw}
    return wasmudf.load(wat.module(body, functions, **kw), **opts)


def test_a_valid_module_loads_and_describes_itself():
    mod = load_wat(wat.ADD_I64)
    assert list(mod.functions) == ["add_i64"]
    assert mod.manifest.functions[0].signature() == "add_i64(int64, int64) -> int64"
    assert len(mod.sha256) == 64 and mod.label.startswith("sha256:")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"not wasm at all", "not a WebAssembly module"),
        (b"\0asm\x0d\0\x01\0", "not a core WebAssembly module"),
        (b"\0asm\x01\0\0\0\x01\xff\x01", "truncated"),
    ],
)
def test_malformed_bytes(data, message):
    with pytest.raises(ModuleError, match=message):
        wasmudf.load(data)


def test_missing_manifest():
    with pytest.raises(ManifestError, match="no 'wasmudf' custom section"):
        wasmudf.load(wat.module(wat.ADD_I64, None))


def test_two_manifest_sections():
    body = wat.custom("wasmudf", wat.manifest(ADD)) + wat.ADD_I64
    with pytest.raises(ManifestError, match="2 'wasmudf' sections"):
        load_wat(body)


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "must be a JSON object"),
        ('{"abi": 2, "functions": []}', "ABI version 2"),
        ('{"abi": 1, "functions": []}', "non-empty list"),
        ('{"abi": 1, "functions": [{"name": "f"}], "extra": 1}', "unknown field 'extra'"),
        ('{"abi": 1, "capabilities": ["net"], "functions": [{"name": "f"}]}', "unknown capability 'net'"),
    ],
)
def test_invalid_manifest_top_level(manifest, message):
    with pytest.raises(ManifestError, match=message):
        load_wat(wat.ADD_I64, raw_manifest=manifest)


@pytest.mark.parametrize(
    ("fn", "message"),
    [
        ({"name": "1bad", "kind": "scalar", "params": [], "returns": "int64"}, "must match"),
        ({"name": "f", "kind": "window", "params": [], "returns": "int64"}, "'kind'"),
        ({"name": "f", "kind": "scalar", "params": ["int128"], "returns": "int64"}, "unknown type 'int128'"),
        (
            {"name": "f", "kind": "scalar", "params": [], "returns": "int64", "color": 1},
            "unknown field 'color'",
        ),
        ({"name": "f", "kind": "scalar", "params": [], "returns": "int64", "nulls": "maybe"}, "'nulls'"),
        (
            {"name": "f", "kind": "scalar", "params": [], "returns": "int64", "window": True},
            "only allowed on aggregates",
        ),
        ({"name": "f", "kind": "scalar", "params": ["int64"] * 33, "returns": "int64"}, "at most 32"),
        (
            {"name": "f", "kind": "scalar", "params": [], "returns": "int64", "deterministic": "yes"},
            "true or false",
        ),
    ],
)
def test_invalid_function_entry(fn, message):
    with pytest.raises(ManifestError, match=message):
        load_wat(wat.ADD_I64, [fn])


def test_duplicate_names_ignoring_case():
    fns = [
        wat.scalar("add_i64", ["int64", "int64"], "int64"),
        wat.scalar("ADD_I64", ["int64", "int64"], "int64", export="other"),
    ]
    with pytest.raises(ManifestError, match="same SQL name"):
        load_wat(wat.ADD_I64, fns)


def test_two_functions_sharing_an_export():
    fns = [
        wat.scalar("a", ["int64", "int64"], "int64", export="add_i64"),
        wat.scalar("b", ["int64", "int64"], "int64", export="add_i64"),
    ]
    with pytest.raises(ManifestError, match="share the export 'add_i64'"):
        load_wat(wat.ADD_I64, fns)


def test_missing_function_export_names_function_and_export():
    with pytest.raises(ExportError, match=r"function 'add_i64' needs the export 'add_i64'.*missing"):
        load_wat("")


def test_wrong_export_signature_names_both_signatures():
    body = '(func (export "add_i64") (param i64 i64) (result i64) (i64.const 0))'
    with pytest.raises(ExportError, match=r"\(i64, i64\) -> \(i64\); expected \(i32, i32, i32\) -> \(i32\)"):
        load_wat(body)


def test_missing_abi_export():
    body = wat.ADD_I64 + ""
    module = wat.module(body, ADD, prelude=False)
    with pytest.raises(ModuleError):
        wasmudf.load(module)


def test_missing_memory_export():
    prelude_without_memory_export = wat.PRELUDE.replace('(memory (export "memory") 1)', "(memory 1)")
    data = wat.wasmtime.wat2wasm(
        "(module "
        + wat.custom("wasmudf", wat.manifest(ADD))
        + prelude_without_memory_export
        + wat.ADD_I64
        + ")"
    )
    with pytest.raises(ExportError, match="does not export its linear memory"):
        wasmudf.load(data)


@pytest.mark.parametrize(
    ("body", "feature"),
    [
        ('(memory (export "memory") 1 1 shared)', "threads"),
        ('(memory (export "memory") i64 1)', "memory64"),
        ('(memory (export "memory") 1) (memory $second 1)', "multiple memories"),
        ("(tag $e) (func (throw $e))", "exception"),
        ("(type $s (struct (field i32)))  (func (drop (struct.new $s (i32.const 1))))", "gc"),
        ("(func $f) (func (return_call $f))", "tail"),
        (
            "(func (param v128) (drop (f32x4.relaxed_madd (local.get 0) (local.get 0) (local.get 0))))",
            "relaxed",
        ),
    ],
)
def test_disallowed_features_are_rejected(body, feature):
    if body.startswith("(memory"):
        data = wat.wasmtime.wat2wasm(
            "(module "
            + wat.custom("wasmudf", wat.manifest(ADD))
            + wat.PRELUDE.replace('(memory (export "memory") 1)', body)
            + wat.ADD_I64
            + ")"
        )
    else:
        data = wat.module(wat.ADD_I64 + body, ADD)
    with pytest.raises(ModuleError, match="is not a module wasmudf can run") as info:
        wasmudf.load(data)
    assert feature in str(info.value).lower()


def test_unknown_import_is_named():
    with pytest.raises(PolicyError, match="imports env.abort"):
        load_wat(wat.ADD_I64, imports='(import "env" "abort" (func))')


def test_capability_import_requires_manifest_entry_and_grant():
    log = '(import "wasmudf" "log" (func (param i32 i32 i32)))'
    with pytest.raises(PolicyError, match="does not list the capability 'log'"):
        load_wat(wat.ADD_I64, imports=log)
    with pytest.raises(PolicyError, match=r"pass grant=\['log'\]"):
        load_wat(wat.ADD_I64, imports=log, capabilities=["log"])
    assert load_wat(wat.ADD_I64, imports=log, capabilities=["log"], grant=["log"]).functions


def test_capability_import_with_wrong_signature():
    with pytest.raises(PolicyError, match=r"expected \(i32, i32, i32\) -> \(\)"):
        load_wat(
            wat.ADD_I64,
            imports='(import "wasmudf" "log" (func (param i32)))',
            capabilities=["log"],
            grant=["log"],
        )


def test_grant_names_are_checked():
    with pytest.raises(PolicyError, match="unknown capability 'network'"):
        load_wat(wat.ADD_I64, grant=["network"])
    with pytest.raises(PolicyError, match="without a tenant"):
        load_wat(wat.ADD_I64, grant=["secret_get"])


def test_module_size_and_function_count_limits():
    data = wat.module(wat.ADD_I64, ADD)
    with pytest.raises(ModuleError, match="Limits.module_bytes"):
        wasmudf.load(data, limits=wasmudf.Limits(module_bytes=100))
    many = "".join(f"(func $f{i})" for i in range(50)) + wat.ADD_I64
    with pytest.raises(ModuleError, match="Limits.max_functions"):
        load_wat(many, limits=wasmudf.Limits(max_functions=20))


def test_unreadable_path(tmp_path):
    with pytest.raises(ModuleError, match="cannot read module"):
        wasmudf.load(tmp_path / "missing.wasm")


def test_compiled_modules_are_cached_on_disk(tmp_path, monkeypatch):
    from wasmudf.runtime import ENGINES, DiskCache, EngineKey

    monkeypatch.setenv("WASMUDF_CACHE_DIR", str(tmp_path))
    data = wat.module(wat.ADD_I64 + "(func $unique_for_cache_test)", ADD)
    ENGINES.forget_compiled()
    wasmudf.load(data)
    artifacts = list(tmp_path.rglob("*.cwasm"))
    assert len(artifacts) == 1
    # Swap in native code this host did not write: a valid artifact of another module whose
    # add_i64 subtracts, under the original's MAC. Deserializing it would answer 1 - 2.
    subtract = wat.module(wat.ADD_I64.replace("i64.add", "i64.sub"), ADD)
    key = EngineKey.for_limits(wasmudf.Limits())
    engine, _ = ENGINES.engine(key)
    foreign = bytes(wasmtime.Module(engine, subtract).serialize())
    blob = artifacts[0].read_bytes()
    head = len(DiskCache._HEADER) + 32
    artifacts[0].write_bytes(blob[:head] + foreign)
    ENGINES.forget_compiled()
    mod = wasmudf.load(data)
    assert mod.functions["add_i64"]([1], [2]).to_pylist() == [3]  # compiled afresh, not the foreign code
