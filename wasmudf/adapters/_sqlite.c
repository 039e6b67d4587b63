/*
 * Per-row SQL functions for SQLite: a scalar whose parameters and result are fixed-width.
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
 * Both scalar paths share one frame call (row_call). A row neither handles itself (a NULL for a
 * `called` function, a value of the wrong type, the frame block due for renewal) goes to the
 * Python path, ScalarFunction.call_row, which explains the problem. The native path reports
 * a failure the way apsw reports a Python function's: the exception is left set on the
 * calling thread, where apsw raises it when the statement fails.
 */
#include "../_speedups.h"
#include <stddef.h>

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
    PyObject *interrupt_check; /* None, or the connection's "was I interrupted" */
    void *db;           /* the sqlite3 connection once registered natively, else NULL */
    Core *core;         /* bound instance, or NULL */
    void *func;
    unsigned long thread;
} RowCaller;

static PyTypeObject RowCallerType;

/* ---- one row's frame: [nargs descriptors][out descriptor][an 8-byte slot per argument]
   [out validity, 8 bytes][out value, 8 bytes] ----------------------------------------- */

static uint32_t slots_at(int n) { return DESC * (uint32_t)(n + 1); }
static uint32_t validity_at(int n) { return slots_at(n) + 8 * (uint32_t)n; }
static uint32_t value_at(int n) { return validity_at(n) + 8; }
static uint32_t frame_size(int n) { return value_at(n) + 8; }

enum { ROW_CALL = 1, ROW_STATUS, ROW_DESCRIPTOR };

typedef struct {
    int kind;
    void *err, *trap;   /* ROW_CALL */
    uint32_t status;    /* ROW_STATUS */
    int field;          /* ROW_DESCRIPTOR: which field the guest changed */
    uint32_t want, got;
} RowFailure;

/* Call the guest on one row of argument slots in `block`. Touches no Python object (the
   native path runs it without the GIL): 0 with the result's raw 8 bytes in *value, or -1
   with what went wrong in *failure, for row_report. */
static int row_call(RowCaller *r, Core *c, uint32_t block, const uint64_t *slots, int *is_null, uint64_t *value,
                    RowFailure *failure) {
    int n = r->nargs;
    uint8_t *frame = c->base + block;
    for (int i = 0; i < n; i++)
        put_desc(frame + DESC * i, r->codes[i], 1, 0, 0, 0, block + slots_at(n) + 8 * (uint32_t)i, type_width(r->codes[i]));
    uint32_t want[8] = {(uint32_t)r->rcode, 1, 0, block + validity_at(n), 0, block + value_at(n),
                        (uint32_t)type_width(r->rcode), 0};
    put_desc(frame + DESC * n, want[0], want[1], want[2], want[3], want[4], want[5], want[6]);
    /* Word stores: a memcpy/memset of a runtime size becomes `rep movs`, slow to start. */
    for (int i = 0; i < n; i++) put_u64(frame + slots_at(n) + 8 * i, slots[i]);
    put_u64(frame + validity_at(n), 0xFF);
    put_u64(frame + value_at(n), 0);
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
    /* The guest may write only null_count (ABI §5); anything else it changed is a lie. */
    for (int f = 0; f < 8; f++) {
        uint32_t got = get_u32(frame + DESC * n + 4 * f);
        if (f != 2 && got != want[f]) {
            failure->kind = ROW_DESCRIPTOR;
            failure->field = f;
            failure->want = want[f];
            failure->got = got;
            return -1;
        }
    }
    *is_null = !(frame[validity_at(n)] & 1);
    memcpy(value, frame + value_at(n), 8);
    return 0;
}

