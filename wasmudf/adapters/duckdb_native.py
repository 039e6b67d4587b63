"""DuckDB's native path: functions registered through DuckDB's C extension API.

The extension (``wasmudf.duckdb_extension``, built with the accelerator; see
adapters/_duckdb.c) is loaded into a connection's database once. Its scalars run on DuckDB's
worker threads without the GIL, and its aggregates are real DuckDB aggregates (DISTINCT,
FILTER, ORDER BY, windows). It is loaded by one of two routes:

* **signed** (DuckDB ≥ 2.0, any connection whose ``allow_extension_repositories`` is
  ``hosts`` or ``allowed``): a private extension repository in a temporary folder, trusted by
  the public key made when wasmudf was built, is created, installed from, loaded and dropped.
  ``allow_unsigned_extensions`` is never touched. DuckDB only lets that setting tighten while a
  database runs, so ``hosts`` (the default) becomes ``hosts_only``: the same trust, but the
  database can no longer be opened to repositories added by prefix.
* **unsigned**, on a connection :func:`wasmudf.duckdb.connect` opens: it connects with
  ``allow_unsigned_extensions``, loads the file and switches the setting off at once (DuckDB
  cannot switch it back on).

wasmudf keeps one connection of its own to each such database (the :class:`Registrar`) to
register functions later. It is closed as soon as any connection that registered through it
closes or is collected, and at exit: a connection keeps its database open, and a database
that stays open after its user closed it makes reopening the file fail. Functions registered
stay; a later registration on that database takes the Python path.
"""

from __future__ import annotations

import atexit
import functools
import os
import platform
import shutil
import tempfile
import threading
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import _native
from ..abi import FunctionSpec
from ..errors import RegistrationError

PACKAGE_DIR = Path(__file__).resolve().parent.parent
EXTENSION = PACKAGE_DIR / "wasmudf.duckdb_extension"
PUBLIC_KEY = PACKAGE_DIR / "duckdb_extension_key.pem"
TOKEN_FUNCTION = "wasmudf_native_database"
#: DuckFunction kinds (adapters/_duckdb.c).
KIND_SCALAR, KIND_AGGREGATE, KIND_LIST_FORM, KIND_TABLE = 0, 1, 2, 3
#: The most bytes of rows one group of a native aggregate may collect.
GROUP_LIMIT_BYTES = 1 << 30

_LOCK = threading.RLock()  # loads and releases: one at a time (the attach hand-over is global)
_DATABASES: dict[int, NativeDatabase] = {}
_next_token = iter(range(1, 1 << 62))


