"""DuckDB: natively through DuckDB's C extension API where the extension can be loaded
(duckdb_native.py), else each scalar becomes an arrow-type Python UDF (``create_function``).

On the Python path: DuckDB's Python API has no aggregate UDFs. An aggregate ``f(x)`` becomes a scalar
``f_list(LIST)`` that aggregates each row's list as one group, and a temporary macro
``f(x) AS f_list(list(x))``: it works in GROUP BY and as a window function (``OVER``). DuckDB
refuses DISTINCT, FILTER and ORDER BY on a macro, so those go through the list form:
``f_list(list(DISTINCT x) FILTER (WHERE ...))``. An aggregate of several parameters takes one
list of structs: ``f_list(list({'a0': x, 'a1': w}) FILTER (WHERE ...))``.
"""

from __future__ import annotations

import functools
import inspect
import re
import time
import weakref
from contextlib import AbstractContextManager
from typing import Any

import pyarrow as pa

from .. import errors
from ..abi import AbiType, TypeSyntax
from ..aggregates import AggregateFunction
from ..columns import plain_array
from ..errors import ArgumentTypeError, GuestError, RegistrationError, UsageError, WasmUdfError
from ..functions import ScalarFunction
from ..tables import TableFunction
from . import NameTaken, duckdb_native, sql_transaction
from .duckdb_native import NativeDatabase

SQL_TYPES = {
    "bool": "BOOLEAN",
    "int32": "INTEGER",
    "int64": "BIGINT",
    "float32": "FLOAT",
    "float64": "DOUBLE",
    "utf8": "VARCHAR",
    "binary": "BLOB",
    "date": "DATE",
    "timestamp": "TIMESTAMP",
    "timestamptz": "TIMESTAMP_TZ",
}


SYNTAX = TypeSyntax(SQL_TYPES, decimal="DECIMAL({p},{s})", list="{}[]", struct="STRUCT({})", field='"{name}" {type}')


def sql_type(t: AbiType) -> str:
    """DuckDB's name for an ABI type: DECIMAL(p,s), T[] and STRUCT(...) for the parametric
    and nested ones."""
    return t.spelled(SYNTAX)


@functools.cache
def _duck_type(t: AbiType) -> Any:
    """The DuckDBPyType of an ABI type: create_function parses a type given as a string
    every time, which is half the cost of registering a function."""
    import duckdb
    from duckdb import sqltypes

    if t.name in SQL_TYPES:
        return getattr(sqltypes, SQL_TYPES[t.name])
    return duckdb.sqltype(sql_type(t))


class _Session:
    """What wasmudf keeps about one DuckDB connection."""

    __slots__ = ("names", "interrupted_at", "native", "tables", "__weakref__")

    def __init__(self) -> None:
        #: The names wasmudf registered. Asking DuckDB (duckdb_functions()) costs ~20 ms,
        #: most of a cold registration, so other names are found when DuckDB refuses them.
        self.names: set[str] = set()
        #: When wasmudf.interrupt(con) last ran: DuckDB's own interrupt() is not visible to
        #: a running UDF, so this is how a running guest call learns about it.
        self.interrupted_at = 0.0
        #: The native database this connection registers in, or why it cannot (None: not
        #: looked at yet).
        self.native: NativeDatabase | str | None = None
        #: The table functions registered on it (lower-cased name → function), for table().
        self.tables: dict[str, TableFunction] = {}


#: One session per connection, gone with the connection (the only state kept per connection).
_SESSIONS: weakref.WeakKeyDictionary[Any, _Session] = weakref.WeakKeyDictionary()


def _session(con: Any) -> _Session:
    found = _SESSIONS.get(con)
    if found is None:
        found = _SESSIONS[con] = _Session()
    return found


def _ours(con: Any) -> set[str]:
    return _session(con).names


def native_database(con: Any) -> NativeDatabase | str:
    """The native database ``con`` registers in (loading the extension into it by the signed
    route the first time), or the reason it takes the Python path."""
    session = _session(con)
    found = session.native
    if isinstance(found, NativeDatabase) and found.open:
        return found
    if isinstance(found, str):
        return found
    reason = duckdb_native.unavailable_reason()
    if reason is not None:
        session.native = reason
    elif isinstance(found, NativeDatabase):  # released since
        session.native = duckdb_native.RELEASED
    else:
        db = duckdb_native.find(con)
        session.native = duckdb_native.load_signed(con) if db is None else db
    if isinstance(session.native, NativeDatabase):
        duckdb_native.track(con, session.native, registered=False)
    return session.native


