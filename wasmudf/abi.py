"""ABI version 1: type codes, the column descriptor, and the manifest schema.

Nothing here touches wasmtime. ``docs/abi.md`` is the prose version.
"""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import json
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from .errors import ManifestError

ABI_VERSION = 1
MANIFEST_SECTION = "wasmudf"

#: Capabilities a manifest may ask for and ``grant=`` may allow (ABI §6).
HOST_IMPORTS = ("log", "config_get", "secret_get")
CAPABILITIES = (*HOST_IMPORTS, "wasi")

MAX_PARAMS = 32
MAX_NAME_LEN = 64
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass(frozen=True)
class AbiType:
    """One ABI column type: everything the host core knows about it. Adding a type is one
    entry in :data:`TYPES` (plus the SDKs); each engine adapter maps the name to its SQL type
    in one table of its own, and the C accelerator's constants are checked against these by
    tests/test_type_table.py."""

    name: str
    code: int
    width: int  # bytes per row of the values buffer; 0 for variable-length types
    arrow: pa.DataType
    #: ``struct`` format of one value ("" for variable-length types).
    struct_code: str
    #: The Python values a one-row call accepts for a parameter of this type.
    accepts: tuple[type, ...]
    #: The inclusive range of an integer type; None when any accepted value fits.
    range: tuple[int, int] | None = None
    #: "date", "timestamp" or "timestamptz": an integer in memory that Python sees as a
    #: date or datetime and SQLite as ISO-8601 text (temporal.py); "" for the others.
    temporal: str = ""
    #: A decimal's precision and scale (0 for the other types).
    precision: int = 0
    scale: int = 0
    #: A list's element as (("item", T),) or a struct's fields as ((name, T), ...).
    children: tuple[tuple[str, AbiType], ...] = ()

    @property
    def is_varlen(self) -> bool:
        return self.width == 0

    @property
    def is_bits(self) -> bool:
        """Arrow packs it as bits, the ABI as one byte per row (bool): converted both ways."""
        return self.struct_code == "?"

    @property
    def is_float(self) -> bool:
        return self.struct_code in ("f", "d")

    @property
    def is_decimal(self) -> bool:
        return self.code == DECIMAL_CODE

    @property
    def is_nested(self) -> bool:
        """A list or a struct: its children have descriptors of their own (docs/abi.md §3.2),
        laid out and checked by nested.py rather than by the cores."""
        return self.code in (LIST_CODE, STRUCT_CODE)

    @property
    def is_plain(self) -> bool:
        """One of the v1 types or a date or timestamp: a fixed-width integer or float, a
        bool, or text or bytes, which every engine path passes as it is."""
        return not (self.is_decimal or self.is_nested)

    @property
    def depth(self) -> int:
        """1 for a flat type, one more per list or struct around it."""
        return 1 + max((t.depth for _, t in self.children), default=0)

    def spelled(self, syntax: TypeSyntax) -> str:
        """This type's name in an engine's SQL, from the engine's table of flat names and its
        forms for the parametric and nested types (each engine has one TypeSyntax)."""
        if self.is_decimal:
            return syntax.decimal.format(p=self.precision, s=self.scale)
        if self.code == LIST_CODE:
            return syntax.list.format(self.children[0][1].spelled(syntax))
        if self.code == STRUCT_CODE:
            fields = ", ".join(syntax.field.format(name=n, type=t.spelled(syntax)) for n, t in self.children)
            return syntax.struct.format(fields)
        return syntax.flat[self.name]

    def walk(self) -> Iterator[AbiType]:
        """This type and every type inside it."""
        yield self
        for _, t in self.children:
            yield from t.walk()


_BYTES_LIKE = (bytes, bytearray, memoryview)

TYPES: dict[str, AbiType] = {
    t.name: t
    for t in (
        AbiType("bool", 1, 1, pa.bool_(), "?", (int,)),
        AbiType("int32", 2, 4, pa.int32(), "i", (int, np.integer), (-(2**31), 2**31 - 1)),
        AbiType("int64", 3, 8, pa.int64(), "q", (int, np.integer), (-(2**63), 2**63 - 1)),
        AbiType("float32", 4, 4, pa.float32(), "f", (int, float)),
        AbiType("float64", 5, 8, pa.float64(), "d", (int, float)),
        AbiType("utf8", 6, 0, pa.string(), "", (str,)),
        AbiType("binary", 7, 0, pa.binary(), "", _BYTES_LIKE),
        AbiType("date", 8, 4, pa.date32(), "i", (dt.date, str), temporal="date"),
        AbiType("timestamp", 9, 8, pa.timestamp("us"), "q", (dt.datetime, str), temporal="timestamp"),
        AbiType("timestamptz", 10, 8, pa.timestamp("us", tz="UTC"), "q", (dt.datetime, str), temporal="timestamptz"),
    )
}
TYPES_BY_CODE = {t.code: t for t in TYPES.values()}

