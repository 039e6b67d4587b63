/*
 * The file DuckDB LOADs (wasmudf.duckdb_extension): only an entry point. It hands DuckDB's
 * arguments to the wasmudf._speedups module already loaded by Python (adapters/_duckdb.c),
 * found through a capsule, so there is one copy of wasmudf's C code and its state in the
 * process whichever file DuckDB loaded (INSTALL copies the file elsewhere).
 *
 * It runs inside a Python process only: loaded anywhere else it fails cleanly.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <duckdb_extension.h>

typedef bool (*attach_fn)(duckdb_extension_info info, struct duckdb_extension_access *access);

__attribute__((visibility("default"))) bool wasmudf_init_c_api(duckdb_extension_info info,
                                                              struct duckdb_extension_access *access) {
    if (!Py_IsInitialized()) {
        access->set_error(info, "the wasmudf extension works only inside a Python process that imported wasmudf");
        return false;
    }
    PyGILState_STATE gil = PyGILState_Ensure();
    attach_fn attach = (attach_fn)PyCapsule_Import("wasmudf._speedups._duckdb_attach", 0);
    bool ok = false;
    if (attach) ok = attach(info, access);
    else {
        PyErr_Clear();
        access->set_error(info, "wasmudf's C accelerator (wasmudf._speedups) has no DuckDB support");
    }
    PyGILState_Release(gil);
    return ok;
}