@dataclass(eq=False)
class NativeDatabase:
    """One database that loaded the extension, and what wasmudf registered in it natively."""

    registrar: Any
    token: int
    route: str
    #: Function names that existed when the extension was loaded → "is built in".
    existing: dict[str, bool] = field(repr=False)
    #: Native functions by lower-cased name.
    functions: dict[str, Any] = field(default_factory=dict, repr=False)
    #: Every table function registered here, unregistered ones too (DuckDB keeps their
    #: entries): lower-cased name → (native function, its parameter and column types).
    tables: dict[str, tuple[Any, Any]] = field(default_factory=dict, repr=False)
    #: Bumped by wasmudf.interrupt(con): a running call stops within one tick.
    interrupts: np.ndarray = field(default_factory=lambda: np.zeros(1, dtype=np.uint64))

    @property
    def open(self) -> bool:
        return not self.registrar.closed

    def release(self) -> None:
        """Close wasmudf's connection to the database (its functions stay registered)."""
        with _LOCK:
            _DATABASES.pop(self.token, None)
            self.registrar.close()

    def register(
        self, spec: FunctionSpec, bind: Any, output_limit: int, aggregate: bool, movable: bool = False
    ) -> None:
        """Register (or replace) one function; ``bind()`` gives the calling thread's core and
        export addresses, ``output_limit`` is -1 for none. An aggregate ``f`` also gets the
        Python path's ``f_list(list)``, so SQL written for either path runs on both;
        ``movable``: its states move between instances (ABI §5), so groups fold as they go."""
        kind = KIND_AGGREGATE if aggregate else KIND_SCALAR
        self._register(spec, bind, output_limit, kind, spec.name, movable)
        if aggregate:
            self._register(spec, bind, output_limit, KIND_LIST_FORM, f"{spec.name}_list", False)

    def _register(
        self, spec: FunctionSpec, bind: Any, output_limit: int, kind: int, sql_name: str, movable: bool
    ) -> None:
        native = _native.speedups.DuckFunction(
            spec.name,
            kind,
            [t.code for t in spec.params],
            spec.returns.code,
            spec.strict,
            output_limit,
            bind,
            self.interrupts,
            GROUP_LIMIT_BYTES,
            self.token,
            movable,
        )
        self.registrar.register(native, spec.deterministic, sql_name)
        previous = self.functions.get(sql_name.lower())
        if previous is not None:
            previous.disable()
        self.functions[sql_name.lower()] = native

    def register_table(self, fn: Any) -> None:
        """Register (or replace) a table function: each scan runs in an instance of its own.

        DuckDB's C API can neither drop nor swap a table function, so a replacement takes over
        the entry of the one it replaces, which needs the same parameter and column types."""
        spec, limits = fn.spec, fn.limits
        output_limit = -1 if limits.output_bytes is None else limits.output_bytes
        table_rows = -1 if limits.table_rows is None else limits.table_rows
        shape = ([t.code for t in spec.params], [(n.lower(), t.code) for n, t in spec.columns])
        key = spec.name.lower()
        entry = self.tables.get(key)
        if entry is not None:
            previous, previous_shape = entry
            if previous_shape != shape:
                raise RegistrationError(
                    f"`{spec.name}` cannot replace the table function of that name in this DuckDB database: its "
                    "parameters or columns differ, and DuckDB's C API can neither drop nor swap a table function; "
                    "give it another name, or use a new database"
                )
            previous.retarget(fn.dedicated_exports, output_limit, table_rows)
            self.functions[key] = previous
            return
        native = _native.speedups.DuckFunction(
            spec.name,
            KIND_TABLE,
            [t.code for t in spec.params],
            spec.columns[0][1].code,
            spec.strict,
            output_limit,
            fn.dedicated_exports,
            self.interrupts,
            GROUP_LIMIT_BYTES,
            self.token,
            False,
            [(name, t.code) for name, t in spec.columns],
            table_rows,
        )
        self.registrar.register(native, spec.deterministic, spec.name)
        previous = self.functions.get(key)  # a scalar or aggregate of that name
        if previous is not None:
            previous.disable()
        self.functions[key] = native
        self.tables[key] = (native, shape)

    def unregister(self, name: str) -> bool:
        """Disable a native function (DuckDB cannot drop a C API function): later calls fail."""
        native = self.functions.pop(name.lower(), None)
        if native is None:
            return False
        native.disable()
        return True


#: Set to "0" to keep DuckDB on the Python path (the native path is the default).
NATIVE_SWITCH = "WASMUDF_DUCKDB_NATIVE"


def unavailable_reason() -> str | None:
    """Why the native path cannot be used in this process at all, or None."""
    if os.environ.get(NATIVE_SWITCH, "1") == "0":
        return f"{NATIVE_SWITCH}=0 is set"
    speedups = _native.speedups
    if speedups is None:
        return "the C accelerator is not in use (not built, or WASMUDF_PURE_PYTHON is set)"
    if not hasattr(speedups, "DuckFunction"):
        return "wasmudf was built without DuckDB's C API headers"
    if not EXTENSION.exists() or not PUBLIC_KEY.exists():
        return f"the DuckDB extension was not built ({EXTENSION.name} is missing)"
    if platform.system() != "Linux":
        return f"no DuckDB extension is built for {platform.system()}"
    return None


def _settings(con: Any, *names: str) -> list[Any]:
    return list(con.execute("SELECT " + ", ".join(f"current_setting('{n}')" for n in names)).fetchall()[0])