# -- parametric and nested types (docs/abi.md §3.2) ---------------------------------------

DECIMAL_CODE, LIST_CODE, STRUCT_CODE = 11, 12, 13
#: The most digits a decimal has (Arrow's decimal128, DuckDB's DECIMAL).
MAX_DECIMAL_PRECISION = 38
#: The deepest a type may nest: list<list<...>> eight levels down at most.
MAX_TYPE_DEPTH = 8
#: The most fields a struct has.
MAX_STRUCT_FIELDS = 32
#: What the cores know of a decimal: 16 bytes a row (its precision and scale are the
#: manifest's; the values are checked against them where results are read).
DECIMAL_STORAGE = AbiType("decimal", DECIMAL_CODE, 16, pa.decimal128(38, 0), "", ())
TYPES_BY_CODE[DECIMAL_CODE] = DECIMAL_STORAGE

_DECIMAL_ACCEPTS = (decimal.Decimal, int, np.integer, str, float)


def decimal_type(precision: int, scale: int) -> AbiType:
    """``decimal(p,s)``: 1 ≤ p ≤ 38, 0 ≤ s ≤ p."""
    if not 1 <= precision <= MAX_DECIMAL_PRECISION or not 0 <= scale <= precision:
        raise ValueError(f"decimal({precision},{scale}) needs 1 <= p <= {MAX_DECIMAL_PRECISION} and 0 <= s <= p")
    return _decimal_type(precision, scale)


@functools.cache
def _decimal_type(precision: int, scale: int) -> AbiType:
    limit = 10**precision - 1
    return AbiType(
        f"decimal({precision},{scale})", DECIMAL_CODE, 16, pa.decimal128(precision, scale), "", _DECIMAL_ACCEPTS,
        (-limit, limit), precision=precision, scale=scale,
    )


def list_type(element: AbiType) -> AbiType:
    return _nested_type(LIST_CODE, (("item", element),))


def struct_type(fields: tuple[tuple[str, AbiType], ...]) -> AbiType:
    if not fields or len(fields) > MAX_STRUCT_FIELDS:
        raise ValueError(f"a struct has 1 to {MAX_STRUCT_FIELDS} fields")
    seen: set[str] = set()
    for name, _ in fields:
        if not _NAME_RE.match(name) or len(name) > MAX_NAME_LEN:
            raise ValueError(f"field name {name!r} must match [A-Za-z_][A-Za-z0-9_]*")
        if name.lower() in seen:
            raise ValueError(f"two fields are named {name!r} (names are case-insensitive)")
        seen.add(name.lower())
    return _nested_type(STRUCT_CODE, tuple(fields))


@functools.cache
def _nested_type(code: int, children: tuple[tuple[str, AbiType], ...]) -> AbiType:
    if 1 + max(t.depth for _, t in children) > MAX_TYPE_DEPTH:
        raise ValueError(f"types nest at most {MAX_TYPE_DEPTH} deep")
    if code == LIST_CODE:
        (_, element), = children
        return AbiType(f"list<{element.name}>", code, 0, pa.list_(element.arrow), "", (list, tuple, str),
                       children=children)
    name = "struct<" + ", ".join(f"{n}: {t.name}" for n, t in children) + ">"
    arrow = pa.struct([pa.field(n, t.arrow) for n, t in children])
    return AbiType(name, code, 0, arrow, "", (dict, str), children=children)


_TOKEN = re.compile(r"\s*(?:([A-Za-z_][A-Za-z0-9_]*)|(\d+)|(.))")


