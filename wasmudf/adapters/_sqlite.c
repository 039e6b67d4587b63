/*
 * The SQLite adapter's C part: per-row SQL functions and aggregate rows, for every ABI type.
 *
 *   RowCaller        a Python callable (vectorcall) that apsw can register like any function.
 *   sqlite_register  hands a RowCaller to SQLite itself (sqlite3_create_function_v2 on apsw's
 *                    connection handle), so rows reach the guest without Python objects and
 *                    without the GIL. The SQLite API table comes the way SQLite gives it to any
 *                    loadable extension: this module is one (entry point wasmudf_sqlite_init).
 *
 *   RowBuffer        an aggregate's rows as SQLite steps them in, packed straight into column
 *                    buffers (no Python objects kept) and handed to the guest in batches.
 *
 * Both scalar paths share one frame call (row_call). Text is checked to be UTF-8 on the way in
 * (SQLite does not promise it) and on the way out (the guest does not either). A row neither
 * path handles itself (a value of the wrong type, text that is not UTF-8) goes to the Python
 * path, ScalarFunction.call_row, which explains the problem. The native path reports a failure
 * the way apsw reports a Python function's: the exception is left set on the calling thread,
 * where apsw raises it when the statement fails. The core is reached through _speedups.h.
 */
#include "../_speedups.h"
#include <stddef.h>
#include <stdio.h>

#if __has_include(<sqlite3ext.h>)
#include <sqlite3ext.h>
SQLITE_EXTENSION_INIT1
#define HAVE_SQLITE 1
#else
#define HAVE_SQLITE 0
#endif

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *bind;     /* bind() -> (Core, func address) for the calling thread */
    PyObject *fallback; /* the Python per-row path */
    PyObject *what;     /* the function's name */
    int nargs;
    int strict;
    int codes[MAX_PARAMS];
    int rcode;
    long long output_limit; /* Limits.output_bytes for a variable-length result; < 0: none */
    PyObject *interrupt_check; /* None, or the connection's "was I interrupted" */
    void *db;           /* the sqlite3 connection once registered natively, else NULL */
    Core *core;         /* bound instance, or NULL */
    void *func;
    unsigned long thread;
} RowCaller;

static PyTypeObject RowCallerType;

static int is_type_code(int code) { return type_width(code) != 0 || is_varlen(code); }

/* ---- one row's frame ----------------------------------------------------------------

   [nargs descriptors][out descriptor]
   [per argument: validity (8 bytes), value or offsets {0, len} (8 bytes)]
   [out validity (8 bytes)][out value or offsets (8 bytes)]
   [the variable-length arguments' bytes, each 8-aligned] */

typedef struct {
    int is_null;
    uint64_t slot;        /* a fixed-width value, little-endian */
    const uint8_t *data;  /* a variable-length value's bytes (alive for the call) */
    uint32_t len;
} RowArg;

typedef struct {
    int is_null;
    uint64_t raw;         /* a fixed-width result */
    const uint8_t *data;  /* a variable-length result, in linear memory until the next call */
    uint32_t len;
} RowResult;

static uint32_t args_at(int n) { return DESC * (uint32_t)(n + 1); }
static uint32_t out_at(int n) { return args_at(n) + 16 * (uint32_t)n; }
static uint32_t data_at(int n) { return out_at(n) + 16; }

static uint64_t row_frame_size(const RowCaller *r, const RowArg *args) {
    uint64_t size = data_at(r->nargs);
    for (int i = 0; i < r->nargs; i++)
        if (is_varlen(r->codes[i]) && !args[i].is_null) size += align8(args[i].len);
    return size;
}

enum { ROW_CALL = 1, ROW_STATUS, ROW_DESCRIPTOR, ROW_OUTPUT_LIMIT, ROW_INVALID };

typedef struct {
    int kind;
    void *err, *trap;   /* ROW_CALL */
    uint32_t status;    /* ROW_STATUS */
    int field;          /* ROW_DESCRIPTOR: which field the guest changed */
    uint32_t want, got;
    uint32_t size;      /* ROW_OUTPUT_LIMIT */
    char message[160];  /* ROW_INVALID */
} RowFailure;

static int row_invalid(RowFailure *failure, const char *fmt, ...) {
    va_list va;
    va_start(va, fmt);
    vsnprintf(failure->message, sizeof failure->message, fmt, va);
    va_end(va);
    failure->kind = ROW_INVALID;
    return -1;
}

/* Check a variable-length result as read_result does for a batch (the same texts). */
static int check_varlen_result(RowCaller *r, Core *c, uint32_t offsets_at, const uint32_t got[8], RowResult *result,
                               RowFailure *failure) {
    uint32_t values_at = got[5], values_len = got[6];
    if (r->output_limit >= 0 && values_len > (unsigned long long)r->output_limit) {
        failure->kind = ROW_OUTPUT_LIMIT;
        failure->size = values_len;
        return -1;
    }
    if (values_len > 0x7fffffffu) return row_invalid(failure, "values_len %u is over 2 GiB", values_len);
    uint32_t first = get_u32(c->base + offsets_at), last = get_u32(c->base + offsets_at + 4);
    if (first != 0) return row_invalid(failure, "offsets[0] is %u, not 0", first);
    if (last < first) return row_invalid(failure, "offsets decrease at row 0 (%u then %u)", first, last);
    if (last != values_len) return row_invalid(failure, "offsets[1] is %u but values_len is %u", last, values_len);
    uint64_t msize = api.memory_size(c->ctx, c->mem);
    if (values_len && (values_at == 0 || (uint64_t)values_at + values_len > msize))
        return row_invalid(failure, "values [0x%x, +%u) is outside the %llu-byte linear memory", values_at, values_len,
                           (unsigned long long)msize);
    c->scratch_bytes += values_len;
    result->data = c->base + values_at;
    result->len = values_len;
    size_t bad;
    if (r->rcode == ABI_UTF8 && !result->is_null && !utf8_valid(result->data, values_len, &bad))
        return row_invalid(failure, "a utf8 result is not valid UTF-8 (a bad byte at offset %zu)", bad);
    return 0;
}

/* Call the guest on one row in `block` (row_frame_size bytes). Touches no Python object (the
   native path runs it without the GIL): 0 with the result, or -1 with what went wrong in
   *failure, for row_report. */