/* Raise the error for a failed row_call (GIL held); returns -1. */
static int row_report(RowCaller *r, Core *c, const RowFailure *failure) {
    switch (failure->kind) {
    case ROW_CALL: return report_call_failure(c, r->what, failure->err, failure->trap);
    case ROW_STATUS: return fail(c, "status", r->what, PyLong_FromUnsignedLong(failure->status));
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

/* ---- one value into a parameter's slot (row frames and RowBuffer columns alike) --------- */

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
static int is_fixed_width_code(int code) { return type_width(code) != 0; }
/* What a RowBuffer packs (a bool column would have to be a bitmap). */
static int is_packable_code(int code) { return code != ABI_BOOL && is_fixed_width_code(code); }

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

/* A type-code sequence into out[]: its length (1..MAX_PARAMS), or -1 with an exception
   when it is not one or `accept` refuses a code. */
static int parse_codes(PyObject *codes, int (*accept)(int), const char *refusal, int *out) {
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
        if (!accept((int)code)) {
            Py_DECREF(seq);
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, refusal);
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

static PyObject *raw_to_python(int rcode, uint64_t raw) {
    switch (rcode) {
    case ABI_BOOL: return PyBool_FromLong((raw & 0xFF) != 0);
    case ABI_INT32: { int32_t x; memcpy(&x, &raw, 4); return PyLong_FromLong(x); }
    case ABI_INT64: { int64_t x; memcpy(&x, &raw, 8); return PyLong_FromLongLong(x); }
    case ABI_FLOAT32: { float x; memcpy(&x, &raw, 4); return PyFloat_FromDouble(x); }
    default: { double x; memcpy(&x, &raw, 8); return PyFloat_FromDouble(x); }
    }
}

/* One row whose slots are filled, with the GIL: bind, renew the block if due, call. */
static PyObject *row_call_python(RowCaller *r, const uint64_t *slots) {
    if (!r->core || r->core->dead || r->thread != PyThread_get_thread_ident()) {
        if (row_bind(r)) return NULL;
    }
    Core *c = r->core;
    Py_INCREF(c); /* a failure may unbind it */
    PyObject *result = NULL;
    uint32_t block;
    if (core_before_call(c) || frame_block(c, frame_size(r->nargs), 0, r->what, &block)) goto done;
    SavedCheck saved;
    RowFailure failure;
    int is_null;
    uint64_t value;
    arm_interrupt(r, c, &saved);
    int rc = row_call(r, c, block, slots, &is_null, &value, &failure);
    disarm_interrupt(c, &saved);
    if (rc) row_report(r, c, &failure);
    else result = is_null ? Py_NewRef(Py_None) : raw_to_python(r->rcode, value);
done:
    Py_DECREF(c);
    return result;
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
    uint64_t slots[MAX_PARAMS];
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *v = args[i];
        slots[i] = 0;
        if (v == Py_None) {
            if (r->strict) Py_RETURN_NONE;
            return to_fallback(r, args, nargsf);
        }
        if (!put_python(r->codes[i], v, (uint8_t *)&slots[i])) return to_fallback(r, args, nargsf);
    }
    return row_call_python(r, slots);
}

/* ---- the native SQLite path --------------------------------------------------------- */

#if HAVE_SQLITE

enum { SLOTS_READY, SLOTS_PYTHON, SLOTS_NULL };

/* Fill the slots from SQLite's values in one pass: READY; NULL for a strict function given
   a NULL (its result is NULL); PYTHON when the row needs the Python path. */
static int sqlite_slots(RowCaller *r, sqlite3_value **argv, uint64_t *slots) {
    int saw_null = 0;
    for (int i = 0; i < r->nargs; i++) {
        int t = sqlite3_value_type(argv[i]), code = r->codes[i];
        uint8_t *dst = (uint8_t *)&slots[i];
        slots[i] = 0;
        if (t == SQLITE_NULL) saw_null = 1;
        else if (is_integer_code(code)) {
            if (t != SQLITE_INTEGER || !put_integer(code, sqlite3_value_int64(argv[i]), dst)) return SLOTS_PYTHON;
        } else if (t == SQLITE_FLOAT) put_real(code, sqlite3_value_double(argv[i]), dst);
        else if (t == SQLITE_INTEGER) put_real(code, (double)sqlite3_value_int64(argv[i]), dst); /* as float(int) */
        else return SLOTS_PYTHON;
    }
    return !saw_null ? SLOTS_READY : r->strict ? SLOTS_NULL : SLOTS_PYTHON;
}

static void sqlite_result_raw(sqlite3_context *ctx, int rcode, uint64_t raw) {
    switch (rcode) {
    case ABI_BOOL: sqlite3_result_int64(ctx, (raw & 0xFF) != 0); break;
    case ABI_INT32: { int32_t x; memcpy(&x, &raw, 4); sqlite3_result_int64(ctx, x); break; }
    case ABI_INT64: { int64_t x; memcpy(&x, &raw, 8); sqlite3_result_int64(ctx, x); break; }
    case ABI_FLOAT32: { float x; memcpy(&x, &raw, 4); sqlite3_result_double(ctx, x); break; }
    default: { double x; memcpy(&x, &raw, 8); sqlite3_result_double(ctx, x); break; }
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
    if (!result) goto done;
    if (result == Py_None) sqlite3_result_null(ctx);
    else if (PyFloat_Check(result)) sqlite3_result_double(ctx, PyFloat_AS_DOUBLE(result));
    else if (PyLong_Check(result)) { /* bool included */
        long long x = PyLong_AsLongLong(result);
        if (!(x == -1 && PyErr_Occurred())) sqlite3_result_int64(ctx, x);
    } else
        PyErr_Format(PyExc_TypeError, "`%U` returned a %s", r->what, Py_TYPE(result)->tp_name);
done:
    if (PyErr_Occurred()) sqlite_result_exception(ctx);
    Py_XDECREF(result);
    for (int i = 0; i < made; i++) Py_DECREF(args[i]);
}

/* SQLite's xFunc. The common row (arguments of the declared types, this thread's instance
   bound, its frame block still good) runs without the GIL. */
static void sqlite_row(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
    RowCaller *r = (RowCaller *)sqlite3_user_data(ctx);
    uint64_t slots[MAX_PARAMS];
    int filled = argc == r->nargs ? sqlite_slots(r, argv, slots) : SLOTS_PYTHON;
    if (filled == SLOTS_NULL) {
        sqlite3_result_null(ctx);
        return;
    }
    Core *c = r->core;
    uint32_t block;
    /* r->core and c->dead change only with the GIL, on this connection's thread: SQLite
       serializes the calls of one connection. */
    if (filled != SLOTS_READY || !c || c->dead ||
        r->thread != PyThread_get_thread_ident() || c->before_call != Py_None ||
        !frame_block_reusable(c, frame_size(r->nargs), &block)) {
        PyGILState_STATE gil = PyGILState_Ensure();
        sqlite_row_python(r, ctx, argc, argv);
        PyGILState_Release(gil);
        return;
    }
    SavedCheck saved;
    RowFailure failure;
    int is_null;
    uint64_t value;
    arm_interrupt(r, c, &saved);
    int rc = row_call(r, c, block, slots, &is_null, &value, &failure);
    disarm_interrupt(c, &saved);
    if (rc == 0) {
        if (is_null) sqlite3_result_null(ctx);
        else sqlite_result_raw(ctx, r->rcode, value);
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
        PyErr_SetString(PyExc_RuntimeError, "SQLite's API table was not loaded (see adapters.sqlite)");
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

typedef struct {
    PyObject_HEAD
    int nargs;
    int strict;
    int codes[MAX_PARAMS];
    uint8_t *columns[MAX_PARAMS]; /* capacity values of each parameter, little-endian */
    Py_ssize_t capacity, pending;
    int inverse;      /* the pending rows are removals (a window's inverse), not additions */
    PyObject *fold;   /* fold(inverse, [bytes per column], rows): a batch to the guest */
    PyObject *slow;   /* slow(inverse, *values): one row through the Python path */
} RowBuffer;

static PyTypeObject RowBufferType;

static int buffer_flush(RowBuffer *b) {
    Py_ssize_t n = b->pending;
    if (!n || !b->fold) return 0;
    b->pending = 0; /* a failing batch is reported, not retried */
    PyObject *columns = PyList_New(b->nargs);
    if (!columns) return -1;
    for (int i = 0; i < b->nargs; i++) {
        PyObject *data = PyBytes_FromStringAndSize((const char *)b->columns[i], n * type_width(b->codes[i]));
        if (!data) { Py_DECREF(columns); return -1; }
        PyList_SET_ITEM(columns, i, data);
    }
    PyObject *r = PyObject_CallFunction(b->fold, "ONn", b->inverse ? Py_True : Py_False, columns, n);
    if (!r) return -1;
    Py_DECREF(r);
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
        /* Packed into the next row's place, which counts only once every value fitted. */
        int saw_null = 0, packed = 1;
        for (Py_ssize_t i = 0; packed && i < count; i++) {
            int code = b->codes[i];
            if (values[i] == Py_None) saw_null = 1;
            else packed = put_python(code, values[i], b->columns[i] + b->pending * type_width(code));
        }
        if (packed && saw_null && b->strict) Py_RETURN_NONE; /* a strict aggregate skips the row */
        if (packed && !saw_null) {
            if (++b->pending == b->capacity && buffer_flush(b)) return NULL;
            Py_RETURN_NONE;
        }
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

static int RowBuffer_init(RowBuffer *self, PyObject *args, PyObject *kw) {
    PyObject *codes, *fold, *slow;
    int strict;
    Py_ssize_t capacity;
    if (!PyArg_ParseTuple(args, "OpOOn", &codes, &strict, &fold, &slow, &capacity)) return -1;
    if (capacity < 1 || capacity > (1 << 20) || self->nargs) {
        PyErr_SetString(PyExc_ValueError, "RowBuffer takes a capacity of 1..2^20, once");
        return -1;
    }
    int n = parse_codes(codes, is_packable_code, "RowBuffer packs int32/int64/float32/float64", self->codes);
    if (n < 0) return -1;
    for (int i = 0; i < n; i++) {
        PyMem_Free(self->columns[i]); /* from an earlier init that failed part-way */
        self->columns[i] = PyMem_Malloc((size_t)capacity * type_width(self->codes[i]));
        if (!self->columns[i]) { PyErr_NoMemory(); return -1; }
    }
    self->nargs = n;
    self->strict = strict;
    self->capacity = capacity;
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
    for (int i = 0; i < MAX_PARAMS; i++) PyMem_Free(self->columns[i]);
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
    if (!PyArg_ParseTuple(args, "OOUOpi|O", &bind, &fallback, &what, &codes, &strict, &rcode, &interrupt_check))
        return -1;
    if (type_width(rcode) == 0) {
        PyErr_SetString(PyExc_ValueError, "RowCaller handles a fixed-width result only");
        return -1;
    }
    int n = parse_codes(codes, is_fixed_width_code, "RowCaller handles fixed-width parameters only", self->codes);
    if (n < 0) return -1;
    self->nargs = n;
    self->strict = strict;
    self->rcode = rcode;
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
    .tp_doc = "RowCaller(bind, fallback, name, param_codes, strict, return_code, interrupt_check=None): a per-row SQL function",
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
