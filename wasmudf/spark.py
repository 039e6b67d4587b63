"""The same modules as Spark SQL functions (PySpark ≥ 4.1, classic sessions).

``wasmudf.spark.register(spark, "stats.wasm")`` loads the module on the driver first, so a
bad module, a wrong pin or a refused signature fails there and then, and registers every
function of it for Spark SQL:

* a scalar ``f`` as an Arrow UDF (``arrow_udf``): one guest call per Arrow batch
  (``spark.sql.execution.arrow.maxRecordsPerBatch`` rows, 10,000 by default);
* an aggregate ``f`` as a grouped-aggregate Arrow UDF, for ``GROUP BY``, a global aggregate
  and ``OVER (...)`` frames, and ``f_list`` as a scalar over list arguments, for what Spark
  refuses on Python aggregates (``DISTINCT``, ``FILTER``, a built-in aggregate in the same
  SELECT): ``f_list(collect_list(DISTINCT x))``, several arguments as
  ``f_list(collect_list(struct(x, w)))``;
* a table function ``f`` as a Python UDTF with Arrow transfer, so ``SELECT * FROM f(...)``
  and ``LATERAL f(t.x)`` both work (Spark refuses Arrow-native UDTFs in a lateral join).

A loaded Module cannot be pickled, so each UDF carries a :class:`Payload`: the module's
bytes, their sha256, and the load options that can travel. Each Python worker loads the
module once, checking the bytes against that sha256 (``load(..., sha256=...)``), and keeps
it for the worker's life (Spark reuses workers). Limits apply to each guest call, so to each
batch. A failure on an executor raises there with wasmudf's message, which Spark passes to
the driver (a ``PythonException`` naming the function and the cause).

Secrets never travel inside tasks: ``secrets=`` here is the import path of a factory,
``"package.module:name"``, that each worker imports and calls once for its secret store
(docs/spark.md). Aggregates cannot use ``__serialize``/``__deserialize`` through Spark SQL:
Spark hands a Python aggregate each whole group in one worker and offers no partial state;
:func:`aggregate` is the DataFrame form that does combine partial states.
"""

from __future__ import annotations

import hashlib
import importlib
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from .abi import AbiType, FunctionSpec, TypeSyntax
from .errors import RegistrationError, UsageError
from .limits import Limits
from .module import Module, Source, load

#: Where a worker notes each module it loads ("pid parent-pid sha256" lines), when set in the
#: executors' environment (``spark.executorEnv.WASMUDF_SPARK_LOAD_LOG``): which processes
#: loaded what, for operators and for the tests.
LOAD_LOG_ENV = "WASMUDF_SPARK_LOAD_LOG"

_SPARK_TYPES = {
    "bool": "boolean",
    "int32": "int",
    "int64": "bigint",
    "float32": "float",
    "float64": "double",
    "utf8": "string",
    "binary": "binary",
    "date": "date",
    "timestamp": "timestamp_ntz",
    "timestamptz": "timestamp",  # Spark's TIMESTAMP is an instant (shown in the session's zone)
}


_SPARK_SYNTAX = TypeSyntax(_SPARK_TYPES, decimal="decimal({p},{s})", list="array<{}>", struct="struct<{}>", field="`{name}`: {type}")


def spark_type(t: AbiType) -> str:
    """Spark's DDL name for an ABI type."""
    return t.spelled(_SPARK_SYNTAX)


@dataclass(frozen=True)
class Payload:
    """What a UDF carries to the executors: everything a worker needs to load the module
    the driver checked, and nothing secret."""

    wasm: bytes
    sha256: str
    label: str
    limits: Limits
    grant: tuple[str, ...] = ()
    config: Mapping[str, Any] | None = None
    tenant: str | None = None
    #: "package.module:name" of a factory each worker calls for its secret store, or None.
    secrets: str | None = None
    key: str = field(init=False)

    def __post_init__(self) -> None:
        # One cached module per bytes and options: two registrations of the same bytes with
        # other limits or grants get instances of their own.
        options = repr((self.limits, self.grant, sorted((self.config or {}).items()), self.tenant, self.secrets))
        object.__setattr__(self, "key", f"{self.sha256}:{hashlib.sha256(options.encode()).hexdigest()[:16]}")