static int row_call(RowCaller *r, Core *c, uint32_t block, const RowArg *args, RowResult *result, RowFailure *failure) {
    int n = r->nargs;
    uint8_t *base = c->base, *frame = base + block;
    uint32_t data = block + data_at(n);
    for (int i = 0; i < n; i++) {
        const RowArg *a = &args[i];
        int code = r->codes[i];
        uint32_t at = block + args_at(n) + 16 * (uint32_t)i;
        /* Word stores: a memcpy/memset of a runtime size becomes `rep movs`, slow to start. */
        put_u64(base + at, a->is_null ? 0 : 0xFF);
        uint32_t validity = a->is_null ? at : 0;
        if (is_varlen(code)) {
            uint32_t len = a->is_null ? 0 : a->len;
            put_u32(base + at + 8, 0);
            put_u32(base + at + 12, len);
            if (len) memcpy(base + data, a->data, len);
            c->scratch_bytes += len;
            put_desc(frame + DESC * i, code, 1, a->is_null, validity, at + 8, data, len);
            data += (uint32_t)align8(len);
        } else {
            put_u64(base + at + 8, a->is_null ? 0 : a->slot);
            put_desc(frame + DESC * i, code, 1, a->is_null, validity, 0, at + 8, (uint32_t)type_width(code));
        }
    }
    int varlen_result = is_varlen(r->rcode);
    uint32_t out_validity = block + out_at(n), out_value = out_validity + 8;
    uint32_t want[8] = {(uint32_t)r->rcode, 1, 0, out_validity, varlen_result ? out_value : 0,
                        varlen_result ? 0 : out_value, varlen_result ? 0 : (uint32_t)type_width(r->rcode), 0};
    put_desc(frame + DESC * n, want[0], want[1], want[2], want[3], want[4], want[5], want[6]);
    put_u64(base + out_validity, 0xFF);
    put_u64(base + out_value, 0);
    uint32_t status;
    if (core_call(c, r->func, block, (uint32_t)n, block + DESC * (uint32_t)n, &status, &failure->err, &failure->trap)) {
        failure->kind = ROW_CALL;
        return -1;
    }
    if (status) {
        failure->kind = ROW_STATUS;
        failure->status = status;
        return -1;
    }
    /* The guest may write only null_count, and values/values_len of a variable-length result
       (ABI §4); anything else it changed is a lie. */
    uint32_t got[8];
    for (int f = 0; f < 8; f++) {
        got[f] = get_u32(frame + DESC * n + 4 * f);
        if (f == 2 || (varlen_result && (f == 5 || f == 6))) continue;
        if (got[f] != want[f]) {
            failure->kind = ROW_DESCRIPTOR;
            failure->field = f;
            failure->want = want[f];
            failure->got = got[f];
            return -1;
        }
    }
    result->is_null = !(base[out_validity] & 1);
    if (varlen_result) return check_varlen_result(r, c, out_value, got, result, failure);
    memcpy(&result->raw, base + out_value, 8);
    return 0;
}

/* Raise the error for a failed row_call (GIL held); returns -1. */
static int row_report(RowCaller *r, Core *c, const RowFailure *failure) {
    switch (failure->kind) {
    case ROW_CALL: return report_call_failure(c, r->what, failure->err, failure->trap);
    case ROW_STATUS: return fail(c, "status", r->what, PyLong_FromUnsignedLong(failure->status));
    case ROW_OUTPUT_LIMIT: return fail(c, "output_limit", r->what, PyLong_FromUnsignedLong(failure->size));
    case ROW_INVALID: return fail_invalid(c, r->what, "%s", failure->message);
    default:
        return fail_invalid(c, r->what, "it changed the output descriptor's '%s' field from %u to %u",
                            FIELD_NAMES[failure->field], failure->want, failure->got);
    }
}

#if HAVE_SQLITE
/* sqlite3_is_interrupted (3.41) comes after the last entry of an older header's table. */
#if SQLITE_VERSION_NUMBER >= 3041000
static int sqlite_interrupted(void *db) { return sqlite3_api->is_interrupted((sqlite3 *)db); }
#else
typedef struct {
    sqlite3_api_routines known;
    int (*is_interrupted)(sqlite3 *);
} RoutinesSince3041;
static int sqlite_interrupted(void *db) { return ((const RoutinesSince3041 *)sqlite3_api)->is_interrupted((sqlite3 *)db); }
#endif
#endif

/* For the duration of one row call: stop within a tick once the caller's query is
   interrupted (SQLite's own flag when registered natively, else the Python check). */
typedef struct {
    PyObject *interrupt_check;
    native_check_fn native_check;
    void *native_check_arg;
} SavedCheck;

static void arm_interrupt(RowCaller *r, Core *c, SavedCheck *saved) {
    saved->native_check = c->native_check;
    saved->native_check_arg = c->native_check_arg;
    saved->interrupt_check = NULL;
#if HAVE_SQLITE
    if (r->db) { /* the only case that may run without the GIL: no reference counting */
        c->native_check = sqlite_interrupted;
        c->native_check_arg = r->db;
        return;
    }
#endif
    saved->interrupt_check = c->interrupt_check; /* owned: given back by disarm_interrupt */
    c->interrupt_check = Py_NewRef(r->interrupt_check);
}

static void disarm_interrupt(Core *c, const SavedCheck *saved) {
    c->native_check = saved->native_check;
    c->native_check_arg = saved->native_check_arg;
    if (saved->interrupt_check) Py_SETREF(c->interrupt_check, saved->interrupt_check);
}

/* ---- one value into a parameter's place (row frames and RowBuffer columns alike) ------- */

/* An integer for an int32/int64/bool parameter, `type_width(code)` bytes at dst; 0 when it
   does not fit (int32), so the Python path names the value. */
static int put_integer(int code, long long x, uint8_t *dst) {
    if (code == ABI_INT32) {
        if (x < INT32_MIN || x > INT32_MAX) return 0;
        int32_t y = (int32_t)x;
        memcpy(dst, &y, 4);
    } else if (code == ABI_BOOL) {
        dst[0] = x != 0;
    } else {
        memcpy(dst, &x, 8);
    }
    return 1;
}

/* A real for a float32/float64 parameter (float32 by IEEE rounding: past its range, +-inf,
   as Arrow's cast and the Python path give). */
static void put_real(int code, double d, uint8_t *dst) {
    if (code == ABI_FLOAT32) {
        float f = (float)d;
        memcpy(dst, &f, 4);
    } else {
        memcpy(dst, &d, 8);
    }
}

static int is_integer_code(int code) { return code == ABI_INT32 || code == ABI_INT64 || code == ABI_BOOL; }
static int is_real_code(int code) { return code == ABI_FLOAT32 || code == ABI_FLOAT64; }

/* A Python value (not None) for a fixed-width parameter; 0 when the Python path must take
   it (another type, out of range). */
static int put_python(int code, PyObject *v, uint8_t *dst) {
    if (is_integer_code(code)) {
        if (!PyLong_Check(v)) return 0;
        int overflow;
        long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
        if (overflow || (x == -1 && PyErr_Occurred())) { PyErr_Clear(); return 0; }
        return put_integer(code, x, dst);
    }
    if (!is_real_code(code)) return 0;
    double d;
    if (PyFloat_CheckExact(v)) d = PyFloat_AS_DOUBLE(v);
    else if (PyLong_Check(v) || PyFloat_Check(v)) {
        d = PyFloat_AsDouble(v);
        if (d == -1.0 && PyErr_Occurred()) { PyErr_Clear(); return 0; }
    } else return 0;
    put_real(code, d, dst);
    return 1;
}

/* The bytes of a Python value (not None) for a utf8 (str) or binary (bytes) parameter,
   alive as long as the value; 0 when the Python path must take it (another type, a str
   with lone surrogates, a bytearray or memoryview). */
static int python_bytes(int code, PyObject *v, const uint8_t **data, uint32_t *len) {
    Py_ssize_t size;
    const char *p;
    if (code == ABI_UTF8) {
        if (!PyUnicode_Check(v)) return 0;
        if (!(p = PyUnicode_AsUTF8AndSize(v, &size))) { PyErr_Clear(); return 0; }
    } else {
        if (!PyBytes_Check(v)) return 0;
        p = PyBytes_AS_STRING(v);
        size = PyBytes_GET_SIZE(v);
    }
    if (size > 0x7fffffff) return 0;
    *data = (const uint8_t *)p;
    *len = (uint32_t)size;
    return 1;
}