def parse_type(text: str) -> AbiType:
    """A manifest type name as its AbiType: the flat names of TYPES, ``decimal(p,s)``,
    ``list<T>`` and ``struct<a: T, b: U>``.

    Raises:
        ValueError: what is wrong with the text.
    """
    if text in TYPES:
        return TYPES[text]
    tokens = [m.group(m.lastindex) for m in _TOKEN.finditer(text.strip())] if text.strip() else []
    pos = 0

    def take(expected: str | None = None) -> str:
        nonlocal pos
        if pos >= len(tokens):
            raise ValueError(f"{text!r} ends early" + (f"; expected {expected!r}" if expected else ""))
        tok = tokens[pos]
        if expected is not None and tok != expected:
            raise ValueError(f"{text!r}: expected {expected!r}, found {tok!r}")
        pos += 1
        return tok

    def number() -> int:
        tok = take()
        if not tok.isdigit():
            raise ValueError(f"{text!r}: expected a number, found {tok!r}")
        return int(tok)

    def one() -> AbiType:
        word = take()
        if word in TYPES:
            return TYPES[word]
        if word == "decimal":
            take("(")
            p = number()
            take(",")
            s = number()
            take(")")
            return decimal_type(p, s)
        if word == "list":
            take("<")
            element = one()
            take(">")
            return list_type(element)
        if word == "struct":
            take("<")
            fields = []
            while True:
                name = take()
                if not _NAME_RE.match(name):
                    raise ValueError(f"{text!r}: expected a field name, found {name!r}")
                take(":")
                fields.append((name, one()))
                if take() == ">":
                    break
                if tokens[pos - 1] != ",":
                    raise ValueError(f"{text!r}: expected ',' or '>' after a struct field")
            return struct_type(tuple(fields))
        raise ValueError(f"unknown type {word!r}")

    t = one()
    if pos != len(tokens):
        raise ValueError(f"{text!r}: unexpected {tokens[pos]!r} after the type")
    return t

@dataclass(frozen=True)
class TypeSyntax:
    """How an engine's SQL spells the ABI types (see :meth:`AbiType.spelled`)."""

    #: The flat types' names, by ABI name.
    flat: dict[str, str]
    #: ``str.format`` patterns: ``decimal`` takes ``p`` and ``s``; ``list`` the element and
    #: ``struct`` the joined fields, positionally; ``field`` takes ``name`` and ``type``.
    decimal: str
    list: str
    struct: str
    field: str


# The 32-byte column descriptor (ABI §3): eight little-endian u32 fields.
DESCRIPTOR = struct.Struct("<8I")
DESCRIPTOR_SIZE = DESCRIPTOR.size
DESCRIPTOR_ALIGN = 8


def align8(n: int) -> int:
    """``n`` rounded up to a multiple of 8: where each piece of a frame starts."""
    return (n + 7) & ~7

F_TYPE, F_LENGTH, F_NULL_COUNT, F_VALIDITY, F_OFFSETS, F_VALUES, F_VALUES_LEN, F_RESERVED = range(8)
#: The descriptor fields by index, as error messages name them.
FIELD_NAMES = ("type", "length", "null_count", "validity", "offsets", "values", "values_len", "reserved")

# Wasm signatures of the exports, as (params, results) in wasmtime's type names.
SIG_SCALAR = (("i32", "i32", "i32"), ("i32",))
SIG_ABI_VERSION = ((), ("i32",))
SIG_ALLOC = (("i32", "i32"), ("i32",))
SIG_RESET = ((), ())
SIG_ERROR = ((), ("i32",))
SIG_INITIALIZE = ((), ())
AGGREGATE_EXPORTS = {
    "init": ((), ("i32",)),
    "update": (("i32", "i32", "i32"), ("i32",)),
    "finalize": (("i32", "i32"), ("i32",)),
    "merge": (("i32", "i32"), ("i32",)),
    "inverse": (("i32", "i32", "i32"), ("i32",)),
    "value": (("i32", "i32"), ("i32",)),
    "serialize": (("i32", "i32"), ("i32",)),
    "deserialize": (("i32", "i32"), ("i32",)),
}
#: A table function's exports (ABI §6): open a call over one row of arguments, fill the
#: next batch of output rows (their count; 0 is the end, negative an error), close it.
TABLE_EXPORTS = {
    "open": (("i32", "i32"), ("i32",)),
    "next": (("i32", "i32", "i32"), ("i32",)),
    "close": (("i32",), ()),
}
#: Optional aggregate exports that let a state move between instances (ABI §5): all three
#: or none is what the hosts use; a module may export merge alone.
STATE_MOVING_PARTS = ("merge", "serialize", "deserialize")
HOST_IMPORT_SIGNATURES = {
    "log": (("i32", "i32", "i32"), ()),
    "config_get": (("i32", "i32", "i32", "i32"), ("i32",)),
    "secret_get": (("i32", "i32", "i32", "i32"), ("i32",)),
}


def format_signature(sig: tuple[tuple[str, ...], tuple[str, ...]]) -> str:
    params, results = sig
    return f"({', '.join(params)}) -> ({', '.join(results)})"