def register(
    spark: Any,
    source: Source,
    *,
    prefix: str = "",
    replace: bool = False,
    secrets: str | None = None,
    **load_options: Any,
) -> list[str]:
    """Register every function of a module on a SparkSession; returns their SQL names
    (an aggregate ``f`` also registers ``f_list``).

    Args:
        spark: a classic ``pyspark.sql.SparkSession``.
        source: a path to a ``.wasm`` file, or its bytes (read on the driver only).
        prefix: put before every SQL name, for a module whose names clash with Spark's own
            functions (Spark would call its built-in ``luhn_check``, say, and never the UDF).
        replace: replace user functions of the same names (Spark's own are never replaced).
        secrets: for modules granted ``secret_get``: the import path of a zero-argument
            factory, ``"package.module:name"``, that each worker calls for its secret store.
        **load_options: as :func:`wasmudf.load` (``limits``, ``grant``, ``config``,
            ``tenant``, ``sha256``, ``policy``, ``name``); ``policy`` and ``sha256`` are
            checked on the driver, and the executors check the bytes' digest again.

    Raises:
        UsageError: ``secrets`` is a store or a mapping (it would travel inside tasks).
        RegistrationError: a name is one of Spark's functions, or a user function's while
            ``replace`` is false; nothing is registered then.
        ModuleError, ManifestError, ExportError, PolicyError, SignatureError: from the load
            on the driver; nothing is registered then.
    """
    module, payload = _load(source, secrets, load_options)
    made: list[tuple[str, str, Any]] = []  # (kind, SQL name, UDF), all made before any is registered
    for fn in module.functions.values():
        spec, name = fn.spec, prefix + fn.spec.name
        if spec.kind == "scalar":
            made.append(("udf", name, _scalar_udf(payload, spec)))
        elif spec.kind == "aggregate":
            made += [("udf", name, _aggregate_udf(payload, spec)), ("udf", f"{name}_list", _list_udf(payload, spec))]
        else:
            made.append(("udtf", name, _table_udtf(payload, spec)))
    _check_names(spark, [name for _, name, _ in made], replace)
    for kind, name, udf in made:
        (spark.udf if kind == "udf" else spark.udtf).register(name, udf)
    return [name for _, name, _ in made]


def _load(source: Source, secrets: str | None, load_options: dict[str, Any]) -> tuple[Module, Payload]:
    """Load and check the module on the driver, and the Payload its UDFs carry."""
    if secrets is not None and not isinstance(secrets, str):
        raise UsageError(
            "secrets cannot travel to Spark executors inside tasks: pass secrets='package.module:name', "
            "a factory each executor imports and calls for its secret store (docs/spark.md)"
        )
    module = load(source, secrets=_secret_store(secrets) if secrets is not None else None, **load_options)
    payload = Payload(
        wasm=module.wasm,
        sha256=module.sha256,
        label=module.label,
        limits=module.limits,
        grant=tuple(load_options.get("grant", ())),
        config=load_options.get("config"),
        tenant=load_options.get("tenant"),
        secrets=secrets,
    )
    return module, payload


def _check_names(spark: Any, names: list[str], replace: bool) -> None:
    """Spark resolves a name to its own function before a temporary one, silently: refuse."""
    system = {r[0].lower() for r in spark.sql("SHOW SYSTEM FUNCTIONS").collect()}
    user = {r[0].lower() for r in spark.sql("SHOW USER FUNCTIONS").collect()}
    builtin = [n for n in names if n.lower() in system]
    if builtin:
        raise RegistrationError(
            f"{', '.join(builtin)}: Spark has functions of these names, which it would call instead; "
            "register with prefix='...' to give the module's functions other names"
        )
    taken = [n for n in names if n.lower() in user]
    if taken and not replace:
        raise RegistrationError(f"{', '.join(taken)}: already registered in this session; pass replace=True to replace them")


# -- on the workers ---------------------------------------------------------------------

#: This worker's modules, by Payload.key.
_LOADED: dict[str, Module] = {}
_STORES: dict[str, Any] = {}


def _module(payload: Payload) -> Module:
    module = _LOADED.get(payload.key)
    if module is None:
        module = load(
            payload.wasm,
            sha256=payload.sha256,  # the bytes the driver checked, and no others
            limits=payload.limits,
            grant=payload.grant,
            config=payload.config,
            tenant=payload.tenant,
            secrets=_secret_store(payload.secrets) if payload.secrets else None,
            name=payload.label,
        )
        _LOADED[payload.key] = module
        log = os.environ.get(LOAD_LOG_ENV)
        if log:
            with open(log, "a", encoding="utf-8") as f:
                f.write(f"{os.getpid()} {os.getppid()} {payload.sha256}\n")
    return module


def _secret_store(path: str) -> Any:
    """The store of ``"package.module:name"``: the factory's result, once per process."""
    store = _STORES.get(path)
    if store is None:
        module_name, _, attr = path.partition(":")
        if not module_name or not attr:
            raise UsageError(f"secrets={path!r}: name a factory as 'package.module:name'")
        factory = getattr(importlib.import_module(module_name), attr)
        store = _STORES[path] = factory() if callable(factory) else factory
    return store


def _plain(result: Any) -> pa.Array:
    return result.combine_chunks() if isinstance(result, pa.ChunkedArray) else result


# PySpark tells an Arrow UDF's kind from its type hints: (pa.Array, ...) -> pa.Array is a
# scalar, (pa.Array, ...) -> pa.Scalar a grouped aggregate.