/* One row's argument from a Python value; 0 when the Python path must take the row. */
static int arg_from_python(int code, PyObject *v, RowArg *a) {
    memset(a, 0, sizeof *a);
    if (v == Py_None) {
        a->is_null = 1;
        return 1;
    }
    if (is_varlen(code)) return python_bytes(code, v, &a->data, &a->len);
    return put_python(code, v, (uint8_t *)&a->slot);
}

/* A type-code sequence into out[]: its length (1..MAX_PARAMS), or -1 with an exception
   when it is not one or a code is not an ABI type. */
static int parse_codes(PyObject *codes, int *out) {
    PyObject *seq = PySequence_Fast(codes, "codes must be a sequence");
    if (!seq) return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n < 1 || n > MAX_PARAMS) {
        Py_DECREF(seq);
        PyErr_Format(PyExc_ValueError, "between 1 and %d parameters, not %zd", MAX_PARAMS, n);
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        long code = PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, i));
        if (!is_type_code((int)code)) {
            Py_DECREF(seq);
            if (!PyErr_Occurred()) PyErr_Format(PyExc_ValueError, "%ld is not an ABI type code", code);
            return -1;
        }
        out[i] = (int)code;
    }
    Py_DECREF(seq);
    return (int)n;
}

/* ---- the Python path ---------------------------------------------------------------- */

static int row_bind(RowCaller *r) {
    PyObject *bound = PyObject_CallNoArgs(r->bind);
    if (!bound) return -1;
    PyObject *core;
    unsigned long long func;
    if (!PyArg_ParseTuple(bound, "O!K", &CoreType, &core, &func)) { Py_DECREF(bound); return -1; }
    Py_INCREF(core);
    Py_XSETREF(r->core, (Core *)core);
    Py_DECREF(bound);
    r->func = (void *)(uintptr_t)func;
    r->thread = PyThread_get_thread_ident();
    return 0;
}

static PyObject *result_to_python(int rcode, const RowResult *result) {
    if (result->is_null) Py_RETURN_NONE;
    uint64_t raw = result->raw;
    switch (rcode) {
    case ABI_BOOL: return PyBool_FromLong((raw & 0xFF) != 0);
    case ABI_INT32: { int32_t x; memcpy(&x, &raw, 4); return PyLong_FromLong(x); }
    case ABI_INT64: { int64_t x; memcpy(&x, &raw, 8); return PyLong_FromLongLong(x); }
    case ABI_FLOAT32: { float x; memcpy(&x, &raw, 4); return PyFloat_FromDouble(x); }
    case ABI_FLOAT64: { double x; memcpy(&x, &raw, 8); return PyFloat_FromDouble(x); }
    case ABI_UTF8: return PyUnicode_DecodeUTF8((const char *)result->data, result->len, "strict"); /* checked */
    default: return PyBytes_FromStringAndSize((const char *)result->data, result->len);
    }
}

/* The thread's core bound and a frame block for this row (GIL held); NULL with an exception. */
static Core *row_prepare(RowCaller *r, const RowArg *args, uint32_t *block) {
    if (!r->core || r->core->dead || r->thread != PyThread_get_thread_ident()) {
        if (row_bind(r)) return NULL;
    }
    Core *c = r->core;
    Py_INCREF(c); /* a failure may unbind it */
    if (core_before_call(c) || frame_block(c, row_frame_size(r, args), 0, r->what, block)) {
        Py_DECREF(c);
        return NULL;
    }
    return c;
}

/* One row whose arguments are ready, with the GIL: bind, renew the block if due, call. */
static PyObject *row_call_python(RowCaller *r, const RowArg *args) {
    uint32_t block;
    Core *c = row_prepare(r, args, &block);
    if (!c) return NULL;
    PyObject *out = NULL;
    SavedCheck saved;
    RowFailure failure;
    RowResult result = {0};
    arm_interrupt(r, c, &saved);
    int rc = row_call(r, c, block, args, &result, &failure);
    disarm_interrupt(c, &saved);
    if (rc) row_report(r, c, &failure);
    else out = result_to_python(r->rcode, &result);
    Py_DECREF(c);
    return out;
}

static PyObject *to_fallback(RowCaller *r, PyObject *const *args, size_t nargsf) {
    return PyObject_Vectorcall(r->fallback, args, PyVectorcall_NARGS(nargsf), NULL);
}

static PyObject *RowCaller_vectorcall(RowCaller *r, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    if (!r->fallback) {
        PyErr_SetString(PyExc_RuntimeError, "RowCaller was not initialized");
        return NULL;
    }
    Py_ssize_t n = PyVectorcall_NARGS(nargsf);
    if (n != r->nargs || kwnames) return PyObject_Vectorcall(r->fallback, args, nargsf, kwnames);
    if (r->strict)
        for (Py_ssize_t i = 0; i < n; i++)
            if (args[i] == Py_None) Py_RETURN_NONE; /* before the other values are looked at */
    RowArg row[MAX_PARAMS];
    for (Py_ssize_t i = 0; i < n; i++)
        if (!arg_from_python(r->codes[i], args[i], &row[i])) return to_fallback(r, args, nargsf);
    return row_call_python(r, row);
}

/* ---- the native SQLite path --------------------------------------------------------- */

#if HAVE_SQLITE

enum { ARGS_READY, ARGS_PYTHON, ARGS_NULL };

/* One argument from a SQLite value; 0 when the row must take the Python path (another type,
   text that is not UTF-8, an int32 out of range). Touches no Python object. */
static int arg_from_sqlite(int code, sqlite3_value *v, RowArg *a) {
    int t = sqlite3_value_type(v);
    memset(a, 0, sizeof *a);
    uint8_t *dst = (uint8_t *)&a->slot;
    if (t == SQLITE_NULL) {
        a->is_null = 1;
    } else if (code == ABI_UTF8) {
        if (t != SQLITE_TEXT) return 0;
        const unsigned char *text = sqlite3_value_text(v); /* before _bytes: SQLite's rule */
        int len = sqlite3_value_bytes(v);
        if (!text || !utf8_valid(text, (size_t)len, NULL)) return 0;
        a->data = text;
        a->len = (uint32_t)len;
    } else if (code == ABI_BINARY) {
        if (t != SQLITE_BLOB) return 0;
        const void *blob = sqlite3_value_blob(v);
        a->len = (uint32_t)sqlite3_value_bytes(v);
        a->data = blob ? blob : (const uint8_t *)"";
    } else if (is_integer_code(code)) {
        if (t != SQLITE_INTEGER || !put_integer(code, sqlite3_value_int64(v), dst)) return 0;
    } else if (t == SQLITE_FLOAT) put_real(code, sqlite3_value_double(v), dst);
    else if (t == SQLITE_INTEGER) put_real(code, (double)sqlite3_value_int64(v), dst); /* as float(int) */
    else return 0;
    return 1;
}

/* One row's arguments from SQLite's values: READY; NULL for a strict function given a NULL
   (its result is NULL); PYTHON when the row needs the Python path. */
