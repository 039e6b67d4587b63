"""SQLite (apsw): each scalar becomes an apsw scalar function called once per row."""

from __future__ import annotations

from typing import Any

from ..errors import RegistrationError
from ..functions import ScalarFunction


def existing_functions(con: Any, names: list[str]) -> dict[str, bool]:
    """Which of ``names`` exist on the connection (lower-cased), mapped to "is built in"."""
    wanted = {n.lower() for n in names}
    rows = con.execute("SELECT lower(name), max(builtin) FROM pragma_function_list GROUP BY 1")
    return {name: bool(builtin) for name, builtin in rows if name in wanted}


def check_supported(fn: Any) -> None:
    if not isinstance(fn, ScalarFunction):
        raise RegistrationError(f"`{fn.name}`: SQLite registration supports scalar functions only")


def unregister(con: Any, name: str) -> None:
    # apsw removes a function when it is registered again with None as the callable.
    con.create_scalar_function(name, None)


def register_function(con: Any, fn: ScalarFunction) -> None:
    """Create the SQLite function; SQLite replaces one of the same name and arity."""
    spec = fn.spec
    con.create_scalar_function(
        spec.name, fn.row_function(), numargs=len(spec.params), deterministic=spec.deterministic
    )
