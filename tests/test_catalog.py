"""The catalog inside the database: install, close, reopen, attach; versions; corruption;
the CLI around it. Real files on disk, both engines."""

from __future__ import annotations

import json

import pytest
import wat
from conftest import EXAMPLES
from engines import duckdb_python_path, missing_function_error, query

import wasmudf
from wasmudf import Policy, RegistrationError, cli, trust


def open_db(engine: str, path):
    if engine == "duckdb":
        import duckdb

        return duckdb.connect(str(path))
    if engine == "duckdb_python":
        return duckdb_python_path(str(path))
    import apsw

    return apsw.Connection(str(path))


@pytest.fixture
def db_path(engine, tmp_path):
    return tmp_path / ("app.duckdb" if engine.startswith("duckdb") else "app.db")


def versioned(version: int, extra: bool) -> bytes:
    """A module whose `ver(x)` answers `version`; `old_only` exists only when ``extra``."""
    body = f"""
      (func (export "ver") (param i32 i32) (param $out i32) (result i32)
        (i64.store (i32.load offset=20 (local.get $out)) (i64.const {version})) (i32.const 0))
      (func (export "old_only") (param i32 i32) (param $out i32) (result i32)
        (i64.store (i32.load offset=20 (local.get $out)) (i64.const -1)) (i32.const 0))
    """
    functions = [wat.scalar("ver", ["int64"], "int64")]
    if extra:
        functions.append(wat.scalar("old_only", ["int64"], "int64"))
    return wat.module(body, functions)


def test_round_trip_through_a_restart(engine, db_path):
    store = wasmudf.DictSecretStore({"acme": {"k": "s3cr3t-value"}})
    con = open_db(engine, db_path)
    record = wasmudf.install(con, EXAMPLES["numeric"], tenant="acme", limits=wasmudf.Limits(timeout_ms=250))
    assert record.name == "numeric" and record.key_id is None
    wasmudf.install(con, EXAMPLES["stats"], config={"region": "eu"})
    assert query(con, "SELECT add_i64(40, 2)") == [(42,)]
    con.close()

    con = open_db(engine, db_path)
    with pytest.raises(missing_function_error(con), match="add_i64"):  # nothing is registered before attach
        query(con, "SELECT add_i64(40, 2)")
    report = wasmudf.attach(con, secrets=store)
    assert report.refused == {}
    assert set(report.registered) == {"numeric", "stats"}
    assert query(con, "SELECT add_i64(40, 2), most_frequent(3)") == [(42, 3)]
    listed = {m.name: m for m in wasmudf.installed(con)}
    assert listed["numeric"].tenant == "acme"
    assert "add_i64(int64, int64) -> int64" in listed["numeric"].functions
    # Secrets are never stored; the limits are.
    rows = query(con, "SELECT * FROM wasmudf_modules")
    assert not any(b"s3cr3t" in (bytes(v) if isinstance(v, (bytes, bytearray, memoryview)) else str(v).encode()) for r in rows for v in r)
    assert json.loads(query(con, "SELECT limits FROM wasmudf_modules WHERE name = 'numeric'")[0][0])["timeout_ms"] == 250
    con.close()


def test_a_new_version_replaces_the_old_everywhere_on_the_connection(engine, db_path):
    first = open_db(engine, db_path)
    wasmudf.install(first, versioned(1, extra=True), name="app")
    second = open_db(engine, db_path)
    wasmudf.attach(second)
    assert query(second, "SELECT ver(0), old_only(0)") == [(1, -1)]

    wasmudf.install(first, versioned(2, extra=False), name="app")
    assert query(first, "SELECT ver(0)") == [(2,)]
    with pytest.raises(missing_function_error(first), match="old_only"):  # gone with the version that had it
        query(first, "SELECT old_only(0)")
    # Another SQLite connection runs the old version until it attaches again; DuckDB's
    # connections to one database file share their functions, so there it is the new one.
    assert query(second, "SELECT ver(0)") == [(2,) if engine.startswith("duckdb") else (1,)]
    wasmudf.attach(second)
    assert query(second, "SELECT ver(0)") == [(2,)]
    assert [m.name for m in wasmudf.installed(second)] == ["app"]
    first.close()
    second.close()