static int sqlite_args(RowCaller *r, sqlite3_value **argv, RowArg *args) {
    if (r->strict)
        for (int i = 0; i < r->nargs; i++)
            if (sqlite3_value_type(argv[i]) == SQLITE_NULL) return ARGS_NULL;
    for (int i = 0; i < r->nargs; i++)
        if (!arg_from_sqlite(r->codes[i], argv[i], &args[i])) return ARGS_PYTHON;
    return ARGS_READY;
}

static void sqlite_result(sqlite3_context *ctx, int rcode, const RowResult *result) {
    if (result->is_null) {
        sqlite3_result_null(ctx);
        return;
    }
    uint64_t raw = result->raw;
    switch (rcode) {
    case ABI_BOOL: sqlite3_result_int64(ctx, (raw & 0xFF) != 0); break;
    case ABI_INT32: { int32_t x; memcpy(&x, &raw, 4); sqlite3_result_int64(ctx, x); break; }
    case ABI_INT64: { int64_t x; memcpy(&x, &raw, 8); sqlite3_result_int64(ctx, x); break; }
    case ABI_FLOAT32: { float x; memcpy(&x, &raw, 4); sqlite3_result_double(ctx, x); break; }
    case ABI_FLOAT64: { double x; memcpy(&x, &raw, 8); sqlite3_result_double(ctx, x); break; }
    /* One copy, out of linear memory (the next guest call may overwrite it). */
    case ABI_UTF8: sqlite3_result_text(ctx, (const char *)result->data, (int)result->len, SQLITE_TRANSIENT); break;
    default: sqlite3_result_blob(ctx, result->data, (int)result->len, SQLITE_TRANSIENT); break;
    }
}

/* The statement fails with the pending exception's text; the exception stays set for apsw
   to raise (GIL held). */
static void sqlite_result_exception(sqlite3_context *ctx) {
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    PyObject *text = value ? PyObject_Str(value) : NULL;
    const char *utf8 = text ? PyUnicode_AsUTF8(text) : NULL;
    if (!utf8) PyErr_Clear();
    sqlite3_result_error(ctx, utf8 ? utf8 : "wasmudf: the function failed", -1);
    Py_XDECREF(text);
    PyErr_Restore(type, value, tb);
}

static PyObject *sqlite_to_python(sqlite3_value *v) {
    switch (sqlite3_value_type(v)) {
    case SQLITE_INTEGER: return PyLong_FromLongLong(sqlite3_value_int64(v));
    case SQLITE_FLOAT: return PyFloat_FromDouble(sqlite3_value_double(v));
    case SQLITE_TEXT: {
        const char *text = (const char *)sqlite3_value_text(v);
        return PyUnicode_DecodeUTF8(text ? text : "", sqlite3_value_bytes(v), "replace");
    }
    case SQLITE_BLOB: {
        const void *blob = sqlite3_value_blob(v);
        return PyBytes_FromStringAndSize(blob ? blob : "", sqlite3_value_bytes(v));
    }
    default: return Py_NewRef(Py_None);
    }
}

/* Set a Python result (None, int, float, str or bytes) as the SQL result. */
static void sqlite_result_python(PyObject *what, sqlite3_context *ctx, PyObject *result) {
    if (result == Py_None) sqlite3_result_null(ctx);
    else if (PyFloat_Check(result)) sqlite3_result_double(ctx, PyFloat_AS_DOUBLE(result));
    else if (PyLong_Check(result)) { /* bool included */
        long long x = PyLong_AsLongLong(result);
        if (!(x == -1 && PyErr_Occurred())) sqlite3_result_int64(ctx, x);
    } else if (PyUnicode_Check(result)) {
        Py_ssize_t len;
        const char *text = PyUnicode_AsUTF8AndSize(result, &len);
        if (text) sqlite3_result_text64(ctx, text, (sqlite3_uint64)len, SQLITE_TRANSIENT, SQLITE_UTF8);
    } else if (PyBytes_Check(result))
        sqlite3_result_blob64(ctx, PyBytes_AS_STRING(result), (sqlite3_uint64)PyBytes_GET_SIZE(result), SQLITE_TRANSIENT);
    else
        PyErr_Format(PyExc_TypeError, "`%U` returned a %s", what, Py_TYPE(result)->tp_name);
}

/* A row the native path does not handle itself: the RowCaller with Python values, as apsw
   would have called it (GIL held). */
static void sqlite_row_python(RowCaller *r, sqlite3_context *ctx, int argc, sqlite3_value **argv) {
    PyObject *args[MAX_PARAMS];
    int made = 0;
    PyObject *result = NULL;
    if (argc > MAX_PARAMS) {
        PyErr_Format(PyExc_TypeError, "`%U` takes %d arguments, not %d", r->what, r->nargs, argc);
        goto done;
    }
    for (; made < argc; made++)
        if (!(args[made] = sqlite_to_python(argv[made]))) goto done;
    result = PyObject_Vectorcall((PyObject *)r, args, (size_t)argc, NULL);
    if (result) sqlite_result_python(r->what, ctx, result);
done:
    if (PyErr_Occurred()) sqlite_result_exception(ctx);
    Py_XDECREF(result);
    for (int i = 0; i < made; i++) Py_DECREF(args[i]);
}

/* SQLite's xFunc. The common row (arguments of the declared types, this thread's instance
   bound, its frame block still good) runs without the GIL; a row that needs a new frame
   block takes the GIL for that and no more. */
static void sqlite_row(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
    RowCaller *r = (RowCaller *)sqlite3_user_data(ctx);
    RowArg args[MAX_PARAMS];
    int filled = argc == r->nargs ? sqlite_args(r, argv, args) : ARGS_PYTHON;
    if (filled == ARGS_NULL) {
        sqlite3_result_null(ctx);
        return;
    }
    Core *c = r->core;
    uint32_t block;
    /* r->core and c->dead change only with the GIL, on this connection's thread: SQLite
       serializes the calls of one connection. */
    int native = filled == ARGS_READY && c && !c->dead && r->thread == PyThread_get_thread_ident() &&
                 c->before_call == Py_None;
    if (!native) {
        PyGILState_STATE gil = PyGILState_Ensure();
        sqlite_row_python(r, ctx, argc, argv);
        PyGILState_Release(gil);
        return;
    }
    if (!frame_block_reusable(c, row_frame_size(r, args), &block)) {
        PyGILState_STATE gil = PyGILState_Ensure();
        c = row_prepare(r, args, &block); /* a new reference, or NULL with an exception */
        if (!c) sqlite_result_exception(ctx);
        else Py_DECREF(c); /* r->core keeps it */
        PyGILState_Release(gil);
        if (!c) return;
    }
    SavedCheck saved;
    RowFailure failure;
    RowResult result = {0};
    arm_interrupt(r, c, &saved);
    int rc = row_call(r, c, block, args, &result, &failure);
    disarm_interrupt(c, &saved);
    if (rc == 0) {
        sqlite_result(ctx, r->rcode, &result);
        return;
    }
    PyGILState_STATE gil = PyGILState_Ensure();
    row_report(r, c, &failure);
    sqlite_result_exception(ctx);
    PyGILState_Release(gil);
}