def connect_with_extension(database: str, read_only: bool = False, config: dict[str, Any] | None = None) -> Any:
    """wasmudf.duckdb.connect: a connection opened with allow_unsigned_extensions, the
    extension loaded and that setting switched off; a plain connection when that cannot be."""
    import duckdb

    settings = dict(config or {})
    if duckdb_native.unavailable_reason() is None and "allow_unsigned_extensions" not in settings:
        try:
            con = duckdb.connect(database, read_only=read_only, config={**settings, "allow_unsigned_extensions": "true"})
        except duckdb.ConnectionException:  # the file is open here already, configured otherwise
            pass
        else:
            _session(con).native = duckdb_native.load_unsigned(con)
            return con
    return duckdb.connect(database, read_only=read_only, config=settings)


def list_form(name: str) -> str:
    return f"{name}_list"


def _unregister(con: Any, name: str) -> None:
    """Remove a Python UDF or a temporary macro of that name, if there is one."""
    _ours(con).discard(name.lower())
    try:
        con.remove_function(name)
        return
    except Exception:  # noqa: BLE001 - not a Python UDF: maybe our macro, maybe nothing
        pass
    con.execute(f'DROP MACRO IF EXISTS temp.main."{name}"')


def _created(con: Any, name: str, create: Any) -> None:
    """Run a creation, turning DuckDB's "exists" errors into NameTaken."""
    import duckdb

    try:
        create()
    except duckdb.NotImplementedException as exc:  # "... is already created": a Python UDF
        if "already" not in str(exc):
            raise
        raise NameTaken(name, builtin=False) from exc
    except duckdb.CatalogException as exc:  # a built-in function, or a macro
        if "already exists" not in str(exc) and "is not an scalar function" not in str(exc):
            raise
        raise NameTaken(name, builtin=not _is_temp_macro(con, name)) from exc
    _ours(con).add(name.lower())


def _is_temp_macro(con: Any, name: str) -> bool:
    # Rare (a clash), so the slow catalog query is fine here.
    rows = con.execute(
        "SELECT count(*) FROM duckdb_functions() WHERE lower(function_name) = lower($1) "
        "AND function_type = 'macro' AND database_name = 'temp'",
        [name],
    ).fetchall()
    return bool(rows[0][0])


def _interrupt(con: Any) -> None:
    """Interrupt the connection's query, and stop its running guest calls within one tick."""
    _session(con).interrupted_at = time.monotonic()
    con.interrupt()


def _interrupt_check(con: Any) -> Any:
    """A factory of per-call checks: a call is interrupted by an interrupt() after it began.
    It holds the session, not the connection (a function must not keep its connection alive)."""
    session = _session(con)

    def for_call() -> Any:
        started = time.monotonic()
        return lambda: session.interrupted_at >= started

    return for_call


def _register_natively(con: Any, fn: Any, bind: Any) -> bool:
    """Register ``fn`` through DuckDB's C API when ``con``'s database has the extension;
    False when it takes the Python path."""
    db = native_database(con)
    if not isinstance(db, NativeDatabase) or not all(t.is_plain for t in (*fn.spec.params, fn.spec.returns)):
        return False  # decimals, lists and structs take DuckDB's Arrow bridge (docs/duckdb.md)
    aggregate = fn.kind == "aggregate"
    db.register(fn.spec, bind, fn.output_limit, aggregate=aggregate, movable=aggregate and fn.movable)
    duckdb_native.track(con, db)
    return True


def _register_scalar(con: Any, fn: ScalarFunction) -> None:
    """Create the DuckDB function (its names must be free)."""
    spec = fn.spec
    check_for_call = _interrupt_check(con)
    failures = _RecentFailures() if spec.deterministic else None

    def udf(*arrays: pa.ChunkedArray | pa.Array) -> pa.Array:
        # DuckDB hands over one vector (≤ 2048 rows), each column a one-chunk ChunkedArray;
        # plain arrays take the function's direct path.
        plain = [plain_array(a) for a in arrays]
        key = failures.known(plain) if failures is not None else None
        try:
            result = fn(*plain, interrupted=check_for_call())
        except (GuestError, ArgumentTypeError) as exc:
            if failures is not None:
                failures.remember(key, exc)
            raise
        return result.combine_chunks() if isinstance(result, pa.ChunkedArray) else result

    # DuckDB counts the callable's parameters, so give it one per SQL argument.
    udf.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(f"arg{i}", inspect.Parameter.POSITIONAL_ONLY) for i in range(len(spec.params))]
    )
    _created(
        con,
        spec.name,
        lambda: con.create_function(
            spec.name,
            udf,
            [_duck_type(t) for t in spec.params],
            _duck_type(spec.returns),
            type="arrow",
            # "special" even for strict functions: a strict function may still return NULL
            # (DuckDB rejects NULL results under "default"), and ScalarFunction skips NULL
            # rows of strict functions itself.
            null_handling="special",
            side_effects=not spec.deterministic,
        ),
    )