def test_a_corrupted_row_is_refused_and_the_others_still_attach(engine, db_path):
    con = open_db(engine, db_path)
    wasmudf.install(con, EXAMPLES["numeric"])
    wasmudf.install(con, EXAMPLES["stats"])
    wasmudf.install(con, EXAMPLES["binary"])
    query(con, "UPDATE wasmudf_modules SET wasm = ? WHERE name = 'numeric'", (b"\x00asm\x01\x00\x00\x00",))
    query(con, "UPDATE wasmudf_modules SET grants = 'not json' WHERE name = 'binary'")
    con.close()

    con = open_db(engine, db_path)
    report = wasmudf.attach(con)
    assert set(report.refused) == {"numeric", "binary"}
    assert "do not match the stored sha256" in report.refused["numeric"]
    assert "JSON" in report.refused["binary"] or "Expecting value" in report.refused["binary"]
    assert list(report.registered) == ["stats"]
    assert query(con, "SELECT most_frequent(7)") == [(7,)]
    con.close()


def test_attach_applies_the_signature_policy(engine, db_path, tmp_path):
    key, pub, kid = trust.generate_key(tmp_path / "release")
    signed = trust.sign(EXAMPLES["numeric"].read_bytes(), trust.load_private_key(key))
    con = open_db(engine, db_path)
    assert wasmudf.install(con, signed, name="numeric").key_id == kid
    wasmudf.install(con, EXAMPLES["stats"])
    con.close()
    con = open_db(engine, db_path)
    report = wasmudf.attach(con, policy=Policy(require_signature=True, trusted_keys=[pub]))
    assert list(report.registered) == ["numeric"]
    assert "not signed" in report.refused["stats"]
    con.close()


def test_install_refuses_ungranted_capabilities_and_name_clashes(engine, db_path):
    con = open_db(engine, db_path)
    logging_module = wat.module(
        wat.ADD_I64,
        [wat.scalar("add_i64", ["int64", "int64"], "int64")],
        imports='(import "wasmudf" "log" (func (param i32 i32 i32)))',
        capabilities=["log"],
    )
    with pytest.raises(wasmudf.PolicyError, match="log"):
        wasmudf.install(con, logging_module, name="chatty")
    wasmudf.install(con, EXAMPLES["numeric"])
    with pytest.raises(RegistrationError, match="belongs to the installed module 'numeric'"):
        wasmudf.install(con, logging_module, name="chatty", grant=["log"])
    assert [m.name for m in wasmudf.installed(con)] == ["numeric"]
    con.close()


def test_uninstall(engine, db_path):
    con = open_db(engine, db_path)
    wasmudf.install(con, EXAMPLES["stats"])
    assert "geo_mean" in wasmudf.uninstall(con, "stats")
    assert wasmudf.installed(con) == []
    with pytest.raises(missing_function_error(con), match="geo_mean"):
        query(con, "SELECT geo_mean(1.0)")
    with pytest.raises(wasmudf.UsageError, match="no module named 'stats'"):
        wasmudf.uninstall(con, "stats")
    con.close()


def test_cli_keygen_sign_install_attach_list_uninstall(tmp_path, capsys):
    key = tmp_path / "release"
    db = str(tmp_path / "cli.db")
    assert cli.main(["keygen", "--out", str(key)]) == 0
    signed = tmp_path / "numeric.wasm"
    assert cli.main(["sign", str(EXAMPLES["numeric"]), "--key", str(key), "-o", str(signed)]) == 0
    assert cli.main(["verify", str(signed), "--trusted-key", f"{key}.pub"]) == 0
    assert cli.main(["verify", str(EXAMPLES["numeric"]), "--trusted-key", f"{key}.pub"]) == 1
    assert "is not signed" in capsys.readouterr().err

    trusted = ["--require-signature", "--trusted-key", f"{key}.pub"]
    assert cli.main(["install", str(EXAMPLES["stats"]), "--db", db, "--engine", "sqlite", *trusted]) == 1
    assert "SignatureError" in capsys.readouterr().err
    assert cli.main(["install", str(signed), "--db", db, "--engine", "sqlite", "--json", *trusted]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["name"] == "numeric" and record["key_id"] == trust.key_id(trust.load_public_key(f"{key}.pub"))

    assert cli.main(["list", "--db", db, "--json"]) == 0
    assert [m["name"] for m in json.loads(capsys.readouterr().out)] == ["numeric"]
    assert cli.main(["attach", "--db", db, "--json", *trusted]) == 0
    assert json.loads(capsys.readouterr().out)["refused"] == {}
    assert cli.main(["sql", "--db", db, "--no-examples", "--json", "SELECT add_i64(2, 3) AS s"]) == 0
    assert json.loads(capsys.readouterr().out) == [{"s": 5}]
    assert cli.main(["uninstall", "numeric", "--db", db]) == 0
    assert cli.main(["uninstall", "numeric", "--db", db]) == 1
    assert "no module named 'numeric'" in capsys.readouterr().err