static void sqlite_row_destroy(void *p) {
#if PY_VERSION_HEX >= 0x030D0000
    if (Py_IsFinalizing()) return; /* the process is ending; nothing to give back */
#else
    if (_Py_IsFinalizing()) return;
#endif
    PyGILState_STATE gil = PyGILState_Ensure();
    Py_DECREF((PyObject *)p);
    PyGILState_Release(gil);
}

/* SQLite calls this when the module is loaded as an extension: all we want is its table. */
__attribute__((visibility("default"))) int wasmudf_sqlite_init(sqlite3 *db, char **errmsg,
                                                               const sqlite3_api_routines *routines) {
    SQLITE_EXTENSION_INIT2(routines);
    return SQLITE_OK;
}

static PyObject *py_sqlite_ready(PyObject *self, PyObject *unused) {
    return PyBool_FromLong(sqlite3_api != NULL && sqlite3_api->libversion_number() >= 3041000);
}

static PyObject *py_sqlite_register(PyObject *self, PyObject *args) {
    unsigned long long db;
    const char *name;
    int deterministic;
    RowCaller *r;
    if (!PyArg_ParseTuple(args, "KspO!", &db, &name, &deterministic, &RowCallerType, &r)) return NULL;
    if (!sqlite3_api) {
        PyErr_SetString(PyExc_RuntimeError, "SQLite's API table was not loaded (see adapters.sqlite_apsw)");
        return NULL;
    }
    if (r->db || !r->fallback) {
        PyErr_SetString(PyExc_ValueError, "this RowCaller is registered already, or was not initialized");
        return NULL;
    }
    r->db = (void *)(uintptr_t)db;
    Py_INCREF(r); /* SQLite's reference, given back by sqlite_row_destroy (even on failure) */
    int rc;
    const char *message = NULL;
    /* Without the GIL: SQLite may wait for the connection's mutex held by a thread running
       a statement, and that statement's Python functions need the GIL. */
    Py_BEGIN_ALLOW_THREADS
    rc = sqlite3_create_function_v2((sqlite3 *)r->db, name, r->nargs,
                                    SQLITE_UTF8 | (deterministic ? SQLITE_DETERMINISTIC : 0), r, sqlite_row, NULL,
                                    NULL, sqlite_row_destroy);
    if (rc != SQLITE_OK) message = sqlite3_errmsg((sqlite3 *)r->db);
    Py_END_ALLOW_THREADS
    if (rc != SQLITE_OK) {
        PyErr_Format(PyExc_RuntimeError, "SQLite refused to create `%s`: %s", name, message ? message : "?");
        return NULL;
    }
    Py_RETURN_NONE;
}

#endif /* HAVE_SQLITE */

/* ---- RowBuffer: an aggregate's rows, packed as they arrive --------------------------- */

/* One parameter's pending rows, in Arrow's layout. */
typedef struct {
    uint8_t *values;        /* fixed-width: capacity values; bool: one byte per row, packed at flush */
    int32_t *offsets;       /* variable-length: capacity + 1 offsets into data */
    uint8_t *data;          /* variable-length bytes */
    size_t data_len, data_cap;
    uint8_t *validity;      /* capacity bits; a NULL (for a `called` aggregate) clears its bit */
    Py_ssize_t nulls;
} BufferColumn;

typedef struct {
    PyObject_HEAD
    int nargs;
    int strict;
    int codes[MAX_PARAMS];
    BufferColumn columns[MAX_PARAMS];
    Py_ssize_t capacity, pending;
    int inverse;      /* the pending rows are removals (a window's inverse), not additions */
    PyObject *fold;   /* fold(inverse, [(null count, validity, buffer1, buffer2) per column], rows) */
    PyObject *slow;   /* slow(inverse, *values): one row through the Python path */
} RowBuffer;

static PyTypeObject RowBufferType;

/* Variable-length bytes per batch: as the batch path (functions.BATCH_VARLEN_BYTES). */
#define BUFFER_DATA_BYTES (16u << 20)

static PyObject *bytes_of(const void *p, Py_ssize_t n) { return PyBytes_FromStringAndSize(n ? p : "", n); }

/* The (null count, validity, buffer1, buffer2) description of one column's n pending rows. */
static PyObject *column_description(int code, const BufferColumn *col, Py_ssize_t n) {
    PyObject *validity = col->nulls ? bytes_of(col->validity, (n + 7) / 8) : Py_NewRef(Py_None);
    PyObject *b1 = NULL, *b2 = NULL;
    if (code == ABI_BOOL) {
        b1 = PyBytes_FromStringAndSize(NULL, (n + 7) / 8);
        if (b1) {
            uint8_t *bits = (uint8_t *)PyBytes_AS_STRING(b1);
            memset(bits, 0, (n + 7) / 8);
            for (Py_ssize_t i = 0; i < n; i++)
                if (col->values[i]) bits[i >> 3] |= (uint8_t)(1u << (i & 7));
        }
        b2 = Py_NewRef(Py_None);
    } else if (is_varlen(code)) {
        b1 = bytes_of(col->offsets, (n + 1) * 4);
        b2 = bytes_of(col->data, (Py_ssize_t)col->data_len);
    } else {
        b1 = bytes_of(col->values, n * type_width(code));
        b2 = Py_NewRef(Py_None);
    }
    if (!validity || !b1 || !b2) {
        Py_XDECREF(validity); Py_XDECREF(b1); Py_XDECREF(b2);
        return NULL;
    }
    return Py_BuildValue("(nNNN)", col->nulls, validity, b1, b2);
}

static void buffer_reset(RowBuffer *b) {
    b->pending = 0;
    for (int i = 0; i < b->nargs; i++) {
        BufferColumn *col = &b->columns[i];
        col->nulls = 0;
        col->data_len = 0;
        memset(col->validity, 0xFF, (size_t)(b->capacity + 7) / 8);
    }
}

static int buffer_flush(RowBuffer *b) {
    Py_ssize_t n = b->pending;
    if (!n || !b->fold) return 0;
    PyObject *columns = PyList_New(b->nargs);
    if (!columns) return -1;
    for (int i = 0; i < b->nargs; i++) {
        PyObject *description = column_description(b->codes[i], &b->columns[i], n);
        if (!description) { Py_DECREF(columns); return -1; }
        PyList_SET_ITEM(columns, i, description);
    }
    buffer_reset(b); /* a failing batch is reported, not retried */
    PyObject *r = PyObject_CallFunction(b->fold, "ONn", b->inverse ? Py_True : Py_False, columns, n);
    if (!r) return -1;
    Py_DECREF(r);
    return 0;
}

/* Room for `len` more bytes in a variable-length column; 0 on no memory. */
static int column_reserve(BufferColumn *col, size_t len) {
    if (col->data_len + len <= col->data_cap) return 1;
    size_t cap = col->data_cap ? col->data_cap : 4096;
    while (cap < col->data_len + len) cap *= 2;
    uint8_t *grown = PyMem_RawRealloc(col->data, cap);
    if (!grown) return 0;
    col->data = grown;
    col->data_cap = cap;
    return 1;
}

/* Pack one argument into row `row` of a column: 1, or 0 when it does not fit one batch (the
   Python path takes the row), -1 on no memory. Touches no Python object. A NULL is packed only
   for a `called` aggregate (the caller checks). */