class _RecentFailures:
    """How a deterministic function failed on one row of constants, for a few seconds.

    DuckDB folds constant expressions while planning: ``SELECT f(1)`` calls ``f`` in the
    optimizer, which swallows the error and tries again, and then in execution, so a guest
    that runs into its time limit took it three times over. Failing again at once on the same
    constants keeps the limit what it says (an interruption is not remembered: it is not the
    input's doing)."""

    TTL_S = 10.0
    SIZE = 16

    def __init__(self) -> None:
        self._failed: dict[tuple, tuple[float, BaseException]] = {}

    def known(self, arrays: list[pa.Array]) -> tuple | None:
        """The key of one row of constants (raising its recent failure, if any), else None."""
        if not arrays or any(len(a) != 1 for a in arrays):
            return None
        try:
            key = tuple((a.type, a[0].as_py()) for a in arrays)
            found = self._failed.get(key)
        except TypeError:  # an unhashable value
            return None
        if found is not None:
            if time.monotonic() - found[0] < self.TTL_S:
                raise found[1]
            del self._failed[key]
        return key

    def remember(self, key: tuple | None, exc: BaseException) -> None:
        if key is None or isinstance(exc, errors.CallInterrupted):
            return
        if len(self._failed) >= self.SIZE:
            self._failed.pop(next(iter(self._failed)))
        self._failed[key] = (time.monotonic(), exc)


def _register_aggregate(con: Any, fn: AggregateFunction) -> None:
    import duckdb

    spec = fn.spec
    impl = list_form(spec.name)
    check_for_call = _interrupt_check(con)

    def udf(*lists: pa.ChunkedArray | pa.Array) -> pa.Array:
        # One row per group (or per window frame), each a list of the group's values.
        return fn.aggregate_lists(*fn.lists_per_parameter(lists), interrupted=check_for_call())

    udf.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("lists", inspect.Parameter.POSITIONAL_ONLY)]
    )
    if len(spec.params) == 1:
        list_types = [duckdb.list_type(_duck_type(spec.params[0]))]
        lists = "list(a0)"
    else:
        # One list() of structs: a window macro may hold only one aggregate, and one list
        # keeps each row's arguments together.
        fields = {f"a{i}": _duck_type(t) for i, t in enumerate(spec.params)}
        list_types = [duckdb.list_type(duckdb.struct_type(fields))]
        lists = "list({" + ", ".join(f"'a{i}': a{i}" for i in range(len(spec.params))) + "})"
    _created(
        con,
        impl,
        lambda: con.create_function(
            impl,
            udf,
            list_types,
            _duck_type(spec.returns),
            type="arrow",
            null_handling="special",  # a NULL list is an empty group: the guest decides its result
            side_effects=not spec.deterministic,
        ),
    )
    params = ", ".join(f"a{i}" for i in range(len(spec.params)))
    try:
        # TEMP: the macro must not outlive the connection whose Python function it calls.
        _created(con, spec.name, lambda: con.execute(f'CREATE TEMP MACRO "{spec.name}"({params}) AS "{impl}"({lists})'))
    except BaseException:
        _unregister(con, impl)
        raise