def _attach(con: Any, route: str) -> NativeDatabase:
    """Take the Registrar the LOAD just made and describe its database."""
    speedups = _native.speedups
    attached = speedups.duckdb_take_attached()
    if len(attached) != 1:
        for registrar in attached:
            registrar.close()
        raise RuntimeError(f"the extension loaded {len(attached)} times")
    registrar = attached[0]
    try:
        builtin = _builtin_names()
        rows = con.execute("SELECT DISTINCT lower(function_name) FROM duckdb_functions()").fetchall()
        token = next(_next_token)
        db = NativeDatabase(registrar, token, route, {name: name in builtin for (name,) in rows})
        registrar.register_token(TOKEN_FUNCTION, token)
    except BaseException:
        registrar.close()
        raise
    _DATABASES[token] = db
    return db


@functools.cache
def _builtin_names() -> frozenset[str]:
    """DuckDB's own function names, from a database of nobody's: in a user's database an
    application's Python UDF is listed as internal too."""
    import duckdb

    with duckdb.connect() as pristine:
        rows = pristine.execute("SELECT DISTINCT lower(function_name) FROM duckdb_functions()").fetchall()
    return frozenset(name for (name,) in rows)


def load_signed(con: Any) -> NativeDatabase | str:
    """Load the extension into ``con``'s database by the signed route; a reason when it cannot."""
    import duckdb

    if tuple(int(p) for p in duckdb.__version__.split(".")[:2]) < (2, 0):
        return f"DuckDB {duckdb.__version__} has no extension repositories (the signed route needs 2.0)"
    access, directory = _settings(con, "allow_extension_repositories", "extension_directory")
    if access not in ("hosts", "allowed"):
        return f"this database's allow_extension_repositories is {access!r}: it refuses wasmudf's signed extension"
    platform_name = con.execute("PRAGMA platform").fetchall()[0][0]
    work = Path(tempfile.mkdtemp(prefix="wasmudf-duckdb-"))
    repo = f"wasmudf_{os.getpid()}_{next(_next_token)}"
    try:
        target = work / "repo" / f"v{duckdb.__version__}" / platform_name
        target.mkdir(parents=True)
        shutil.copy2(EXTENSION, target / EXTENSION.name)
        key = PUBLIC_KEY.read_text().replace("'", "")
        with _LOCK:
            _run(con, "SET allow_extension_repositories = 'allowed'")
            try:
                _run(con, f"SET extension_directory = '{_sql_text(str(work / 'extensions'))}'")
                _run(
                    con,
                    f"CREATE EXTENSION REPOSITORY {repo} WITH PREFIX '{_sql_text(str(work / 'repo'))}' "
                    f"USING PUBLIC KEY '{key}'",
                )
                try:
                    _run(con, f"INSTALL wasmudf FROM {repo}")
                    _run(con, f"LOAD wasmudf FROM {repo}")
                finally:
                    _run(con, f"DROP EXTENSION REPOSITORY {repo}")
            finally:
                if directory:
                    _run(con, f"SET extension_directory = '{_sql_text(directory)}'")
                else:
                    _run(con, "RESET extension_directory")
                if access == "hosts":
                    # The nearest DuckDB allows: it only tightens while the database runs.
                    _run(con, "SET allow_extension_repositories = 'hosts_only'")
            return _attach(con, "signed")
    except duckdb.Error as exc:
        return f"DuckDB refused to load wasmudf's signed extension: {exc}"
    finally:
        shutil.rmtree(work, ignore_errors=True)


def load_unsigned(con: Any) -> NativeDatabase:
    """Load the extension into a connection opened with allow_unsigned_extensions (see
    wasmudf.duckdb.connect), then switch that setting off."""
    with _LOCK:
        try:
            _run(con, f"LOAD '{_sql_text(str(EXTENSION))}'")
        finally:
            _run(con, "SET allow_unsigned_extensions = false")
        return _attach(con, "unsigned")


def _run(con: Any, sql: str) -> None:
    """Run a statement to its end (DuckDB refuses other work on a connection with a result
    still pending)."""
    con.execute(sql).fetchall()


def _sql_text(text: str) -> str:
    return text.replace("'", "''")


RELEASED = (
    "wasmudf's own connection to this database was released when a connection that registered in it "
    "closed; a new database registers natively again"
)