static int pack_arg(int code, BufferColumn *col, Py_ssize_t row, const RowArg *a) {
    if (a->is_null) {
        col->validity[row >> 3] &= (uint8_t)~(1u << (row & 7));
        col->nulls++;
    }
    if (code == ABI_BOOL) {
        col->values[row] = (uint8_t)(a->slot & 1);
    } else if (!is_varlen(code)) {
        memcpy(col->values + row * type_width(code), &a->slot, type_width(code)); /* zero for a NULL */
    } else {
        if (col->data_len + a->len > 0x7fffffffu) return 0; /* offsets are int32: too big for one batch */
        if (!column_reserve(col, a->len)) return -1;
        if (a->len) memcpy(col->data + col->data_len, a->data, a->len);
        col->data_len += a->len;
        col->offsets[row + 1] = (int32_t)col->data_len;
    }
    return 1;
}

/* A Python value into row `row` of a column, as pack_arg (GIL held: no memory raises). */
static int pack_value(int code, BufferColumn *col, Py_ssize_t row, PyObject *v) {
    RowArg a;
    if (!arg_from_python(code, v, &a)) return 0;
    int packed = pack_arg(code, col, row, &a);
    if (packed < 0) PyErr_NoMemory();
    return packed;
}

/* Undo a row packed part-way (its NULL marks and bytes), so it can go the Python path. */
static void unpack_row(RowBuffer *b, int packed_columns) {
    Py_ssize_t row = b->pending;
    for (int i = 0; i < packed_columns; i++) {
        BufferColumn *col = &b->columns[i];
        if (!(col->validity[row >> 3] & (1u << (row & 7)))) {
            col->validity[row >> 3] |= (uint8_t)(1u << (row & 7));
            col->nulls--;
        }
        if (is_varlen(b->codes[i])) col->data_len = (size_t)col->offsets[row];
    }
}

static int buffer_data_full(const RowBuffer *b) {
    for (int i = 0; i < b->nargs; i++)
        if (b->columns[i].data_len >= BUFFER_DATA_BYTES) return 1;
    return 0;
}

/* step(buffer, *values) / inverse(buffer, *values), as apsw calls a tuple-form aggregate. */
static PyObject *buffer_row(PyObject *const *args, Py_ssize_t nargs, int inverse) {
    if (nargs < 1 || !PyObject_TypeCheck(args[0], &RowBufferType)) {
        PyErr_SetString(PyExc_TypeError, "the first argument must be a RowBuffer");
        return NULL;
    }
    RowBuffer *b = (RowBuffer *)args[0];
    if (!b->fold) {
        PyErr_SetString(PyExc_RuntimeError, "RowBuffer was not initialized");
        return NULL;
    }
    PyObject *const *values = args + 1;
    Py_ssize_t count = nargs - 1;
    if (b->pending && b->inverse != inverse && buffer_flush(b)) return NULL;
    b->inverse = inverse;
    if (count == b->nargs) {
        int saw_null = 0;
        for (Py_ssize_t i = 0; i < count; i++) saw_null |= values[i] == Py_None;
        if (saw_null && b->strict) Py_RETURN_NONE; /* a strict aggregate skips the row */
        /* Packed into the next row's place, which counts only once every value fitted. */
        int i = 0, packed = 1;
        for (; packed == 1 && i < count; i++) packed = pack_value(b->codes[i], &b->columns[i], b->pending, values[i]);
        if (packed < 0) return NULL;
        if (packed) {
            if ((++b->pending == b->capacity || buffer_data_full(b)) && buffer_flush(b)) return NULL;
            Py_RETURN_NONE;
        }
        unpack_row(b, i);
    }
    /* In order: the rows before this one first. */
    if (buffer_flush(b)) return NULL;
    PyObject *flag = inverse ? Py_True : Py_False;
    PyObject *call_args[MAX_PARAMS + 1];
    if (count > MAX_PARAMS) {
        PyErr_Format(PyExc_TypeError, "at most %d arguments", MAX_PARAMS);
        return NULL;
    }
    call_args[0] = flag;
    for (Py_ssize_t i = 0; i < count; i++) call_args[i + 1] = values[i];
    return PyObject_Vectorcall(b->slow, call_args, (size_t)(count + 1), NULL);
}

#if HAVE_SQLITE
/* ---- aggregates registered with SQLite itself: rows packed from sqlite3_value, no GIL ---- */

/* One value from SQLite into row `row` of a column, as pack_arg; no GIL needed. */
static int pack_sqlite_value(int code, BufferColumn *col, Py_ssize_t row, sqlite3_value *v) {
    RowArg a;
    return arg_from_sqlite(code, v, &a) ? pack_arg(code, col, row, &a) : 0;
}

typedef struct {
    PyObject *factory; /* () -> (RowBuffer, step, final, [value, inverse]): a new group */
    PyObject *what;
    int nargs;
} AggregateCaller;

typedef struct {
    PyObject *group; /* the factory's tuple, or NULL before the group's first row */
} AggregateState;

/* This group's tuple, made on first use (GIL held); NULL with an exception. */
static PyObject *aggregate_group(AggregateCaller *a, AggregateState *st) {
    if (!st->group) {
        PyObject *group = PyObject_CallNoArgs(a->factory);
        if (!group) return NULL;
        if (!PyTuple_Check(group) || PyTuple_GET_SIZE(group) < 3 ||
            !PyObject_TypeCheck(PyTuple_GET_ITEM(group, 0), &RowBufferType)) {
            Py_DECREF(group);
            PyErr_SetString(PyExc_TypeError, "the aggregate factory must return (RowBuffer, step, final, ...)");
            return NULL;
        }
        st->group = group;
    }
    return st->group;
}

/* A row the buffer cannot pack: the rows before it, then this one through the Python path,
   as apsw would have called it (GIL held). */
static int aggregate_row_python(RowBuffer *b, int inverse, int argc, sqlite3_value **argv) {
    PyObject *args[MAX_PARAMS + 1];
    if (argc > MAX_PARAMS) {
        PyErr_Format(PyExc_TypeError, "at most %d arguments", MAX_PARAMS);
        return -1;
    }
    if (buffer_flush(b)) return -1;
    args[0] = inverse ? Py_True : Py_False;
    int made = 1;
    int rc = -1;
    for (; made <= argc; made++)
        if (!(args[made] = sqlite_to_python(argv[made - 1]))) goto done;
    PyObject *r = PyObject_Vectorcall(b->slow, args, (size_t)made, NULL);
    if (r) {
        Py_DECREF(r);
        rc = 0;
    }
done:
    for (int i = 1; i < made; i++) Py_DECREF(args[i]);
    return rc;
}

/* xStep and xInverse: the row packed straight from SQLite's values without the GIL; the GIL
   only to start the group, to hand a full buffer to the guest, or for an unusual row. */