class DuckDBAdapter:
    engine = "duckdb"

    def connection_types(self) -> tuple[type, ...]:
        import duckdb

        return (duckdb.DuckDBPyConnection,)

    # -- registration ------------------------------------------------------------------

    def existing_functions(self, con: Any, names: list[str]) -> dict[str, bool]:
        """Which of ``names`` this connection already has from wasmudf (lower-cased → False,
        "not built in"); on the Python path other existing names surface as NameTaken from
        register_function, on the native path they were listed when the extension loaded."""
        ours = _ours(con)
        found = {n.lower(): False for n in names if n.lower() in ours}
        db = native_database(con)
        if isinstance(db, NativeDatabase):
            for n in names:
                key = n.lower()
                if key in db.functions:
                    found.setdefault(key, False)
                elif key in db.existing:
                    found[key] = db.existing[key]
        return found

    def left_out(self, fn: Any) -> str | None:
        return None

    def path_for(self, con: Any) -> tuple[str, str]:
        """("native", how it was loaded) or ("python", why not native)."""
        db = native_database(con)
        if isinstance(db, NativeDatabase):
            return "native", f"DuckDB's C extension API (the extension was loaded by the {db.route} route)"
        return "python", db

    def check_supported(self, fn: Any) -> None:
        if isinstance(fn, TableFunction):
            return
        if not isinstance(fn, (ScalarFunction, AggregateFunction)):
            raise RegistrationError(f"`{fn.name}`: DuckDB cannot register a {type(fn).__name__}")
        if not fn.spec.params:
            raise RegistrationError(
                f"`{fn.name}` takes no arguments; DuckDB's arrow UDFs cannot tell how many rows to produce for it"
            )

    def sql_names(self, fn: Any, con: Any = None) -> list[str]:
        """The SQL names a function (or its FunctionSpec) occupies: an aggregate also takes
        ``<name>_list`` (on both paths, so the same SQL runs on either)."""
        if fn.kind == "aggregate":
            return [fn.name, list_form(fn.name)]
        return [fn.name]  # a table function's name is taken on the Python path too: wasmudf.table

    def register_scalar(self, con: Any, fn: ScalarFunction) -> None:
        if not _register_natively(con, fn, fn.thread_core):
            _register_scalar(con, fn)

    def register_aggregate(self, con: Any, fn: AggregateFunction) -> None:
        if not _register_natively(con, fn, fn.thread_exports):
            _register_aggregate(con, fn)

    def register_table(self, con: Any, fn: TableFunction) -> None:
        db = native_database(con)
        if isinstance(db, NativeDatabase):
            db.register_table(fn)  # SELECT * FROM f(...), natively
            duckdb_native.track(con, db)
        _session(con).tables[fn.name.lower()] = fn

    def table(self, con: Any, name: str, args: tuple) -> Any:
        """A relation over one call of a registered table function, streamed through an Arrow
        record batch reader (read once)."""
        fn = _session(con).tables.get(name.lower())
        if fn is None:
            raise UsageError(f"no table function `{name}` was registered on this DuckDB connection")
        return con.from_arrow(fn(*args))

    def unregister(self, con: Any, name: str, numargs: int = -1) -> None:
        _session(con).tables.pop(name.lower(), None)
        db = _session(con).native
        if isinstance(db, NativeDatabase):
            db.unregister(name)
        _unregister(con, name)

    def interrupt(self, con: Any) -> None:
        duckdb_native.interrupt(con)
        _interrupt(con)

    # -- databases ---------------------------------------------------------------------

    def connect(self, database: str | None) -> Any:
        """A connection of wasmudf's own (the CLI's): the extension is loaded by the route that
        needs no extension repository (wasmudf.duckdb.connect)."""
        return connect_with_extension(database or ":memory:")

    def owns_file(self, header: bytes) -> bool:
        return header[8:12] == b"DUCK"

    def query(self, con: Any, sql: str, params: tuple = ()) -> tuple[list[str], list[tuple]]:
        result = con.execute(sql, list(params))
        columns = [d[0] for d in result.description or []]
        return columns, [tuple(r) for r in result.fetchall()]

    def transaction(self, con: Any) -> AbstractContextManager[None]:
        return sql_transaction(con, "BEGIN TRANSACTION")

    def has_table(self, con: Any, name: str) -> bool:
        return bool(self.query(con, "SELECT 1 FROM information_schema.tables WHERE table_name = ?", (name,))[1])

    def is_engine_error(self, exc: BaseException) -> bool:
        import duckdb

        return isinstance(exc, duckdb.Error)

    def wasmudf_error(self, exc: BaseException) -> WasmUdfError | None:
        """DuckDB wraps a UDF's exception in an InvalidInputException whose text carries the
        exception's class and message at a fixed place: rebuilt from those."""
        import duckdb

        if not isinstance(exc, duckdb.InvalidInputException):
            return None
        found = _UDF_ERROR.search(str(exc))
        cls = getattr(errors, found.group(1), None) if found else None
        if not (isinstance(cls, type) and issubclass(cls, WasmUdfError)):
            return None
        message = found.group(2)
        named = _NAMED.match(message)
        if issubclass(cls, errors.GuestError):
            rebuilt: WasmUdfError = cls(message, function=named and named.group(1), module=named and named.group(2))
        else:
            rebuilt = cls(message)
        rebuilt.__cause__ = exc
        return rebuilt


#: The Python path's text ("Python exception occurred …: <class>: <message>") and the native
#: path's ("Invalid Input Error: <class>: <message>").
_UDF_ERROR = re.compile(r"(?:Python exception occurred while executing the UDF: |^Invalid Input Error: )(\w+): (.*)", re.S)
_NAMED = re.compile(r"`(\w+)` in (.+?)(?: trapped| failed| returned| ran| was| overflowed|: |$)")


ADAPTER = DuckDBAdapter()