def _scalar_udf(payload: Payload, spec: FunctionSpec) -> Any:
    from pyspark.sql.functions import arrow_udf

    name = spec.name

    def call(*arrays: pa.Array) -> pa.Array:
        return _plain(_module(payload).functions[name](*arrays))

    return _marked(arrow_udf(call, spark_type(spec.returns)), spec)


def _aggregate_udf(payload: Payload, spec: FunctionSpec) -> Any:
    from pyspark.sql.functions import arrow_udf

    name, rtype = spec.name, spec.returns.arrow

    def call(*arrays: pa.Array) -> pa.Scalar:
        return pa.scalar(_module(payload).functions[name].aggregate(*arrays), type=rtype)

    return _marked(arrow_udf(call, spark_type(spec.returns)), spec)


def _list_udf(payload: Payload, spec: FunctionSpec) -> Any:
    from pyspark.sql.functions import arrow_udf

    name = spec.name

    def call(*lists: pa.Array) -> pa.Array:
        fn = _module(payload).functions[name]
        return fn.aggregate_lists(*fn.lists_per_parameter(lists))

    return _marked(arrow_udf(call, spark_type(spec.returns)), spec)


def _table_udtf(payload: Payload, spec: FunctionSpec) -> Any:
    from pyspark.sql.functions import udtf

    name = spec.name

    def eval_rows(self: Any, *args: Any) -> Iterator[tuple]:
        for batch in _module(payload).functions[name](*args):
            yield from zip(*(column.to_pylist() for column in batch.columns))

    cls = type(f"wasmudf_{name}", (), {"eval": eval_rows})
    schema = ", ".join(f"`{n}` {spark_type(t)}" for n, t in spec.columns)
    made = udtf(cls, returnType=schema, useArrow=True)
    return made if spec.deterministic else made.asNondeterministic()


def _marked(udf: Any, spec: FunctionSpec) -> Any:
    return udf if spec.deterministic else udf.asNondeterministic()


# -- partial aggregation ------------------------------------------------------------------


def aggregate(
    df: Any,
    source: Source,
    function: str,
    by: Sequence[str],
    columns: Sequence[str],
    *,
    secrets: str | None = None,
    **load_options: Any,
) -> Any:
    """``SELECT by..., function(columns...) FROM df GROUP BY by...`` in two phases, for an
    aggregate whose states move (``__serialize``/``__deserialize``, ABI §5): each partition
    folds its rows into one state per group and sends the state's bytes, and the shuffle
    carries those states rather than the rows; a grouped-aggregate UDF then restores and
    merges them. Returns a DataFrame of the ``by`` columns and ``function``.

    ``secrets`` and ``load_options`` are as for :func:`register`.

    Raises:
        UsageError: the function is not an aggregate whose states move.
    """
    module, payload = _load(source, secrets, load_options)
    fn = module.functions.get(function)
    if fn is None or fn.kind != "aggregate" or not fn.movable:
        raise UsageError(f"`{function}` is not an aggregate whose states move (__merge, __serialize, __deserialize)")
    from pyspark.sql.functions import arrow_udf
    from pyspark.sql.pandas.types import to_arrow_type
    from pyspark.sql.types import BinaryType, StructField, StructType

    keys, args = list(by), list(columns)
    schema = StructType([*(df.schema[k] for k in keys), StructField("__state", BinaryType(), False)])
    key_types = [to_arrow_type(df.schema[k].dataType) for k in keys]

    def partial(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        f = _module(payload).functions[function]
        states: dict[tuple, Any] = {}
        for batch in batches:
            table = pa.Table.from_batches([batch])
            key_rows = list(zip(*(table.column(k).to_pylist() for k in keys))) if keys else [()] * table.num_rows
            groups: dict[tuple, list[int]] = {}
            for i, key in enumerate(key_rows):
                groups.setdefault(key, []).append(i)
            for key, rows in groups.items():
                state = states.get(key)
                if state is None:
                    state = states[key] = f.start()
                picked = table.take(pa.array(rows))
                state.update(*(picked.column(c) for c in args))
        out = [(key, state.serialize()) for key, state in states.items()]
        key_columns = [pa.array([k[i] for k, _ in out], type=t) for i, t in enumerate(key_types)]
        blobs = pa.array([b for _, b in out], pa.binary())
        yield pa.RecordBatch.from_arrays([*key_columns, blobs], names=[*keys, "__state"])

    def merge(blobs: pa.Array) -> pa.Scalar:
        f = _module(payload).functions[function]
        whole = None
        for blob in blobs.to_pylist():
            state = f.restore(blob)
            if whole is None:
                whole = state
            else:
                whole.merge(state)
        return pa.scalar(whole.finish() if whole is not None else None, type=f.spec.returns.arrow)

    merged = arrow_udf(merge, spark_type(fn.spec.returns))
    states = df.select(*keys, *args).mapInArrow(partial, schema)
    return states.groupBy(*keys).agg(merged(states["__state"]).alias(function))