static void aggregate_step(sqlite3_context *ctx, int argc, sqlite3_value **argv, int inverse) {
    AggregateCaller *a = (AggregateCaller *)sqlite3_user_data(ctx);
    AggregateState *st = sqlite3_aggregate_context(ctx, sizeof *st);
    if (!st) {
        sqlite3_result_error_nomem(ctx);
        return;
    }
    if (!st->group) {
        PyGILState_STATE gil = PyGILState_Ensure();
        if (!aggregate_group(a, st)) sqlite_result_exception(ctx);
        PyGILState_Release(gil);
        if (!st->group) return;
    }
    RowBuffer *b = (RowBuffer *)PyTuple_GET_ITEM(st->group, 0);
    if (argc == b->nargs && b->strict) {
        for (int i = 0; i < argc; i++)
            if (sqlite3_value_type(argv[i]) == SQLITE_NULL) return; /* a strict aggregate skips the row */
    }
    if (b->pending && b->inverse != inverse) {
        /* The pending rows are of the other kind (updates before an inverse): theirs first. */
        PyGILState_STATE gil = PyGILState_Ensure();
        int failed = buffer_flush(b);
        if (failed) sqlite_result_exception(ctx);
        PyGILState_Release(gil);
        if (failed) return;
    }
    b->inverse = inverse;
    int packed = 0;
    if (argc == b->nargs) {
        int i = 0;
        packed = 1;
        for (; packed == 1 && i < argc; i++) packed = pack_sqlite_value(b->codes[i], &b->columns[i], b->pending, argv[i]);
        if (packed == 1) {
            if (++b->pending < b->capacity && !buffer_data_full(b)) return;
        } else {
            unpack_row(b, i);
        }
    }
    PyGILState_STATE gil = PyGILState_Ensure();
    int failed;
    if (packed == 1) failed = buffer_flush(b);
    else if (packed < 0) failed = (PyErr_NoMemory(), -1);
    else failed = aggregate_row_python(b, inverse, argc, argv);
    if (failed) sqlite_result_exception(ctx);
    PyGILState_Release(gil);
}

static void aggregate_xstep(sqlite3_context *ctx, int argc, sqlite3_value **argv) { aggregate_step(ctx, argc, argv, 0); }
static void aggregate_xinverse(sqlite3_context *ctx, int argc, sqlite3_value **argv) { aggregate_step(ctx, argc, argv, 1); }

/* xFinal (the group ends) and xValue (a window's current result). */
static void aggregate_result(sqlite3_context *ctx, int final) {
    AggregateCaller *a = (AggregateCaller *)sqlite3_user_data(ctx);
    /* No context yet: a group without rows; it still gets the guest's result of no rows. */
    AggregateState *st = sqlite3_aggregate_context(ctx, sizeof *st);
    PyGILState_STATE gil = PyGILState_Ensure();
    if (PyErr_Occurred()) {
        /* A step failed: SQLite finalizes while the statement unwinds, with that step's
           exception still pending for apsw to raise. The state was released by the failing
           step; drop the group, keep the exception. */
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        if (st) Py_CLEAR(st->group);
        PyErr_Restore(type, value, tb);
        sqlite3_result_null(ctx);
        PyGILState_Release(gil);
        return;
    }
    PyObject *result = NULL, *group = st ? aggregate_group(a, st) : NULL;
    if (!st) PyErr_NoMemory();
    if (group) {
        Py_ssize_t at = final ? 2 : 3;
        if (PyTuple_GET_SIZE(group) <= at) PyErr_Format(PyExc_TypeError, "`%U` is not a window function", a->what);
        else result = PyObject_CallOneArg(PyTuple_GET_ITEM(group, at), PyTuple_GET_ITEM(group, 0));
    }
    if (result) sqlite_result_python(a->what, ctx, result);
    if (PyErr_Occurred()) sqlite_result_exception(ctx);
    Py_XDECREF(result);
    if (final && st) Py_CLEAR(st->group);
    PyGILState_Release(gil);
}

static void aggregate_xfinal(sqlite3_context *ctx) { aggregate_result(ctx, 1); }
static void aggregate_xvalue(sqlite3_context *ctx) { aggregate_result(ctx, 0); }

static void aggregate_destroy(void *p) {
    AggregateCaller *a = (AggregateCaller *)p;
#if PY_VERSION_HEX >= 0x030D0000
    if (Py_IsFinalizing()) return;
#else
    if (_Py_IsFinalizing()) return;
#endif
    PyGILState_STATE gil = PyGILState_Ensure();
    Py_XDECREF(a->factory);
    Py_XDECREF(a->what);
    PyMem_Free(a);
    PyGILState_Release(gil);
}

static PyObject *py_sqlite_register_aggregate(PyObject *self, PyObject *args) {
    unsigned long long db;
    const char *name;
    int nargs, deterministic, window;
    PyObject *factory, *what;
    if (!PyArg_ParseTuple(args, "KsippOU", &db, &name, &nargs, &deterministic, &window, &factory, &what)) return NULL;
    if (!sqlite3_api) {
        PyErr_SetString(PyExc_RuntimeError, "SQLite's API table was not loaded (see adapters.sqlite_apsw)");
        return NULL;
    }
    AggregateCaller *a = PyMem_Malloc(sizeof *a);
    if (!a) return PyErr_NoMemory();
    a->factory = Py_NewRef(factory);
    a->what = Py_NewRef(what);
    a->nargs = nargs;
    int flags = SQLITE_UTF8 | (deterministic ? SQLITE_DETERMINISTIC : 0), rc;
    const char *message = NULL;
    Py_BEGIN_ALLOW_THREADS /* SQLite may wait for the connection's mutex (see py_sqlite_register) */
    if (window)
        rc = sqlite3_create_window_function((sqlite3 *)(uintptr_t)db, name, nargs, flags, a, aggregate_xstep,
                                            aggregate_xfinal, aggregate_xvalue, aggregate_xinverse, aggregate_destroy);
    else
        rc = sqlite3_create_function_v2((sqlite3 *)(uintptr_t)db, name, nargs, flags, a, NULL, aggregate_xstep,
                                        aggregate_xfinal, aggregate_destroy);
    if (rc != SQLITE_OK) message = sqlite3_errmsg((sqlite3 *)(uintptr_t)db);
    Py_END_ALLOW_THREADS
    if (rc != SQLITE_OK) { /* SQLite called aggregate_destroy already */
        PyErr_Format(PyExc_RuntimeError, "SQLite refused to create `%s`: %s", name, message ? message : "?");
        return NULL;
    }
    Py_RETURN_NONE;
}
#endif /* HAVE_SQLITE */

static PyObject *py_buffer_step(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    return buffer_row(args, nargs, 0);
}

static PyObject *py_buffer_inverse(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    return buffer_row(args, nargs, 1);
}

static PyObject *RowBuffer_flush(RowBuffer *b, PyObject *unused) {
    if (buffer_flush(b)) return NULL;
    Py_RETURN_NONE;
}

static void buffer_free_columns(RowBuffer *b) {
    for (int i = 0; i < MAX_PARAMS; i++) {
        BufferColumn *col = &b->columns[i];
        PyMem_RawFree(col->values);
        PyMem_RawFree(col->offsets);
        PyMem_RawFree(col->data);
        PyMem_RawFree(col->validity);
        memset(col, 0, sizeof *col);
    }
}