@dataclass(frozen=True)
class FunctionSpec:
    """One entry of the manifest's ``functions`` list."""

    name: str
    kind: str  # "scalar" | "aggregate" | "table"
    params: tuple[AbiType, ...]
    returns: AbiType | None  # None for a table function, which has `columns`
    export: str
    deterministic: bool = True
    nulls: str = "strict"  # "strict" | "called"
    window: bool = False
    doc: str = ""
    #: A table function's output columns, (name, type) in order.
    columns: tuple[tuple[str, AbiType], ...] = ()

    @property
    def strict(self) -> bool:
        return self.nulls == "strict"

    def signature(self) -> str:
        """``name(int64, int64) -> int64`` (a table function: ``-> table(value int64)``),
        for messages and listings."""
        args = ", ".join(t.name for t in self.params)
        if self.kind == "table":
            return f"{self.name}({args}) -> table({', '.join(f'{n} {t.name}' for n, t in self.columns)})"
        return f"{self.name}({args}) -> {self.returns.name}"


@dataclass(frozen=True)
class Manifest:
    abi: int
    functions: tuple[FunctionSpec, ...]
    capabilities: tuple[str, ...] = ()
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


_FUNCTION_FIELDS = {
    "name",
    "kind",
    "params",
    "returns",
    "export",
    "deterministic",
    "nulls",
    "window",
    "doc",
    "columns",
}
_TOP_FIELDS = {"abi", "functions", "capabilities"}