def find(con: Any) -> NativeDatabase | str | None:
    """The native database ``con`` belongs to; None when the extension is not loaded in it;
    why not when it is loaded but wasmudf's connection to it was released."""
    import duckdb

    # Asking the extension list first: calling a function that does not exist costs ~5 ms
    # (DuckDB looks for names to suggest), most of a registration on the Python path.
    loaded = con.execute("SELECT loaded FROM duckdb_extensions() WHERE extension_name = 'wasmudf'").fetchall()
    if not (loaded and loaded[0][0]):
        return None
    try:
        token = con.execute(f"SELECT {TOKEN_FUNCTION}()").fetchall()[0][0]
    except duckdb.CatalogException:  # loaded by something other than wasmudf
        return None
    db = _DATABASES.get(token)
    return db if db is not None and db.open else RELEASED


# -- lifecycle: release before the database closes; interrupts -------------------------------


@dataclass(eq=False)
class _Known:
    """A connection wasmudf saw in a native database."""

    token: int
    connection_id: int
    #: It registered functions: closing it releases the database's Registrar.
    registered: bool
    closed: bool = False


_KNOWN: weakref.WeakKeyDictionary[Any, _Known] = weakref.WeakKeyDictionary()
#: Each native database's interrupt counter (aggregates watch it), as long as a function does.
_COUNTERS: weakref.WeakValueDictionary[int, np.ndarray] = weakref.WeakValueDictionary()
_hooked = False


def track(con: Any, db: NativeDatabase, registered: bool = True) -> None:
    """Know ``con`` as a connection of ``db``: its interrupts reach native calls, and, once it
    registered, its closing (or collection) releases ``db``'s Registrar."""
    _hook_connections()
    known = _KNOWN.get(con)
    if known is None or known.token != db.token:
        connection_id = con.execute("SELECT current_connection_id()").fetchall()[0][0]
        known = _KNOWN[con] = _Known(db.token, int(connection_id), registered)
        _COUNTERS[db.token] = db.interrupts
        weakref.finalize(con, _closed, known)
    known.registered |= registered


def interrupt(con: Any) -> None:
    """Stop the native calls running for ``con`` within one tick (its scalars' calls, and the
    aggregates' calls of its whole database: DuckDB tells an aggregate nothing of its
    connection)."""
    known = _KNOWN.get(con)
    if known is None or known.closed:
        return
    speedups = _native.speedups
    speedups.duckdb_interrupt(known.token, known.connection_id)
    counter = _COUNTERS.get(known.token)
    if counter is not None:
        counter += 1


def _closed(known: _Known) -> None:
    if known.closed:
        return
    known.closed = True
    speedups = _native.speedups
    if speedups is not None:
        speedups.duckdb_forget_connection(known.token, known.connection_id)
    if known.registered:
        db = _DATABASES.get(known.token)
        if db is not None:
            db.release()


def _hook_connections() -> None:
    """Make DuckDB's close(), ``with``, interrupt() and cursor() tell wasmudf (the only way to
    learn of them: DuckDB has no callbacks for these)."""
    global _hooked
    if _hooked:
        return
    import duckdb

    cls = duckdb.DuckDBPyConnection
    close, exit_, interrupt_, cursor = cls.close, cls.__exit__, cls.interrupt, cls.cursor

    def close_releasing(self: Any) -> None:
        known = _KNOWN.get(self)
        if known is not None:
            _closed(known)
        close(self)

    def exit_releasing(self: Any, *exc: Any) -> Any:
        known = _KNOWN.get(self)
        if known is not None:
            _closed(known)
        return exit_(self, *exc)

    def interrupt_guests(self: Any) -> None:
        interrupt(self)
        interrupt_(self)

    def cursor_known(self: Any) -> Any:
        child = cursor(self)
        known = _KNOWN.get(self)
        db = _DATABASES.get(known.token) if known is not None else None
        if db is not None:
            track(child, db, registered=False)
        return child

    for wrapper, original in ((close_releasing, close), (interrupt_guests, interrupt_), (cursor_known, cursor)):
        wrapper.__doc__ = original.__doc__
    cls.close, cls.__exit__, cls.interrupt, cls.cursor = close_releasing, exit_releasing, interrupt_guests, cursor_known
    _hooked = True


@atexit.register
def _release_all() -> None:
    for db in list(_DATABASES.values()):
        db.release()