static int RowBuffer_init(RowBuffer *self, PyObject *args, PyObject *kw) {
    PyObject *codes, *fold, *slow;
    int strict;
    Py_ssize_t capacity;
    if (!PyArg_ParseTuple(args, "OpOOn", &codes, &strict, &fold, &slow, &capacity)) return -1;
    if (capacity < 1 || capacity > (1 << 20) || self->nargs) {
        PyErr_SetString(PyExc_ValueError, "RowBuffer takes a capacity of 1..2^20, once");
        return -1;
    }
    buffer_free_columns(self); /* from an earlier init that failed part-way */
    int n = parse_codes(codes, self->codes);
    if (n < 0) return -1;
    for (int i = 0; i < n; i++) {
        BufferColumn *col = &self->columns[i];
        int code = self->codes[i];
        size_t per_row = is_varlen(code) ? 0 : code == ABI_BOOL ? 1 : (size_t)type_width(code);
        /* Raw allocations: SQLite's native aggregate steps pack rows without the GIL. */
        col->validity = PyMem_RawMalloc((size_t)(capacity + 7) / 8);
        if (per_row) col->values = PyMem_RawMalloc((size_t)capacity * per_row);
        else if ((col->offsets = PyMem_RawMalloc((size_t)(capacity + 1) * 4))) col->offsets[0] = 0;
        if (!col->validity || (per_row ? !col->values : !col->offsets)) {
            buffer_free_columns(self);
            PyErr_NoMemory();
            return -1;
        }
    }
    self->nargs = n;
    self->strict = strict;
    self->capacity = capacity;
    buffer_reset(self);
    Py_INCREF(fold); Py_XSETREF(self->fold, fold);
    Py_INCREF(slow); Py_XSETREF(self->slow, slow);
    return 0;
}

static int RowBuffer_traverse(RowBuffer *self, visitproc visit, void *arg) {
    Py_VISIT(self->fold);
    Py_VISIT(self->slow);
    return 0;
}

static int RowBuffer_clear(RowBuffer *self) {
    Py_CLEAR(self->fold);
    Py_CLEAR(self->slow);
    return 0;
}

static void RowBuffer_dealloc(RowBuffer *self) {
    PyObject_GC_UnTrack(self);
    RowBuffer_clear(self);
    buffer_free_columns(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *RowBuffer_get_pending(RowBuffer *self, void *closure) { return PyLong_FromSsize_t(self->pending); }

static PyGetSetDef RowBuffer_getset[] = {
    {"pending", (getter)RowBuffer_get_pending, NULL, "rows packed but not yet folded in", NULL},
    {NULL},
};

static PyMethodDef RowBuffer_methods[] = {
    {"flush", (PyCFunction)RowBuffer_flush, METH_NOARGS, "fold the pending rows in now"},
    {NULL},
};

static PyTypeObject RowBufferType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "wasmudf._speedups.RowBuffer",
    .tp_basicsize = sizeof(RowBuffer),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "RowBuffer(param_codes, strict, fold, slow, capacity): an aggregate's rows, packed as they come",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)RowBuffer_init,
    .tp_dealloc = (destructor)RowBuffer_dealloc,
    .tp_traverse = (traverseproc)RowBuffer_traverse,
    .tp_clear = (inquiry)RowBuffer_clear,
    .tp_getset = RowBuffer_getset,
    .tp_methods = RowBuffer_methods,
};

/* ---- the type and the module's entries ---------------------------------------------- */

static int RowCaller_init(RowCaller *self, PyObject *args, PyObject *kw) {
    PyObject *bind, *fallback, *what, *codes, *interrupt_check = Py_None;
    int strict, rcode;
    long long output_limit = -1;
    if (!PyArg_ParseTuple(args, "OOUOpi|OL", &bind, &fallback, &what, &codes, &strict, &rcode, &interrupt_check,
                          &output_limit))
        return -1;
    if (!is_type_code(rcode)) {
        PyErr_Format(PyExc_ValueError, "%d is not an ABI type code", rcode);
        return -1;
    }
    int n = parse_codes(codes, self->codes);
    if (n < 0) return -1;
    self->nargs = n;
    self->strict = strict;
    self->rcode = rcode;
    self->output_limit = output_limit;
    Py_INCREF(interrupt_check); Py_XSETREF(self->interrupt_check, interrupt_check);
    Py_INCREF(bind); Py_XSETREF(self->bind, bind);
    Py_INCREF(fallback); Py_XSETREF(self->fallback, fallback);
    Py_INCREF(what); Py_XSETREF(self->what, what);
    self->vectorcall = (vectorcallfunc)RowCaller_vectorcall;
    return 0;
}

static int RowCaller_traverse(RowCaller *self, visitproc visit, void *arg) {
    Py_VISIT(self->bind);
    Py_VISIT(self->fallback);
    Py_VISIT(self->what);
    Py_VISIT(self->interrupt_check);
    Py_VISIT((PyObject *)self->core);
    return 0;
}

static int RowCaller_clear(RowCaller *self) {
    Py_CLEAR(self->bind);
    Py_CLEAR(self->fallback);
    Py_CLEAR(self->what);
    Py_CLEAR(self->interrupt_check);
    Py_CLEAR(self->core);
    return 0;
}

static void RowCaller_dealloc(RowCaller *self) {
    PyObject_GC_UnTrack(self);
    RowCaller_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *RowCaller_get_native(RowCaller *self, void *closure) { return PyBool_FromLong(self->db != NULL); }

static PyGetSetDef RowCaller_getset[] = {
    {"native", (getter)RowCaller_get_native, NULL, "registered with SQLite directly (sqlite_register)", NULL},
    {NULL},
};

static PyTypeObject RowCallerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "wasmudf._speedups.RowCaller",
    .tp_basicsize = sizeof(RowCaller),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "RowCaller(bind, fallback, name, param_codes, strict, return_code, interrupt_check=None, output_limit=-1): a per-row SQL function",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)RowCaller_init,
    .tp_dealloc = (destructor)RowCaller_dealloc,
    .tp_traverse = (traverseproc)RowCaller_traverse,
    .tp_clear = (inquiry)RowCaller_clear,
    .tp_getset = RowCaller_getset,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(RowCaller, vectorcall),
};

static PyMethodDef row_methods[] = {
    {"buffer_step", (PyCFunction)(void (*)(void))py_buffer_step, METH_FASTCALL,
     "buffer_step(row_buffer, *values): an aggregate's step, packing the row"},
    {"buffer_inverse", (PyCFunction)(void (*)(void))py_buffer_inverse, METH_FASTCALL,
     "buffer_inverse(row_buffer, *values): a window's inverse, packing the row"},
#if HAVE_SQLITE
    {"sqlite_ready", py_sqlite_ready, METH_NOARGS, "sqlite_ready() -> whether SQLite's API table (3.41+) is loaded"},
    {"sqlite_register", py_sqlite_register, METH_VARARGS,
     "sqlite_register(db_address, name, deterministic, row_caller): create the SQL function in SQLite directly"},
    {"sqlite_register_aggregate", py_sqlite_register_aggregate, METH_VARARGS,
     "sqlite_register_aggregate(db_address, name, nargs, deterministic, window, factory, what): an aggregate "
     "(window) function in SQLite directly; factory() makes a group as apsw's tuple form does"},
#endif
    {NULL},
};

int sqlite_add_to_module(PyObject *module) {
    if (PyType_Ready(&RowCallerType) < 0 || PyType_Ready(&RowBufferType) < 0) return -1;
    if (PyModule_AddObjectRef(module, "RowCaller", (PyObject *)&RowCallerType) < 0 ||
        PyModule_AddObjectRef(module, "RowBuffer", (PyObject *)&RowBufferType) < 0)
        return -1;
    return PyModule_AddFunctions(module, row_methods);
}