def parse_manifest(data: bytes) -> Manifest:
    """Parse and check the bytes of the ``wasmudf`` custom section (ABI §2, §8).

    Raises:
        ManifestError: naming the field, the function and what is wrong with it.
    """
    try:
        doc = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ManifestError(f"the wasmudf manifest is not valid UTF-8: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise ManifestError(f"the wasmudf manifest is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ManifestError("the wasmudf manifest must be a JSON object")
    _reject_unknown(doc, _TOP_FIELDS, "the manifest")
    abi = doc.get("abi")
    if type(abi) is not int:
        raise ManifestError("manifest field 'abi' is missing or not an integer")
    if abi != ABI_VERSION:
        raise ManifestError(
            f"manifest asks for ABI version {abi}; this host speaks version {ABI_VERSION} only"
        )
    caps = doc.get("capabilities", [])
    if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
        raise ManifestError("manifest field 'capabilities' must be a list of strings")
    for cap in caps:
        if cap not in CAPABILITIES:
            raise ManifestError(
                f"manifest asks for unknown capability {cap!r}; known: {', '.join(CAPABILITIES)}"
            )
    funcs = doc.get("functions")
    if not isinstance(funcs, list) or not funcs:
        raise ManifestError("manifest field 'functions' must be a non-empty list")
    specs = [_parse_function(i, f) for i, f in enumerate(funcs)]
    _check_unique(specs)
    return Manifest(abi=abi, functions=tuple(specs), capabilities=tuple(dict.fromkeys(caps)), raw=doc)


def _reject_unknown(obj: dict[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(obj) - allowed)
    if unknown:
        raise ManifestError(f"unknown field {unknown[0]!r} in {where}")


def _parse_function(index: int, f: Any) -> FunctionSpec:
    if not isinstance(f, dict):
        raise ManifestError(f"manifest functions[{index}] must be an object")
    name = f.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name) or len(name) > MAX_NAME_LEN:
        raise ManifestError(
            f"manifest functions[{index}]: 'name' {name!r} must match [A-Za-z_][A-Za-z0-9_]* "
            f"and be at most {MAX_NAME_LEN} characters"
        )
    where = f"function {name!r}"
    _reject_unknown(f, _FUNCTION_FIELDS, where)
    kind = f.get("kind")
    if kind not in ("scalar", "aggregate", "table"):
        raise ManifestError(f'{where}: \'kind\' must be "scalar", "aggregate" or "table", not {kind!r}')
    params = f.get("params")
    if not isinstance(params, list):
        raise ManifestError(f"{where}: 'params' must be a list of type names")
    if len(params) > MAX_PARAMS:
        raise ManifestError(f"{where}: {len(params)} params, at most {MAX_PARAMS} are allowed")
    ptypes = tuple(_type(where, f"params[{i}]", p) for i, p in enumerate(params))
    columns: tuple[tuple[str, AbiType], ...] = ()
    if kind == "table":
        if "returns" in f:
            raise ManifestError(f"{where}: a table function has 'columns', not 'returns'")
        columns = _columns(where, f.get("columns"))
        rtype = None
        for t in (*ptypes, *(t for _, t in columns)):
            if not t.is_plain:
                raise ManifestError(
                    f"{where}: table functions take and return the flat types and dates; {t.name} is not one of them yet"
                )
    else:
        if "columns" in f:
            raise ManifestError(f"{where}: 'columns' is only allowed on table functions")
        rtype = _type(where, "returns", f.get("returns"))
    export = f.get("export", name)
    if not isinstance(export, str) or not export:
        raise ManifestError(f"{where}: 'export' must be a non-empty string")
    deterministic = _bool(where, f, "deterministic", True)
    window = _bool(where, f, "window", False)
    nulls = f.get("nulls", "strict")
    if nulls not in ("strict", "called"):
        raise ManifestError(f'{where}: \'nulls\' must be "strict" or "called", not {nulls!r}')
    doc = f.get("doc", "")
    if not isinstance(doc, str):
        raise ManifestError(f"{where}: 'doc' must be a string")
    if window and kind != "aggregate":
        raise ManifestError(f"{where}: 'window' is only allowed on aggregates")
    return FunctionSpec(name, kind, ptypes, rtype, export, deterministic, nulls, window, doc, columns)


#: SQL names SQLite gives a table function's arguments (hidden columns): arg1, arg2, ...
def argument_column(i: int) -> str:
    return f"arg{i + 1}"


def _columns(where: str, value: Any) -> tuple[tuple[str, AbiType], ...]:
    if not isinstance(value, list) or not value:
        raise ManifestError(f"{where}: 'columns' must be a non-empty list of {{\"name\": ..., \"type\": ...}}")
    if len(value) > MAX_PARAMS:
        raise ManifestError(f"{where}: {len(value)} columns, at most {MAX_PARAMS} are allowed")
    columns = []
    seen: set[str] = set()
    for i, c in enumerate(value):
        if not isinstance(c, dict) or set(c) != {"name", "type"}:
            raise ManifestError(f"{where}: columns[{i}] must be an object with exactly 'name' and 'type'")
        name = c["name"]
        if not isinstance(name, str) or not _NAME_RE.match(name) or len(name) > MAX_NAME_LEN:
            raise ManifestError(f"{where}: columns[{i}] name {name!r} must match [A-Za-z_][A-Za-z0-9_]*")
        if re.fullmatch(r"arg[0-9]+", name.lower()):
            raise ManifestError(f"{where}: column name {name!r} is reserved for the arguments (arg1, arg2, ...)")
        if name.lower() in seen:
            raise ManifestError(f"{where}: two columns are named {name!r} (names are case-insensitive)")
        seen.add(name.lower())
        columns.append((name, _type(where, f"columns[{i}].type", c["type"])))
    return tuple(columns)


def _type(where: str, fieldname: str, value: Any) -> AbiType:
    if not isinstance(value, str):
        raise ManifestError(f"{where}: {fieldname} has unknown type {value!r}; known: {_KNOWN}")
    try:
        return parse_type(value)
    except ValueError as exc:
        raise ManifestError(f"{where}: {fieldname} {value!r} is not a type: {exc}; known: {_KNOWN}") from None


_KNOWN = ", ".join([*TYPES, "decimal(p,s)", "list<T>", "struct<name: T, ...>"])


def _bool(where: str, f: dict[str, Any], key: str, default: bool) -> bool:
    value = f.get(key, default)
    if type(value) is not bool:
        raise ManifestError(f"{where}: {key!r} must be true or false")
    return value


def _check_unique(specs: list[FunctionSpec]) -> None:
    names: dict[str, str] = {}
    exports: dict[str, str] = {}
    for s in specs:
        key = s.name.lower()
        if key in names:
            raise ManifestError(
                f"functions {names[key]!r} and {s.name!r} have the same SQL name (names are case-insensitive)"
            )
        names[key] = s.name
        if s.export in exports:
            raise ManifestError(
                f"functions {exports[s.export]!r} and {s.name!r} share the export {s.export!r}"
            )
        exports[s.export] = s.name


def required_exports(spec: FunctionSpec) -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """The exports (name → Wasm signature) that must exist for one function."""
    if spec.kind == "scalar":
        return {spec.export: SIG_SCALAR}
    if spec.kind == "table":
        return {f"{spec.export}__{p}": sig for p, sig in TABLE_EXPORTS.items()}
    parts = ["init", "update", "finalize"]
    if spec.window:
        parts += ["inverse", "value"]
    return {f"{spec.export}__{p}": AGGREGATE_EXPORTS[p] for p in parts}
