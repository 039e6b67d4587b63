"""Hand-written WAT modules for tests: a standard prelude plus the parts a test changes."""

from __future__ import annotations

import json
from typing import Any

import wasmtime

# A bump allocator over pages grown on demand, reset to the heap start, and the version.
PRELUDE = """
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))
  (func (export "wasmudf_abi_version") (result i32) (i32.const 1))
  (func (export "wasmudf_reset") (global.set $heap (i32.const 1024)))
  (func $alloc (export "wasmudf_alloc") (param $size i32) (param $align i32) (result i32)
    (local $p i32) (local $end i32)
    (local.set $p (i32.and (i32.add (global.get $heap) (i32.sub (local.get $align) (i32.const 1)))
                           (i32.sub (i32.const 0) (local.get $align))))
    (local.set $end (i32.add (local.get $p) (local.get $size)))
    (if (i32.gt_u (local.get $end) (i32.mul (memory.size) (i32.const 65536)))
      (then
        (if (i32.eq (memory.grow (i32.add (i32.shr_u (i32.sub (local.get $end)
                (i32.mul (memory.size) (i32.const 65536))) (i32.const 16)) (i32.const 1)))
              (i32.const -1))
          (then (return (i32.const 0))))))
    (global.set $heap (local.get $end))
    (local.get $p))
"""


def manifest(functions: list[dict[str, Any]], **top: Any) -> str:
    doc = {"abi": 1, "functions": functions, **top}
    return json.dumps(doc)


def custom(name: str, content: str) -> str:
    escaped = content.replace("\\", "\\\\").replace('"', '\\"')
    return f'(@custom "{name}" "{escaped}")'


def module(
    body: str,
    functions: list[dict[str, Any]] | None = None,
    *,
    prelude: bool = True,
    raw_manifest: str | None = None,
    imports: str = "",
    **top: Any,
) -> bytes:
    """Assemble a module: ``imports``, the prelude, ``body``, and a manifest section."""
    parts = ["(module", imports]
    if raw_manifest is not None:
        parts.append(custom("wasmudf", raw_manifest))
    elif functions is not None:
        parts.append(custom("wasmudf", manifest(functions, **top)))
    if prelude:
        parts.append(PRELUDE)
    parts.append(body)
    parts.append(")")
    return wasmtime.wat2wasm("\n".join(parts))


def scalar(name: str, params: list[str], returns: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "kind": "scalar", "params": params, "returns": returns, **extra}


# add_i64(a, b): loops over rows reading each argument descriptor's values buffer.
ADD_I64 = """
  (func (export "add_i64") (param $args i32) (param $nargs i32) (param $out i32) (result i32)
    (local $n i32) (local $i i32) (local $a i32) (local $b i32) (local $o i32)
    (local.set $n (i32.load offset=4 (local.get $args)))
    (local.set $a (i32.load offset=20 (local.get $args)))
    (local.set $b (i32.load offset=52 (local.get $args)))
    (local.set $o (i32.load offset=20 (local.get $out)))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (i64.store (i32.add (local.get $o) (i32.shl (local.get $i) (i32.const 3)))
        (i64.add (i64.load (i32.add (local.get $a) (i32.shl (local.get $i) (i32.const 3))))
                 (i64.load (i32.add (local.get $b) (i32.shl (local.get $i) (i32.const 3))))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
    (i32.const 0))
"""


def counter(name: str) -> bytes:
    """A module whose scalar ``name(int64) -> int64`` returns how many times its instance
    was called (one row per call): which instance answered, and how often."""
    body = f"""
  (global $calls (mut i32) (i32.const 0))
  (func (export "{name}") (param $args i32) (param i32) (param $out i32) (result i32)
    (global.set $calls (i32.add (global.get $calls) (i32.const 1)))
    (i64.store (i32.load offset=20 (local.get $out)) (i64.extend_i32_u (global.get $calls)))
    (i32.const 0))
"""
    return module(body, [scalar(name, ["int64"], "int64")])
