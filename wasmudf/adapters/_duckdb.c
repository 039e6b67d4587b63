/*
 * DuckDB natively: wasmudf functions registered through DuckDB's C extension API (v1), called
 * on DuckDB's worker threads without the GIL.
 *
 * Getting in: the extension file wasmudf.duckdb_extension (adapters/_duckdb_shim.c) is LOADed
 * into a database; its entry point imports this module and calls duckdb_attach, which keeps
 * DuckDB's function table and opens one connection to that database, a Registrar. Python
 * (adapters/duckdb_native.py) registers functions through it and closes it before the
 * database closes: a connection keeps its database open.
 *
 * Scalars: DuckDB calls a function on several worker threads at once, a vector (<= 2048 rows)
 * at a time, each with its own local state (ThreadBinding). A thread binds its own instance
 * (InstancePool keeps one per OS thread) once, with the GIL; from then on a vector is copied
 * into the instance's frame, run, checked and copied out without the GIL. Only a failure, a
 * fresh frame block and the instance's before_call hook take it.
 *
 * Aggregates: a DuckDB aggregate whose state is its group's rows, packed as they arrive in the
 * ABI's own layout (AggRows); finalize folds them in the finalizing thread's instance
 * (__init, __update in batches, __finalize). DuckDB itself gives DISTINCT, FILTER, ORDER BY,
 * parallel combines (the rows are concatenated) and window frames (its segment tree combines
 * states). A group may collect at most DuckFunction.group_limit bytes.
 *
 * Every address, length and offset the guest hands back is checked (check_output) before it
 * is read, and text results are checked to be UTF-8 before DuckDB sees them.
 */
#include "../_speedups.h"

#ifndef WASMUDF_DUCKDB

int duckdb_add_to_module(PyObject *module) { return 0; }

#else

#include <duckdb_extension.h>
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

/* DuckDB's function table: every duckdb_* call below goes through it (duckdb_extension.h
   defines each name as a member of duckdb_ext_api). Copied at the first LOAD; DuckDB's table
   is static, so it is the same for every database of the process. */
duckdb_ext_api_v1 duckdb_ext_api;
static PyObject *attached; /* Registrars made by LOADs, not yet taken by Python */
static PyTypeObject RegistrarType, DuckFunctionType;

#define BATCH_ROWS 65536 /* rows per __update call (ABI: at most 65,536) */

static int finalizing(void) {
#if PY_VERSION_HEX >= 0x030D0000
    return Py_IsFinalizing();
#else
    return _Py_IsFinalizing();
#endif
}

/* ---- DuckFunction: what DuckDB's callbacks know of a function ------------------------- */

/* KIND_LIST_FORM: an aggregate's `f_list(list)` scalar, each row's list one group (the
   Python path's form, so the same SQL runs on both paths). */
enum { KIND_SCALAR = 0, KIND_AGGREGATE = 1, KIND_LIST_FORM = 2, KIND_TABLE = 3 };

#define MEMO_KEY_MAX 512   /* one row's arguments, serialized; longer rows are not remembered */
#define MEMO_TTL_S 10.0

typedef struct {
    PyObject_HEAD
    PyObject *what;   /* the SQL name, for errors */
    PyObject *bind;   /* bind() -> (Core, export addresses...) of the calling thread's instance */
    PyObject *interrupted; /* the database's interrupt counter (an aligned uint64 buffer), or None */
    Py_buffer interrupt_view;
    int64_t token;         /* the database's, for its connections' interrupt slots; 0: none */
    int kind;
    int nargs, codes[MAX_PARAMS], rcode;
    int strict;
    long long output_limit; /* Limits.output_bytes; < 0: none */
    long long group_limit;  /* aggregates: the most bytes of rows one group may collect */
    int movable;            /* aggregates: states move between instances (ABI §5) */
    int ncols, col_codes[MAX_PARAMS]; /* a table function's output columns */
    char col_names[MAX_PARAMS][72];
    long long table_rows;   /* Limits.table_rows; < 0: none */
    uint64_t generation;    /* unique per function: what a thread's cached binding is for */
    volatile int enabled;   /* 0 once unregistered: calls fail */
    char unregistered_text[160]; /* the error then */
    int deterministic;
    /* The last failure of a one-row call (see remember_failure) and when it happened. */
    pthread_mutex_t memo_lock;
    uint8_t memo_key[MEMO_KEY_MAX];
    size_t memo_len;
    char *memo_text;
    double memo_at;
} DuckFunction;

static uint64_t next_generation = 1;

static void release_reference(void *p) {
    if (finalizing()) return; /* the process is ending; nothing to give back */
    PyGILState_STATE gil = PyGILState_Ensure();
    Py_DECREF((PyObject *)p);
    PyGILState_Release(gil);
}

/* One thread's instance for one function: its export addresses (a scalar's one; an
   aggregate's __init, __update, __finalize, then __merge, __serialize, __deserialize when it
   moves states) and, for an aggregate, init_failed(part), which raises the error for an
   __init or __deserialize that returned 0. */
typedef struct {
    Core *core;
    void *funcs[6];
    PyObject *init_failed;
    unsigned long thread;
    uint64_t generation;
    const volatile uint64_t *interrupt; /* the counter a call watches, or NULL */
} ThreadBinding;

static void binding_clear(ThreadBinding *b) {
    Py_CLEAR(b->core);
    Py_CLEAR(b->init_failed);
    b->generation = 0;
}

/* Bind this thread's instance (GIL held); -1 with an exception. */
static int binding_bind(DuckFunction *f, ThreadBinding *b) {
    PyObject *bound = PyObject_CallNoArgs(f->bind);
    if (!bound) return -1;
    PyObject *core, *init_failed = Py_None;
    unsigned long long a[6] = {0};
    int ok = PyArg_ParseTuple(bound, "O!K|KKOKKK", &CoreType, &core, &a[0], &a[1], &a[2], &init_failed, &a[3], &a[4],
                              &a[5]);
    if (ok) {
        binding_clear(b);
        b->core = (Core *)Py_NewRef(core);
        b->init_failed = Py_NewRef(init_failed);
        for (int i = 0; i < 6; i++) b->funcs[i] = (void *)(uintptr_t)a[i];
        b->thread = PyThread_get_thread_ident();
        b->generation = f->generation;
    }
    Py_DECREF(bound);
    return ok ? 0 : -1;
}

static int binding_current(DuckFunction *f, const ThreadBinding *b) {
    return b->core && !b->core->dead && b->generation == f->generation && b->thread == PyThread_get_thread_ident();
}

/* The pending exception as DuckDB's error text, "<class>: <message>" (GIL held; clears it).
   malloc'ed: the caller frees it after handing it to DuckDB, which copies it. */
static char *exception_text(void) {
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    const char *name = type ? ((PyTypeObject *)type)->tp_name : "Error";
    const char *dot = strrchr(name, '.');
    PyObject *msg = value ? PyObject_Str(value) : NULL;
    const char *text = msg ? PyUnicode_AsUTF8(msg) : NULL;
    if (!text) PyErr_Clear();
    size_t n = strlen(name) + (text ? strlen(text) : 1) + 3;
    char *out = malloc(n);
    if (out) snprintf(out, n, "%s: %s", dot ? dot + 1 : name, text ? text : "?");
    Py_XDECREF(msg);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    return out;
}

typedef void (*set_error_fn)(duckdb_function_info info, const char *error);

/* Fail the statement with the pending exception (GIL held); the text, for the caller to
   free (NULL when out of memory). */
static char *raise_to_duckdb_text(duckdb_function_info info, set_error_fn set_error) {
    char *text = exception_text();
    set_error(info, text ? text : "wasmudf: out of memory while reporting an error");
    return text;
}

static void raise_to_duckdb(duckdb_function_info info, set_error_fn set_error) {
    free(raise_to_duckdb_text(info, set_error));
}

/* ---- interruption ---------------------------------------------------------------------

   A running call stops within one epoch tick once the counter it watches moves past the
   value it started with. A scalar watches its connection's counter, found by (database
   token, connection id) when a thread's state is made (DuckDB gives a scalar's init the
   client context); an aggregate's callbacks get no context, so it watches its database's.
   wasmudf bumps both when a connection it knows is interrupted (DuckDB's own interrupt()
   included: adapters/duckdb_native.py hooks it). */

#define INTERRUPT_SLOTS 4096
typedef struct {
    int64_t token;         /* 0: never used; -1: freed (a probe chain goes on past it) */
    uint64_t connection;
    volatile uint64_t count;
} InterruptSlot;
static InterruptSlot interrupt_slots[INTERRUPT_SLOTS];
static pthread_mutex_t interrupt_lock = PTHREAD_MUTEX_INITIALIZER;

/* The slot of (token, connection), claimed when `claim`; NULL when absent (or the table is
   full: that connection's calls then stop only at their time limit). */
static InterruptSlot *interrupt_slot(int64_t token, uint64_t connection, int claim) {
    uint64_t h = ((uint64_t)token * 0x9E3779B97F4A7C15ull) ^ (connection * 0xC2B2AE3D27D4EB4Full);
    InterruptSlot *found = NULL, *reusable = NULL;
    pthread_mutex_lock(&interrupt_lock);
    for (int probe = 0; probe < INTERRUPT_SLOTS; probe++) {
        InterruptSlot *slot = &interrupt_slots[(h + probe) % INTERRUPT_SLOTS];
        if (slot->token == token && slot->connection == connection) { found = slot; break; }
        if (slot->token == -1 && !reusable) reusable = slot;
        if (slot->token == 0) {
            if (!reusable) reusable = slot;
            break;
        }
    }
    if (!found && claim && reusable) {
        reusable->connection = connection;
        reusable->token = token;
        found = reusable;
    }
    pthread_mutex_unlock(&interrupt_lock);
    return found;
}

typedef struct {
    const volatile uint64_t *counter;
    uint64_t started;
} CallInterrupt;

static int call_interrupted(void *arg) {
    CallInterrupt *ci = (CallInterrupt *)arg;
    return __atomic_load_n(ci->counter, __ATOMIC_RELAXED) != ci->started;
}

/* core_call, interruptible through `counter` when there is one. */
static int guarded_call(const volatile uint64_t *counter, Core *c, void *func, uint32_t a0, uint32_t a1, uint32_t a2,
                        uint32_t *result, void **err, void **trap) {
    if (!counter) return core_call(c, func, a0, a1, a2, result, err, trap);
    CallInterrupt ci = {counter, __atomic_load_n(counter, __ATOMIC_RELAXED)};
    native_check_fn saved = c->native_check;
    void *saved_arg = c->native_check_arg;
    c->native_check = call_interrupted;
    c->native_check_arg = &ci;
    int rc = core_call(c, func, a0, a1, a2, result, err, trap);
    c->native_check = saved;
    c->native_check_arg = saved_arg;
    return rc;
}

static PyObject *py_duckdb_interrupt(PyObject *self, PyObject *args) {
    long long token;
    unsigned long long connection;
    if (!PyArg_ParseTuple(args, "LK", &token, &connection)) return NULL;
    InterruptSlot *slot = token > 0 ? interrupt_slot(token, connection, 1) : NULL;
    if (slot) __atomic_add_fetch(&slot->count, 1, __ATOMIC_RELAXED);
    Py_RETURN_NONE;
}

static PyObject *py_duckdb_forget_connection(PyObject *self, PyObject *args) {
    long long token;
    unsigned long long connection;
    if (!PyArg_ParseTuple(args, "LK", &token, &connection)) return NULL;
    /* The connection closed: nothing runs for it any more, so its slot can serve another. */
    InterruptSlot *slot = token > 0 ? interrupt_slot(token, connection, 0) : NULL;
    if (slot) {
        pthread_mutex_lock(&interrupt_lock);
        slot->token = -1;
        slot->count = 0;
        pthread_mutex_unlock(&interrupt_lock);
    }
    Py_RETURN_NONE;
}

/* ---- one call's frame from DuckDB vectors ---------------------------------------------- */

typedef struct {
    int code;
    const uint8_t *data;       /* DuckDB's values: fixed width, or duckdb_string_t */
    const uint64_t *validity;  /* NULL: every row valid */
    uint64_t at_validity, at_offsets, at_values; /* in the frame */
    uint32_t validity_size, offsets_size, values_size, null_count;
} VectorColumn;

static inline int row_is_valid(const uint64_t *validity, idx_t row) {
    return !validity || (validity[row >> 6] >> (row & 63)) & 1;
}

static inline const uint8_t *string_bytes(const duckdb_string_t *s, uint32_t *len) {
    *len = s->value.inlined.length;
    return *len <= 12 ? (const uint8_t *)s->value.inlined.inlined : (const uint8_t *)s->value.pointer.ptr;
}

static inline idx_t source_row(const uint32_t *sel, idx_t j) { return sel ? sel[j] : j; }

/* Size the frame pieces of one column over `rows` rows (sel: the DuckDB rows they are). */
static int size_vector_column(VectorColumn *col, const uint32_t *sel, idx_t rows, int strict) {
    int w = type_width(col->code);
    if (!strict && col->validity) {
        uint32_t nulls = 0;
        for (idx_t j = 0; j < rows; j++) nulls += !row_is_valid(col->validity, j);
        col->null_count = nulls;
        col->validity_size = nulls ? (uint32_t)((rows + 7) / 8) : 0;
    }
    if (!is_varlen(col->code)) {
        col->values_size = (uint32_t)(rows * w);
        return 0;
    }
    const duckdb_string_t *strings = (const duckdb_string_t *)col->data;
    uint64_t total = 0;
    for (idx_t j = 0; j < rows; j++) {
        idx_t r = source_row(sel, j);
        if (row_is_valid(col->validity, r)) total += strings[r].value.inlined.length;
    }
    if (total > 0x7fff0000u) return -1;
    col->offsets_size = (uint32_t)((rows + 1) * 4);
    col->values_size = (uint32_t)total;
    return 0;
}

static void write_vector_column(uint8_t *frame, const VectorColumn *col, const uint32_t *sel, idx_t rows) {
    if (col->validity_size) {
        /* DuckDB's validity is 64-bit words, least significant bit first: on a little-endian
           machine those are the ABI's bytes (no selection here: a strict function has none). */
        memcpy(frame + col->at_validity, col->validity, col->validity_size);
    }
    int w = type_width(col->code);
    if (!is_varlen(col->code)) {
        uint8_t *dst = frame + col->at_values;
        if (!sel) memcpy(dst, col->data, rows * w);
        else
            for (idx_t j = 0; j < rows; j++) memcpy(dst + j * w, col->data + (idx_t)sel[j] * w, w);
        return;
    }
    const duckdb_string_t *strings = (const duckdb_string_t *)col->data;
    uint8_t *offsets = frame + col->at_offsets, *dst = frame + col->at_values;
    uint32_t pos = 0;
    put_u32(offsets, 0);
    for (idx_t j = 0; j < rows; j++) {
        idx_t r = source_row(sel, j);
        if (row_is_valid(col->validity, r)) {
            uint32_t len;
            const uint8_t *bytes = string_bytes(&strings[r], &len);
            memcpy(dst + pos, bytes, len);
            pos += len;
        }
        put_u32(offsets + 4 * (j + 1), pos);
    }
}

/* ---- results into a DuckDB vector ---------------------------------------------------------- */

/* Copy `rows` checked result rows (at `out_at`, laid out as `want`) into `output`: guest row
   j goes to row dest(j) = (sel ? sel[j] : j) + offset. 0, or -1 with *f set (bad UTF-8). */
static int write_result(Core *c, const uint32_t want[8], uint32_t out_at, int rcode, idx_t rows, const uint32_t *sel,
                        idx_t offset, duckdb_vector output, OutputFailure *f) {
    const uint8_t *base = c->base;
    const uint8_t *valid_bits = base + want[3];
    /* Whole bytes first: a NULL is rare, and this runs for every vector. */
    int any_null = 0;
    for (idx_t k = 0; k < rows / 8 && !any_null; k++) any_null = valid_bits[k] != 0xFF;
    uint8_t tail_mask = (uint8_t)((1u << (rows % 8)) - 1);
    if (!any_null && (rows % 8)) any_null = (valid_bits[rows / 8] & tail_mask) != tail_mask;
    uint64_t *validity = NULL;
    if (any_null) {
        duckdb_vector_ensure_validity_writable(output);
        validity = duckdb_vector_get_validity(output);
    }
    uint8_t *out = duckdb_vector_get_data(output);
    const uint8_t *values = base + want[5];
    const uint8_t *offs = base + want[4];
    uint32_t values_at = get_u32(base + out_at + 20);
    int w = type_width(rcode);
    if (!sel && rcode != ABI_BOOL && !is_varlen(rcode)) {
        /* The common case: the guest's values are DuckDB's, row for row. */
        memcpy(out + offset * w, values, rows * w);
        for (idx_t j = 0; any_null && j < rows; j++)
            if (!((valid_bits[j >> 3] >> (j & 7)) & 1)) duckdb_validity_set_row_invalid(validity, j + offset);
        return 0;
    }
    for (idx_t j = 0; j < rows; j++) {
        idx_t row = source_row(sel, j) + offset;
        int valid = (valid_bits[j >> 3] >> (j & 7)) & 1;
        if (!valid) {
            duckdb_validity_set_row_invalid(validity, row);
            continue;
        }
        if (rcode == ABI_BOOL) out[row] = values[j] != 0;
        else if (!is_varlen(rcode)) memcpy(out + row * w, values + j * w, w);
        else {
            uint32_t start = get_u32(offs + 4 * j), end = get_u32(offs + 4 * (j + 1));
            const uint8_t *bytes = base + values_at + start; /* check_output checked the bounds */
            size_t bad;
            if (rcode == ABI_UTF8 && !utf8_valid(bytes, end - start, &bad)) {
                f->kind = OUTPUT_INVALID;
                snprintf(f->message, sizeof f->message, "a utf8 result is not valid UTF-8 (row %llu, a bad byte at offset %zu)",
                         (unsigned long long)j, bad);
                return -1;
            }
            duckdb_vector_assign_string_element_len(output, row, (const char *)bytes, end - start);
        }
    }
    return 0;
}

/* ---- scalars ------------------------------------------------------------------------------ */

static void scalar_state_free(void *p) {
    ThreadBinding *b = (ThreadBinding *)p;
    if (b->core && !finalizing()) {
        PyGILState_STATE gil = PyGILState_Ensure();
        binding_clear(b);
        PyGILState_Release(gil);
    }
    free(b);
}

static void scalar_init(duckdb_init_info info) {
    ThreadBinding *b = calloc(1, sizeof *b);
    if (!b) {
        duckdb_scalar_function_init_set_error(info, "wasmudf: out of memory");
        return;
    }
    DuckFunction *f = duckdb_scalar_function_init_get_extra_info(info);
    if (f->token > 0) {
        duckdb_client_context context = NULL;
        duckdb_scalar_function_init_get_client_context(info, &context);
        if (context) {
            InterruptSlot *slot = interrupt_slot(f->token, duckdb_client_context_get_connection_id(context), 1);
            b->interrupt = slot ? &slot->count : NULL;
            duckdb_destroy_client_context(&context);
        }
    }
    duckdb_scalar_function_init_set_state(info, b, scalar_state_free);
}

/* Make sure the binding is this thread's, run before_call and get a frame block of `size`
   bytes: without the GIL when nothing needs it. 0, or -1 with the statement failed. */
static int prepare_call(DuckFunction *f, ThreadBinding *b, uint64_t size, uint32_t *block, duckdb_function_info info,
                        set_error_fn set_error) {
    if (binding_current(f, b) && b->core->before_call == Py_None && frame_block_reusable(b->core, size, block))
        return 0;
    PyGILState_STATE gil = PyGILState_Ensure();
    int rc = 0;
    if (!binding_current(f, b)) rc = binding_bind(f, b);
    if (!rc) rc = core_before_call(b->core);
    if (!rc) rc = frame_block(b->core, size, 0, f->what, block);
    if (rc) raise_to_duckdb(info, set_error);
    PyGILState_Release(gil);
    return rc;
}

/* Report a failed guest call (err/trap), or a check that failed (f), with the GIL; returns
   the error's text for the caller to free (or NULL). */
static char *report_failure_text(DuckFunction *fn, Core *c, void *err, void *trap, const OutputFailure *f,
                                 uint32_t status, duckdb_function_info info, set_error_fn set_error) {
    PyGILState_STATE gil = PyGILState_Ensure();
    Py_INCREF(c);
    if (f) report_output_failure(c, fn->what, f);
    else if (err || trap) report_call_failure(c, fn->what, err, trap);
    else fail(c, "status", fn->what, PyLong_FromUnsignedLong(status));
    char *text = raise_to_duckdb_text(info, set_error);
    Py_DECREF(c);
    PyGILState_Release(gil);
    return text;
}

static void report_failure(DuckFunction *fn, Core *c, void *err, void *trap, const OutputFailure *f, uint32_t status,
                           duckdb_function_info info, set_error_fn set_error) {
    free(report_failure_text(fn, c, err, trap, f, status, info, set_error));
}

/* ---- one-row failures remembered ------------------------------------------------------

   DuckDB folds a deterministic call on constants while planning (and swallows its error),
   then calls it again to run the statement: a guest that loops would take its time limit
   two or three times over for `SELECT f(1)`. So the last failure of a one-row call is
   remembered for a few seconds, and the same row fails again at once with the same text
   (not an interruption: that is not the row's doing). As the Python path does. */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* One row's arguments as bytes (validity, then the value or its length and bytes); 0 when
   they do not fit in MEMO_KEY_MAX. */
static size_t row_key(const VectorColumn *cols, int nargs, idx_t r, uint8_t *key) {
    size_t n = 0;
    for (int i = 0; i < nargs; i++) {
        const VectorColumn *col = &cols[i];
        int valid = row_is_valid(col->validity, r), w = type_width(col->code);
        const uint8_t *bytes = col->data + r * w;
        uint32_t len = (uint32_t)w;
        if (is_varlen(col->code) && valid) bytes = string_bytes((const duckdb_string_t *)col->data + r, &len);
        if (n + 5 + (valid ? len : 0) > MEMO_KEY_MAX) return 0;
        key[n++] = (uint8_t)valid;
        if (!valid) continue;
        memcpy(key + n, &len, 4);
        memcpy(key + n + 4, bytes, len);
        n += 4 + len;
    }
    return n ? n : 1;
}

/* The remembered failure's text for this row (malloc'ed copy), or NULL. */
static char *remembered_failure(DuckFunction *f, const uint8_t *key, size_t len) {
    char *text = NULL;
    pthread_mutex_lock(&f->memo_lock);
    if (f->memo_text && f->memo_len == len && !memcmp(f->memo_key, key, len) && now_s() - f->memo_at < MEMO_TTL_S)
        text = strdup(f->memo_text);
    pthread_mutex_unlock(&f->memo_lock);
    return text;
}

static void remember_failure(DuckFunction *f, const uint8_t *key, size_t len, const char *text) {
    if (!text || !strncmp(text, "CallInterrupted:", 16)) return;
    char *copy = strdup(text);
    if (!copy) return;
    pthread_mutex_lock(&f->memo_lock);
    free(f->memo_text);
    f->memo_text = copy;
    memcpy(f->memo_key, key, len);
    f->memo_len = len;
    f->memo_at = now_s();
    pthread_mutex_unlock(&f->memo_lock);
}

/* A function wasmudf unregistered fails when a statement using it is planned: DuckDB cannot
   drop a function registered through its C API. */
static void scalar_bind(duckdb_bind_info info) {
    DuckFunction *f = duckdb_scalar_function_bind_get_extra_info(info);
    if (!f->enabled) duckdb_scalar_function_bind_set_error(info, f->unregistered_text);
}

static void scalar_call(duckdb_function_info info, duckdb_data_chunk input, duckdb_vector output) {
    DuckFunction *f = duckdb_scalar_function_get_extra_info(info);
    ThreadBinding *b = duckdb_scalar_function_get_state(info);
    set_error_fn set_error = duckdb_scalar_function_set_error;
    idx_t rows = duckdb_data_chunk_get_size(input);
    if (!f->enabled) {
        set_error(info, f->unregistered_text);
        return;
    }
    if (!rows) return;
    VectorColumn cols[MAX_PARAMS];
    memset(cols, 0, sizeof cols);
    int nargs = f->nargs, any_validity = 0;
    for (int i = 0; i < nargs; i++) {
        duckdb_vector v = duckdb_data_chunk_get_vector(input, i);
        cols[i].code = f->codes[i];
        cols[i].data = duckdb_vector_get_data(v);
        cols[i].validity = duckdb_vector_get_validity(v);
        any_validity |= cols[i].validity != NULL;
    }
    /* A strict function never sees a row with a NULL: those rows are NULL, the rest are
       packed together (sel: which DuckDB row each packed row is). */
    uint32_t *sel = NULL;
    idx_t n = rows;
    if (f->strict && any_validity) {
        sel = malloc(rows * sizeof *sel);
        if (!sel) {
            set_error(info, "wasmudf: out of memory");
            return;
        }
        n = 0;
        for (idx_t r = 0; r < rows; r++) {
            int valid = 1;
            for (int i = 0; i < nargs && valid; i++) valid = row_is_valid(cols[i].validity, r);
            if (valid) sel[n++] = (uint32_t)r;
        }
        for (int i = 0; i < nargs; i++) cols[i].validity = NULL; /* no NULL among the kept rows */
        if (n < rows) {
            duckdb_vector_ensure_validity_writable(output);
            uint64_t *validity = duckdb_vector_get_validity(output);
            idx_t k = 0;
            for (idx_t r = 0; r < rows; r++) {
                if (k < n && sel[k] == r) k++;
                else duckdb_validity_set_row_invalid(validity, r);
            }
        }
        if (n == 0) goto done;
        if (n == rows) { free(sel); sel = NULL; }
    }
    /* One row of a deterministic function that failed a moment ago: fail again at once. */
    uint8_t key[MEMO_KEY_MAX];
    size_t key_len = f->deterministic && rows == 1 && n == 1 ? row_key(cols, nargs, 0, key) : 0;
    if (key_len) {
        char *known = remembered_failure(f, key, key_len);
        if (known) {
            set_error(info, known);
            free(known);
            goto done;
        }
    }
    uint64_t pos = DESC * (uint64_t)(nargs + 1);
    for (int i = 0; i < nargs; i++) {
        VectorColumn *col = &cols[i];
        if (size_vector_column(col, sel, n, f->strict)) {
            set_error(info, "wasmudf: one vector's text is over 2 GiB");
            goto done;
        }
        col->at_validity = pos;
        pos = align8(pos + col->validity_size);
        col->at_offsets = pos;
        pos = align8(pos + col->offsets_size);
        col->at_values = pos;
        pos = align8(pos + col->values_size);
    }
    uint64_t out_validity = pos;
    pos = align8(pos + (n + 7) / 8);
    uint64_t out_values = pos;
    uint64_t out_size = is_varlen(f->rcode) ? (n + 1) * 4 : n * type_width(f->rcode);
    pos = align8(pos + out_size);

    uint32_t block;
    if (prepare_call(f, b, pos, &block, info, set_error)) goto done;
    Core *c = b->core;
    uint8_t *frame = c->base + block;
    for (int i = 0; i < nargs; i++) {
        VectorColumn *col = &cols[i];
        write_vector_column(frame, col, sel, n);
        if (is_varlen(col->code)) c->scratch_bytes += col->values_size;
        put_desc(frame + DESC * i, col->code, (uint32_t)n, col->null_count,
                 col->validity_size ? block + (uint32_t)col->at_validity : 0,
                 is_varlen(col->code) ? block + (uint32_t)col->at_offsets : 0, block + (uint32_t)col->at_values,
                 col->values_size);
    }
    int rcode = f->rcode;
    uint32_t want[8] = {(uint32_t)rcode, (uint32_t)n, 0, block + (uint32_t)out_validity,
                        is_varlen(rcode) ? block + (uint32_t)out_values : 0,
                        is_varlen(rcode) ? 0 : block + (uint32_t)out_values,
                        is_varlen(rcode) ? 0 : (uint32_t)out_size, 0};
    uint32_t out_at = block + DESC * (uint32_t)nargs;
    put_desc(frame + DESC * nargs, want[0], want[1], want[2], want[3], want[4], want[5], want[6]);
    memset(frame + out_validity, 0xFF, (n + 7) / 8);
    if (is_varlen(rcode)) memset(frame + out_values, 0, out_size);

    void *err, *trap;
    uint32_t status;
    OutputFailure failure;
    char *text = NULL;
    if (guarded_call(b->interrupt, c, b->funcs[0], block, (uint32_t)nargs, out_at, &status, &err, &trap))
        text = report_failure_text(f, c, err, trap, NULL, 0, info, set_error);
    else if (status)
        text = report_failure_text(f, c, NULL, NULL, NULL, status, info, set_error);
    else if (check_output(c, out_at, want, rcode, (Py_ssize_t)n, f->output_limit, &failure) ||
             write_result(c, want, out_at, rcode, n, sel, 0, output, &failure))
        text = report_failure_text(f, c, NULL, NULL, &failure, 0, info, set_error);
    if (text && key_len) remember_failure(f, key, key_len, text);
    free(text);
done:
    free(sel);
}

/* ---- aggregates: a group's rows, packed as they arrive ------------------------------------ */

typedef struct {
    uint8_t *p;
    size_t len, cap;
} Buf;

static int buf_grow(Buf *b, size_t more) {
    size_t cap = b->cap ? b->cap : 64;
    while (cap < b->len + more) cap *= 2;
    uint8_t *p = realloc(b->p, cap);
    if (!p) return -1;
    b->p = p;
    b->cap = cap;
    return 0;
}

static inline int buf_reserve(Buf *b, size_t more) { return b->len + more <= b->cap ? 0 : buf_grow(b, more); }

static inline int buf_append(Buf *b, const void *src, size_t n) {
    if (buf_reserve(b, n)) return -1;
    if (n) memcpy(b->p + b->len, src, n);
    b->len += n;
    return 0;
}

/* One parameter's rows in the ABI's layout: values (fixed width, or the bytes of utf8/binary
   with their offsets, rows + 1 of them from 0), and validity bits only once a NULL came:
   until then (and for ever, for a strict function) every row is valid. */
typedef struct {
    Buf validity, values, offsets;
    uint32_t null_count;
} AggColumn;

typedef struct {
    uint32_t rows;
    int nargs;    /* kept here: DuckDB's destructor gets no function info */
    size_t bytes; /* what the group holds, against DuckFunction.group_limit */
    AggColumn cols[];
} AggRows;

/* DuckDB's state for one group. A function that cannot move its states keeps the group's rows
   (`rows`, NULL while it has none). One that can (ABI §5: __serialize, __deserialize, __merge)
   also keeps serialized guest states (`blobs`: each a u32 length and its bytes, 4-aligned),
   and the group is the merge of them all plus the rows. Rows are folded into one blob every
   FOLD_ROWS rows, and a combine only appends the source's blobs until there are MAX_BLOBS:
   a group's memory stays bounded, and DuckDB's combines (threads, window segment trees) cost
   a copy now and a merge of small states when the group is finalized. */
typedef struct {
    AggRows *rows;
    Buf blobs;
    uint32_t nblobs, largest_blob;
} AggState;

#define FOLD_ROWS 256
#define MAX_BLOBS 32

static void agg_rows_free(AggRows *g) {
    if (!g) return;
    for (int i = 0; i < g->nargs; i++) {
        free(g->cols[i].validity.p);
        free(g->cols[i].values.p);
        free(g->cols[i].offsets.p);
    }
    free(g);
}

static AggRows *agg_rows_new(const DuckFunction *f) {
    AggRows *g = calloc(1, sizeof(AggRows) + (size_t)f->nargs * sizeof(AggColumn));
    if (!g) return NULL;
    g->nargs = f->nargs;
    for (int i = 0; i < f->nargs; i++) {
        uint32_t zero = 0;
        if (is_varlen(f->codes[i]) && buf_append(&g->cols[i].offsets, &zero, 4)) {
            agg_rows_free(g);
            return NULL;
        }
    }
    return g;
}

static inline int row_bit(const Buf *validity, uint32_t row) {
    return !validity->len || (validity->p[row / 8] >> (row % 8)) & 1;
}

/* Give the column validity bits for `rows` rows, all valid (a NULL is about to come). */
static int agg_column_materialize(AggColumn *col, uint32_t rows) {
    if (col->validity.len) return 0;
    size_t bytes = rows / 8 + 1;
    if (buf_reserve(&col->validity, bytes)) return -1;
    memset(col->validity.p, 0xFF, bytes);
    col->validity.len = bytes;
    return 0;
}

/* Make room for validity bit `row` (set valid) when the column keeps validity bits. */
static inline int agg_column_bit(AggColumn *col, uint32_t row, int valid) {
    if (valid && !col->validity.len) return 0;
    if (!valid) {
        if (agg_column_materialize(col, row)) return -1;
        col->null_count++;
    }
    if (row / 8 >= col->validity.len) {
        if (buf_reserve(&col->validity, 1)) return -1;
        col->validity.p[col->validity.len++] = 0xFF;
    }
    if (!valid) col->validity.p[row / 8] &= (uint8_t)~(1u << (row % 8));
    return 0;
}

/* Append one value (or a NULL) to a column at row `row` of the group. */
static inline int agg_column_push(AggColumn *col, int code, uint32_t row, const uint8_t *value, uint32_t len,
                                  int valid) {
    if (agg_column_bit(col, row, valid)) return -1;
    if (!is_varlen(code)) {
        int w = type_width(code);
        if (buf_reserve(&col->values, 8)) return -1;
        if (valid) memcpy(col->values.p + col->values.len, value, w);
        else memset(col->values.p + col->values.len, 0, w);
        col->values.len += w;
        return 0;
    }
    if (valid && buf_append(&col->values, value, len)) return -1;
    uint32_t end = (uint32_t)col->values.len;
    return buf_append(&col->offsets, &end, 4);
}

/* Append all of `src`'s rows to `dst`, a column at a time. */
static int agg_rows_extend(const DuckFunction *f, AggRows *dst, const AggRows *src) {
    for (int i = 0; i < f->nargs; i++) {
        const AggColumn *from = &src->cols[i];
        AggColumn *to = &dst->cols[i];
        if (from->validity.len || to->validity.len) {
            if (agg_column_materialize(to, dst->rows)) return -1;
            for (uint32_t r = 0; r < src->rows; r++)
                if (agg_column_bit(to, dst->rows + r, row_bit(&from->validity, r))) return -1;
        }
        if (buf_append(&to->values, from->values.p, from->values.len)) return -1;
        if (is_varlen(f->codes[i])) {
            uint32_t base = get_u32(to->offsets.p + to->offsets.len - 4);
            if (buf_reserve(&to->offsets, (size_t)src->rows * 4)) return -1;
            for (uint32_t r = 1; r <= src->rows; r++) {
                put_u32(to->offsets.p + to->offsets.len, base + get_u32(from->offsets.p + 4 * r));
                to->offsets.len += 4;
            }
        }
    }
    dst->rows += src->rows;
    dst->bytes += src->bytes;
    return 0;
}

static const char *group_too_big = "a group's rows are over the native aggregate's limit";
static const char *out_of_memory = "wasmudf: out of memory collecting an aggregate's rows";

static size_t agg_state_bytes(const AggState *s) { return (s->rows ? s->rows->bytes : 0) + s->blobs.len; }

/* Append serialized states (a run of length-prefixed blobs, `count` of them). */
static int agg_blobs_append(AggState *s, const uint8_t *run, size_t len, uint32_t count, uint32_t largest) {
    if (buf_append(&s->blobs, run, len)) return -1;
    s->nblobs += count;
    if (largest > s->largest_blob) s->largest_blob = largest;
    return 0;
}

static void agg_blobs_clear(AggState *s) {
    s->blobs.len = 0;
    s->nblobs = 0;
    s->largest_blob = 0;
}

/* ---- aggregates: the guest side of one callback ----------------------------------------

   Each callback (update, combine, finalize) works in the calling thread's instance: it takes
   one frame block big enough for everything it copies in, opens guest states (__init or
   __deserialize), feeds them rows, and ends every state it opened (__finalize, __serialize or
   __merge) before it returns. So no guest state outlives a callback, and DuckDB may move the
   host's states between threads as it likes. */

/* A thread's instances for aggregates: a few, so two aggregates of one query that alternate
   on a thread do not rebind each time. */
#define AGG_BINDINGS 4
static __thread ThreadBinding agg_bindings[AGG_BINDINGS];
static __thread unsigned agg_binding_next;

static ThreadBinding *agg_binding_for(const DuckFunction *f) {
    for (int i = 0; i < AGG_BINDINGS; i++)
        if (agg_bindings[i].generation == f->generation) return &agg_bindings[i];
    return &agg_bindings[agg_binding_next++ % AGG_BINDINGS];
}

typedef struct {
    DuckFunction *f;
    ThreadBinding *b;
    uint32_t block;
    duckdb_function_info info;
    set_error_fn set_error;
    const volatile uint64_t *interrupt;
} AggCall;

/* The frame one __update batch of `g` needs (or __finalize's one row). */
static uint64_t agg_frame_size(const DuckFunction *f, const AggRows *g) {
    uint32_t total = g ? g->rows : 0;
    uint32_t batch = total < BATCH_ROWS ? total : BATCH_ROWS;
    uint64_t size = DESC * (uint64_t)(f->nargs + 1) + 64;
    for (int i = 0; i < f->nargs && g; i++)
        size += align8((batch + 7) / 8) + align8((uint64_t)(batch + 1) * 4) + align8(g->cols[i].values.len) +
                align8((uint64_t)batch * 8);
    return size;
}

static uint64_t max_u64(uint64_t a, uint64_t b) { return a > b ? a : b; }

/* Begin a callback's guest work with a block of `size` bytes. 0, or -1 with the error set. */
static int agg_call_begin(AggCall *a, DuckFunction *f, uint64_t size, duckdb_function_info info,
                          set_error_fn set_error) {
    a->f = f;
    a->b = agg_binding_for(f);
    a->info = info;
    a->set_error = set_error;
    a->interrupt = (const volatile uint64_t *)f->interrupt_view.buf;
    return prepare_call(f, a->b, size, &a->block, info, set_error);
}

static int agg_call_failed(AggCall *a, void *err, void *trap, const OutputFailure *failure, uint32_t status) {
    report_failure(a->f, a->b->core, err, trap, failure, status, a->info, a->set_error);
    return -1;
}

/* A state that returned 0 from __init or __deserialize: the Python side words the error. */
static int agg_no_state(AggCall *a, const char *part) {
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *r = PyObject_CallFunction(a->b->init_failed, "s", part);
    Py_XDECREF(r);
    if (!PyErr_Occurred()) PyErr_Format(PyExc_RuntimeError, "wasmudf: %s returned 0", part);
    raise_to_duckdb(a->info, a->set_error);
    PyGILState_Release(gil);
    return -1;
}

static int agg_merge(AggCall *a, uint32_t state, uint32_t other);

/* A guest state from one serialized blob (__deserialize). */
static int agg_deserialize(AggCall *a, const uint8_t *bytes, uint32_t len, uint32_t *state) {
    Core *c = a->b->core;
    void *err, *trap;
    if (len) memcpy(c->base + a->block, bytes, len);
    c->scratch_bytes += len;
    if (guarded_call(a->interrupt, c, a->b->funcs[5], a->block, len, 0, state, &err, &trap))
        return agg_call_failed(a, err, trap, NULL, 0);
    return *state ? 0 : agg_no_state(a, "__deserialize");
}

/* Open a guest state for the host state `s` (NULL: an empty group): its blobs deserialized and
   merged, or __init when it has none. Its rows are not fed here. */
static int agg_open(AggCall *a, const AggState *s, uint32_t *state) {
    if (!s || !s->nblobs) {
        void *err, *trap;
        if (guarded_call(a->interrupt, a->b->core, a->b->funcs[0], 0, 0, 0, state, &err, &trap))
            return agg_call_failed(a, err, trap, NULL, 0);
        return *state ? 0 : agg_no_state(a, "__init");
    }
    const uint8_t *p = s->blobs.p;
    for (uint32_t i = 0; i < s->nblobs; i++) {
        uint32_t len = get_u32(p), other;
        if (agg_deserialize(a, p + 4, len, i ? &other : state)) return -1;
        if (i && agg_merge(a, *state, other)) return -1;
        p += 4 + ((len + 3) & ~3u);
    }
    return 0;
}

/* Feed `g`'s rows to __update in batches. */
static int agg_feed(AggCall *a, uint32_t state, const AggRows *g) {
    DuckFunction *f = a->f;
    Core *c = a->b->core;
    int nargs = f->nargs;
    uint32_t block = a->block, total = g ? g->rows : 0, status;
    void *err, *trap;
    for (uint32_t start = 0; start < total; start += BATCH_ROWS) {
        uint8_t *frame = c->base + block;
        uint32_t n = total - start < BATCH_ROWS ? total - start : BATCH_ROWS;
        uint64_t pos = DESC * (uint64_t)nargs;
        for (int i = 0; i < nargs; i++) {
            const AggColumn *col = &g->cols[i];
            int code = f->codes[i];
            uint32_t nulls = 0, validity_at = 0, offsets_at = 0, values_at, values_len;
            if (col->null_count) {
                for (uint32_t r = start; r < start + n; r++) nulls += !row_bit(&col->validity, r);
            }
            if (nulls) {
                validity_at = block + (uint32_t)pos;
                uint8_t *dst = frame + pos;
                memset(dst, 0, (n + 7) / 8);
                for (uint32_t r = 0; r < n; r++)
                    if (row_bit(&col->validity, start + r)) dst[r / 8] |= (uint8_t)(1u << (r % 8));
                pos = align8(pos + (n + 7) / 8);
            }
            if (is_varlen(code)) {
                uint32_t first = get_u32(col->offsets.p + 4 * (size_t)start);
                offsets_at = block + (uint32_t)pos;
                for (uint32_t r = 0; r <= n; r++)
                    put_u32(frame + pos + 4 * r, get_u32(col->offsets.p + 4 * ((size_t)start + r)) - first);
                pos = align8(pos + (uint64_t)(n + 1) * 4);
                values_len = get_u32(col->offsets.p + 4 * ((size_t)start + n)) - first;
                if (values_len) memcpy(frame + pos, col->values.p + first, values_len);
                c->scratch_bytes += values_len;
            } else {
                values_len = n * (uint32_t)type_width(code);
                memcpy(frame + pos, col->values.p + (size_t)start * type_width(code), values_len);
            }
            values_at = block + (uint32_t)pos;
            pos = align8(pos + values_len);
            put_desc(frame + DESC * i, code, n, nulls, validity_at, offsets_at, values_at, values_len);
        }
        if (guarded_call(a->interrupt, c, a->b->funcs[1], state, block, (uint32_t)nargs, &status, &err, &trap))
            return agg_call_failed(a, err, trap, NULL, 0);
        if (status) return agg_call_failed(a, NULL, NULL, NULL, status);
    }
    return 0;
}

/* Call a result export (`func`: __finalize or __serialize) on `state` with a one-row `code`
   result prepared at the block's start, and check what came back; `want` is the descriptor. */
static int agg_result(AggCall *a, void *func, uint32_t state, int code, uint32_t want[8]) {
    Core *c = a->b->core;
    uint8_t *frame = c->base + a->block;
    uint32_t out_at = a->block, out_validity = out_at + DESC, out_values = out_at + DESC + 8;
    uint32_t d[8] = {(uint32_t)code, 1, 0, out_validity, is_varlen(code) ? out_values : 0,
                     is_varlen(code) ? 0 : out_values, is_varlen(code) ? 0 : (uint32_t)type_width(code), 0};
    memcpy(want, d, sizeof d);
    put_desc(frame, d[0], d[1], d[2], d[3], d[4], d[5], d[6]);
    memset(frame + DESC, 0xFF, 8);
    memset(frame + DESC + 8, 0, 8);
    void *err, *trap;
    uint32_t status;
    OutputFailure failure;
    if (guarded_call(a->interrupt, c, func, state, out_at, 0, &status, &err, &trap))
        return agg_call_failed(a, err, trap, NULL, 0);
    if (status) return agg_call_failed(a, NULL, NULL, NULL, status);
    if (check_output(c, out_at, want, code, 1, a->f->output_limit, &failure))
        return agg_call_failed(a, NULL, NULL, &failure, 0);
    return 0;
}

/* __finalize the state into row `row` of `result`. */
static int agg_finish(AggCall *a, uint32_t state, duckdb_vector result, idx_t row) {
    uint32_t want[8];
    OutputFailure failure;
    if (agg_result(a, a->b->funcs[2], state, a->f->rcode, want)) return -1;
    if (write_result(a->b->core, want, a->block, a->f->rcode, 1, NULL, row, result, &failure))
        return agg_call_failed(a, NULL, NULL, &failure, 0);
    return 0;
}

/* __serialize the state into the host state as its only blob (replacing the others). */
static int agg_serialize(AggCall *a, uint32_t state, AggState *s) {
    uint32_t want[8];
    if (agg_result(a, a->b->funcs[4], state, ABI_BINARY, want)) return -1;
    Core *c = a->b->core;
    const uint8_t *frame = c->base + a->block;
    if (!(frame[DESC] & 1)) {
        OutputFailure failure = {.kind = OUTPUT_INVALID};
        snprintf(failure.message, sizeof failure.message, "__serialize returned NULL, not the state's bytes");
        return agg_call_failed(a, NULL, NULL, &failure, 0);
    }
    uint32_t at = get_u32(frame + 20), len = get_u32(frame + 24);
    agg_blobs_clear(s);
    if (buf_reserve(&s->blobs, 4 + (size_t)len + 3)) {
        a->set_error(a->info, out_of_memory);
        return -1;
    }
    put_u32(s->blobs.p, len);
    if (len) memcpy(s->blobs.p + 4, c->base + at, len);
    memset(s->blobs.p + 4 + len, 0, (4 - len % 4) % 4);
    s->blobs.len = 4 + ((len + 3) & ~(size_t)3);
    s->nblobs = 1;
    s->largest_blob = len;
    return 0;
}

static int agg_merge(AggCall *a, uint32_t state, uint32_t other) {
    void *err, *trap;
    uint32_t status;
    if (guarded_call(a->interrupt, a->b->core, a->b->funcs[3], state, other, 0, &status, &err, &trap))
        return agg_call_failed(a, err, trap, NULL, 0);
    if (status) return agg_call_failed(a, NULL, NULL, NULL, status);
    return 0;
}

/* The block a state needs to be opened and fed. */
static uint64_t agg_state_frame(const DuckFunction *f, const AggState *s) {
    return max_u64(agg_frame_size(f, s->rows), align8(s->largest_blob) + DESC + 16);
}

/* A movable state's pending rows folded into its blob. */
static int agg_fold_in(DuckFunction *f, AggState *s, duckdb_function_info info) {
    AggCall a;
    uint32_t state;
    if (agg_call_begin(&a, f, agg_state_frame(f, s), info, duckdb_aggregate_function_set_error) ||
        agg_open(&a, s, &state) || agg_feed(&a, state, s->rows) || agg_serialize(&a, state, s))
        return -1;
    agg_rows_free(s->rows);
    s->rows = NULL;
    if (s->blobs.len > (unsigned long long)f->group_limit) {
        duckdb_aggregate_function_set_error(info, group_too_big);
        return -1;
    }
    return 0;
}

/* ---- aggregates: DuckDB's callbacks ------------------------------------------------------ */

static idx_t agg_state_size(duckdb_function_info info) { return sizeof(AggState); }

static void agg_init(duckdb_function_info info, duckdb_aggregate_state state) {
    memset(state, 0, sizeof(AggState));
}

static void agg_destroy(duckdb_aggregate_state *states, idx_t count) {
    for (idx_t i = 0; i < count; i++) {
        AggState *s = (AggState *)states[i];
        agg_rows_free(s->rows);
        free(s->blobs.p);
        memset(s, 0, sizeof *s);
    }
}

static void agg_update(duckdb_function_info info, duckdb_data_chunk input, duckdb_aggregate_state *states) {
    DuckFunction *f = duckdb_aggregate_function_get_extra_info(info);
    idx_t rows = duckdb_data_chunk_get_size(input);
    int nargs = f->nargs;
    if (!f->enabled) {
        duckdb_aggregate_function_set_error(info, f->unregistered_text);
        return;
    }
    const uint8_t *data[MAX_PARAMS];
    const uint64_t *validity[MAX_PARAMS];
    int any_validity = 0;
    for (int i = 0; i < nargs; i++) {
        duckdb_vector v = duckdb_data_chunk_get_vector(input, i);
        data[i] = duckdb_vector_get_data(v);
        validity[i] = duckdb_vector_get_validity(v);
        any_validity |= validity[i] != NULL;
    }
    unsigned long long limit = (unsigned long long)f->group_limit;
    for (idx_t r = 0; r < rows; r++) {
        if (f->strict && any_validity) {
            int valid = 1;
            for (int i = 0; i < nargs && valid; i++) valid = row_is_valid(validity[i], r);
            if (!valid) continue; /* a strict aggregate never sees a row with a NULL */
        }
        AggState *s = (AggState *)states[r];
        if (!s->rows && !(s->rows = agg_rows_new(f))) goto out_of_memory;
        AggRows *g = s->rows;
        for (int i = 0; i < nargs; i++) {
            int code = f->codes[i], valid = row_is_valid(validity[i], r);
            uint32_t len = (uint32_t)type_width(code);
            const uint8_t *value = data[i] + r * len;
            if (is_varlen(code)) value = string_bytes((const duckdb_string_t *)data[i] + r, &len);
            if (agg_column_push(&g->cols[i], code, g->rows, value, valid ? len : 0, valid)) goto out_of_memory;
            g->bytes += valid ? len : 0;
        }
        g->bytes += (size_t)nargs;
        g->rows++;
        if (agg_state_bytes(s) > limit || g->rows >= 0x7fffffffu) {
            duckdb_aggregate_function_set_error(info, group_too_big);
            return;
        }
        if (f->movable && g->rows >= FOLD_ROWS && agg_fold_in(f, s, info)) return;
    }
    return;
out_of_memory:
    duckdb_aggregate_function_set_error(info, out_of_memory);
}

static void agg_combine(duckdb_function_info info, duckdb_aggregate_state *source, duckdb_aggregate_state *target,
                        idx_t count) {
    DuckFunction *f = duckdb_aggregate_function_get_extra_info(info);
    for (idx_t i = 0; i < count; i++) {
        const AggState *src = (const AggState *)source[i];
        AggState *t = (AggState *)target[i];
        int src_rows = src->rows && src->rows->rows;
        if (!src_rows && !src->nblobs) continue;
        if (agg_state_bytes(t) + agg_state_bytes(src) > (unsigned long long)f->group_limit) {
            duckdb_aggregate_function_set_error(info, group_too_big);
            return;
        }
        if (src->nblobs &&
            agg_blobs_append(t, src->blobs.p, src->blobs.len, src->nblobs, src->largest_blob))
            goto out_of_memory;
        if (src_rows) {
            if (!t->rows && !(t->rows = agg_rows_new(f))) goto out_of_memory;
            if (agg_rows_extend(f, t->rows, src->rows)) goto out_of_memory;
        }
        if (f->movable && ((t->rows && t->rows->rows >= FOLD_ROWS) || t->nblobs > MAX_BLOBS) &&
            agg_fold_in(f, t, info))
            return;
    }
    return;
out_of_memory:
    duckdb_aggregate_function_set_error(info, out_of_memory);
}

/* One group's result into row `row` of `result`: its state opened, its rows fed, finalized.
   Without the GIL but for failures and fresh frame blocks. 0, or -1 with the error set. */
static int agg_fold(DuckFunction *f, const AggState *s, duckdb_vector result, idx_t row, duckdb_function_info info,
                    set_error_fn set_error) {
    AggCall a;
    uint32_t state;
    if (agg_call_begin(&a, f, agg_state_frame(f, s), info, set_error) || agg_open(&a, s, &state) ||
        agg_feed(&a, state, s->rows) || agg_finish(&a, state, result, row))
        return -1;
    return 0;
}

static void agg_finalize(duckdb_function_info info, duckdb_aggregate_state *source, duckdb_vector result, idx_t count,
                         idx_t offset) {
    DuckFunction *f = duckdb_aggregate_function_get_extra_info(info);
    if (!f->enabled) {
        duckdb_aggregate_function_set_error(info, f->unregistered_text);
        return;
    }
    for (idx_t i = 0; i < count; i++) {
        if (agg_fold(f, (const AggState *)source[i], result, offset + i, info, duckdb_aggregate_function_set_error))
            return;
    }
}

/* ---- an aggregate's list form: f_list(list(x)) or f_list(list({'a0': x, 'a1': w})) ---------- */

static void list_form_call(duckdb_function_info info, duckdb_data_chunk input, duckdb_vector output) {
    DuckFunction *f = duckdb_scalar_function_get_extra_info(info);
    set_error_fn set_error = duckdb_scalar_function_set_error;
    if (!f->enabled) {
        set_error(info, f->unregistered_text);
        return;
    }
    idx_t rows = duckdb_data_chunk_get_size(input);
    duckdb_vector lists = duckdb_data_chunk_get_vector(input, 0);
    const duckdb_list_entry *entries = duckdb_vector_get_data(lists);
    const uint64_t *list_validity = duckdb_vector_get_validity(lists);
    duckdb_vector child = duckdb_list_vector_get_child(lists);
    int nargs = f->nargs;
    const uint8_t *data[MAX_PARAMS];
    const uint64_t *validity[MAX_PARAMS];
    /* One parameter: a list of values; several: a list of structs, a NULL struct being a
       row of NULLs. */
    const uint64_t *struct_validity = nargs > 1 ? duckdb_vector_get_validity(child) : NULL;
    for (int i = 0; i < nargs; i++) {
        duckdb_vector v = nargs > 1 ? duckdb_struct_vector_get_child(child, i) : child;
        data[i] = duckdb_vector_get_data(v);
        validity[i] = duckdb_vector_get_validity(v);
    }
    for (idx_t r = 0; r < rows; r++) {
        AggRows *g = NULL;
        if (row_is_valid(list_validity, r) && entries[r].length) {
            if (!(g = agg_rows_new(f))) goto out_of_memory;
            for (idx_t e = entries[r].offset; e < entries[r].offset + entries[r].length; e++) {
                int whole = row_is_valid(struct_validity, e), any_null = !whole;
                for (int i = 0; i < nargs && !any_null; i++) any_null = !row_is_valid(validity[i], e);
                if (f->strict && any_null) continue; /* a strict aggregate never sees a NULL */
                for (int i = 0; i < nargs; i++) {
                    int code = f->codes[i], valid = whole && row_is_valid(validity[i], e);
                    uint32_t len = (uint32_t)type_width(code);
                    const uint8_t *value = data[i] + e * len;
                    if (is_varlen(code) && valid) value = string_bytes((const duckdb_string_t *)data[i] + e, &len);
                    if (agg_column_push(&g->cols[i], code, g->rows, value, valid ? len : 0, valid)) {
                        agg_rows_free(g);
                        goto out_of_memory;
                    }
                }
                g->rows++;
            }
        }
        AggState group = {.rows = g};
        int failed = agg_fold(f, &group, output, r, info, set_error);
        agg_rows_free(g);
        if (failed) return;
    }
    return;
out_of_memory:
    set_error(info, "wasmudf: out of memory collecting a list's rows");
}

/* ---- table functions: one call per statement, its rows a vector at a time ---------------

   DuckDB's C API gives a table function constant arguments (bind), one init per scan and a
   function that fills one output chunk per call, from one thread at a time but not always
   the same one. So a scan gets an instance of its own (made in init, through the GIL), opens
   the guest call there (__open), fills each chunk with one __next, and closes it when DuckDB
   drops the scan. A NULL argument of a strict function gives no rows without the guest. */

static duckdb_logical_type logical_type(int code);

typedef struct {
    int code, is_null;
    int64_t i;  /* bool, int32, int64 */
    double d;   /* float32, float64 */
    uint8_t *bytes;
    uint32_t len;
} TableArgument;

typedef struct {
    int nargs;
    TableArgument args[MAX_PARAMS];
} TableBind;

static void table_bind_free(void *p) {
    TableBind *b = p;
    for (int i = 0; i < b->nargs; i++) free(b->args[i].bytes);
    free(b);
}

static void table_bind(duckdb_bind_info info) {
    DuckFunction *f = duckdb_bind_get_extra_info(info);
    if (!f->enabled) {
        duckdb_bind_set_error(info, f->unregistered_text);
        return;
    }
    TableBind *b = calloc(1, sizeof *b);
    if (!b) {
        duckdb_bind_set_error(info, "wasmudf: out of memory");
        return;
    }
    b->nargs = f->nargs;
    for (int i = 0; i < f->nargs; i++) {
        TableArgument *a = &b->args[i];
        duckdb_value v = duckdb_bind_get_parameter(info, (idx_t)i);
        a->code = f->codes[i];
        a->is_null = duckdb_is_null_value(v);
        if (!a->is_null) {
            switch (a->code) {
            case ABI_BOOL: a->i = duckdb_get_bool(v); break;
            case ABI_INT32: a->i = duckdb_get_int32(v); break;
            case ABI_INT64: a->i = duckdb_get_int64(v); break;
            case ABI_FLOAT32: a->d = duckdb_get_float(v); break;
            case ABI_FLOAT64: a->d = duckdb_get_double(v); break;
            case ABI_DATE: a->i = duckdb_get_date(v).days; break;
            case ABI_TIMESTAMP: a->i = duckdb_get_timestamp(v).micros; break;
            case ABI_TIMESTAMPTZ: a->i = duckdb_get_timestamp_tz(v).micros; break;
            case ABI_UTF8: {
                char *s = duckdb_get_varchar(v);
                a->len = s ? (uint32_t)strlen(s) : 0;
                a->bytes = malloc(a->len ? a->len : 1);
                if (a->bytes && a->len) memcpy(a->bytes, s, a->len);
                duckdb_free(s);
                break;
            }
            default: { /* binary */
                duckdb_blob blob = duckdb_get_blob(v);
                a->len = (uint32_t)blob.size;
                a->bytes = malloc(a->len ? a->len : 1);
                if (a->bytes && a->len) memcpy(a->bytes, blob.data, a->len);
                duckdb_free(blob.data);
            }
            }
        }
        duckdb_destroy_value(&v);
        if (is_varlen(a->code) && !a->is_null && !a->bytes) {
            table_bind_free(b);
            duckdb_bind_set_error(info, "wasmudf: out of memory");
            return;
        }
    }
    for (int c = 0; c < f->ncols; c++) {
        duckdb_logical_type t = logical_type(f->col_codes[c]);
        duckdb_bind_add_result_column(info, f->col_names[c], t);
        duckdb_destroy_logical_type(&t);
    }
    duckdb_bind_set_bind_data(info, b, table_bind_free);
}

/* One scan: its own instance (core and the three exports), and the guest call's state. */
typedef struct {
    DuckFunction *f;
    PyObject *keep; /* the bind() tuple: the instance lives as long as it */
    Core *core;
    void *open, *next, *close;
    PyObject *open_failed;
    uint32_t state;
    long long rows;
    int done;
} TableScan;

static void table_scan_free(void *p) {
    TableScan *s = p;
    if (s->keep && !finalizing()) {
        PyGILState_STATE gil = PyGILState_Ensure();
        if (s->state && !s->core->dead) {
            void *err, *trap;
            uint32_t ignored;
            if (core_call(s->core, s->close, s->state, 0, 0, &ignored, &err, &trap)) {
                report_call_failure(s->core, s->f->what, err, trap); /* frees them; the instance goes */
                PyErr_Clear();
            }
        }
        Py_CLEAR(s->keep);
        PyGILState_Release(gil);
    }
    free(s);
}

static void init_set_error(duckdb_function_info info, const char *error) {
    duckdb_init_set_error((duckdb_init_info)info, error);
}

/* The arguments as one row of ABI columns at the start of the block. */
static uint64_t table_argument_size(const TableBind *b) {
    uint64_t size = DESC * (uint64_t)b->nargs + 8;
    for (int i = 0; i < b->nargs; i++) size += 8 + 8 + align8(b->args[i].len ? b->args[i].len : 8);
    return size;
}

static void table_write_arguments(const TableBind *b, uint8_t *frame, uint32_t block) {
    uint64_t pos = DESC * (uint64_t)b->nargs;
    for (int i = 0; i < b->nargs; i++) {
        const TableArgument *a = &b->args[i];
        uint32_t validity = 0, offsets = 0, values, values_len;
        if (a->is_null) {
            validity = block + (uint32_t)pos;
            memset(frame + pos, 0, 8);
            pos += 8;
        }
        if (is_varlen(a->code)) {
            offsets = block + (uint32_t)pos;
            put_u32(frame + pos, 0);
            put_u32(frame + pos + 4, a->is_null ? 0 : a->len);
            pos += 8;
            values_len = a->is_null ? 0 : a->len;
            if (values_len) memcpy(frame + pos, a->bytes, values_len);
        } else {
            values_len = (uint32_t)type_width(a->code);
            uint8_t *v = frame + pos;
            memset(v, 0, 8);
            if (a->code == ABI_BOOL) v[0] = a->i != 0;
            else if (a->code == ABI_INT32 || a->code == ABI_DATE) { int32_t x = (int32_t)a->i; memcpy(v, &x, 4); }
            else if (a->code == ABI_INT64 || a->code == ABI_TIMESTAMP || a->code == ABI_TIMESTAMPTZ) memcpy(v, &a->i, 8);
            else if (a->code == ABI_FLOAT32) { float x = (float)a->d; memcpy(v, &x, 4); }
            else memcpy(v, &a->d, 8);
        }
        values = block + (uint32_t)pos;
        pos = align8(pos + (values_len ? values_len : 8));
        put_desc(frame + DESC * i, a->code, 1, a->is_null ? 1 : 0, validity, offsets, values, values_len);
    }
}

static void table_init(duckdb_init_info info) {
    DuckFunction *f = duckdb_init_get_extra_info(info);
    const TableBind *b = duckdb_init_get_bind_data(info);
    duckdb_function_info as_info = (duckdb_function_info)info;
    duckdb_init_set_max_threads(info, 1);
    TableScan *s = calloc(1, sizeof *s);
    if (!s) {
        duckdb_init_set_error(info, "wasmudf: out of memory");
        return;
    }
    s->f = f;
    duckdb_init_set_init_data(info, s, table_scan_free);
    for (int i = 0; f->strict && i < b->nargs; i++)
        if (b->args[i].is_null) s->done = 1; /* no rows, and no guest */
    if (s->done) return;
    PyGILState_STATE gil = PyGILState_Ensure();
    PyObject *bound = PyObject_CallNoArgs(f->bind);
    PyObject *core, *instance = NULL;
    unsigned long long a0, a1, a2;
    if (!bound || !PyArg_ParseTuple(bound, "O!KKKO|O", &CoreType, &core, &a0, &a1, &a2, &s->open_failed, &instance)) {
        Py_XDECREF(bound);
        s->done = 1;
        raise_to_duckdb(as_info, init_set_error);
        PyGILState_Release(gil);
        return;
    }
    s->keep = bound;
    s->core = (Core *)core;
    s->open = (void *)(uintptr_t)a0;
    s->next = (void *)(uintptr_t)a1;
    s->close = (void *)(uintptr_t)a2;
    uint32_t block, state = 0;
    if (frame_block(s->core, table_argument_size(b), 0, f->what, &block)) {
        s->done = 1;
        raise_to_duckdb(as_info, init_set_error);
        PyGILState_Release(gil);
        return;
    }
    table_write_arguments(b, s->core->base + block, block);
    void *err, *trap;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = guarded_call((const volatile uint64_t *)f->interrupt_view.buf, s->core, s->open, block, (uint32_t)b->nargs,
                      0, &state, &err, &trap);
    Py_END_ALLOW_THREADS
    if (rc || !state) {
        s->done = 1;
        if (rc) report_call_failure(s->core, f->what, err, trap);
        else {
            PyObject *r = PyObject_CallFunction(s->open_failed, "s", "__open");
            Py_XDECREF(r);
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_RuntimeError, "wasmudf: __open returned 0");
        }
        raise_to_duckdb(as_info, init_set_error);
    }
    s->state = state;
    PyGILState_Release(gil);
}

static void table_fail(TableScan *s, duckdb_function_info info, void *err, void *trap, const OutputFailure *failure,
                       int32_t status) {
    s->done = 1;
    s->state = 0; /* it went with the instance */
    PyGILState_STATE gil = PyGILState_Ensure();
    Py_INCREF(s->core);
    if (failure) report_output_failure(s->core, s->f->what, failure);
    else if (err || trap) report_call_failure(s->core, s->f->what, err, trap);
    else fail(s->core, "status", s->f->what, PyLong_FromLong(status));
    raise_to_duckdb(info, duckdb_function_set_error);
    Py_DECREF(s->core);
    PyGILState_Release(gil);
}

static void table_call(duckdb_function_info info, duckdb_data_chunk output) {
    TableScan *s = duckdb_function_get_init_data(info);
    DuckFunction *f = s->f;
    if (s->done) {
        duckdb_data_chunk_set_size(output, 0);
        return;
    }
    if (!f->enabled) {
        duckdb_function_set_error(info, f->unregistered_text);
        return;
    }
    uint32_t capacity = (uint32_t)duckdb_vector_size(), ncols = (uint32_t)f->ncols;
    uint64_t size = DESC * (uint64_t)ncols;
    for (uint32_t c = 0; c < ncols; c++)
        size += align8((capacity + 7) / 8) +
                align8(is_varlen(f->col_codes[c]) ? (uint64_t)(capacity + 1) * 4 : (uint64_t)capacity * 8);
    Core *core = s->core;
    uint32_t block;
    if (core->before_call != Py_None || !frame_block_reusable(core, size, &block)) {
        PyGILState_STATE gil = PyGILState_Ensure();
        int rc = core_before_call(core) || frame_block(core, size, 0, f->what, &block);
        if (rc) {
            s->done = 1;
            raise_to_duckdb(info, duckdb_function_set_error);
        }
        PyGILState_Release(gil);
        if (rc) return;
    }
    uint8_t *frame = core->base + block;
    uint32_t wants[MAX_PARAMS][8];
    uint64_t pos = DESC * (uint64_t)ncols;
    for (uint32_t c = 0; c < ncols; c++) {
        int code = f->col_codes[c];
        uint32_t validity = block + (uint32_t)pos;
        memset(frame + pos, 0xFF, (capacity + 7) / 8);
        pos = align8(pos + (capacity + 7) / 8);
        uint32_t buffer = block + (uint32_t)pos;
        uint64_t bytes = is_varlen(code) ? (uint64_t)(capacity + 1) * 4 : (uint64_t)capacity * type_width(code);
        memset(frame + pos, 0, bytes);
        pos = align8(pos + bytes);
        uint32_t w[8] = {(uint32_t)code, capacity, 0, validity, is_varlen(code) ? buffer : 0,
                         is_varlen(code) ? 0 : buffer, is_varlen(code) ? 0 : (uint32_t)bytes, 0};
        memcpy(wants[c], w, sizeof w);
        put_desc(frame + DESC * c, w[0], w[1], w[2], w[3], w[4], w[5], w[6]);
    }
    void *err, *trap;
    uint32_t got;
    if (guarded_call((const volatile uint64_t *)f->interrupt_view.buf, core, s->next, s->state, block, ncols, &got,
                     &err, &trap)) {
        table_fail(s, info, err, trap, NULL, 0);
        return;
    }
    int32_t rows = (int32_t)got;
    OutputFailure failure = {.kind = OUTPUT_INVALID};
    if (rows < 0) {
        table_fail(s, info, NULL, NULL, NULL, rows);
        return;
    }
    if (rows == 0) {
        s->done = 1;
        duckdb_data_chunk_set_size(output, 0);
        return;
    }
    if ((uint32_t)rows > capacity) {
        snprintf(failure.message, sizeof failure.message, "__next returned %d rows for a batch of %u", rows, capacity);
        table_fail(s, info, NULL, NULL, &failure, 0);
        return;
    }
    if (f->table_rows >= 0 && s->rows + rows > f->table_rows) {
        char text[200];
        snprintf(text, sizeof text,
                 "RowLimitExceeded: `%s` returned more than Limits.table_rows = %lld rows in one call; "
                 "raise the limit or return fewer",
                 PyUnicode_AsUTF8(f->what) ? PyUnicode_AsUTF8(f->what) : "?", f->table_rows);
        s->done = 1;
        duckdb_function_set_error(info, text);
        return;
    }
    uint64_t varlen_bytes = 0;
    for (uint32_t c = 0; c < ncols; c++) {
        if (check_output(core, block + DESC * c, wants[c], f->col_codes[c], rows, -1, &failure)) {
            char detail[sizeof failure.message];
            snprintf(detail, sizeof detail, "%s", failure.message);
            snprintf(failure.message, sizeof failure.message, "column '%.64s': %.170s", f->col_names[c], detail);
            table_fail(s, info, NULL, NULL, &failure, 0);
            return;
        }
        if (is_varlen(f->col_codes[c])) varlen_bytes += get_u32(frame + DESC * c + 24);
    }
    if (f->output_limit >= 0 && varlen_bytes > (unsigned long long)f->output_limit) {
        failure.kind = OUTPUT_LIMIT;
        failure.size = varlen_bytes;
        table_fail(s, info, NULL, NULL, &failure, 0);
        return;
    }
    for (uint32_t c = 0; c < ncols; c++) {
        duckdb_vector vector = duckdb_data_chunk_get_vector(output, c);
        if (write_result(core, wants[c], block + DESC * c, f->col_codes[c], (idx_t)rows, NULL, 0, vector, &failure)) {
            char detail[sizeof failure.message];
            snprintf(detail, sizeof detail, "%s", failure.message);
            snprintf(failure.message, sizeof failure.message, "column '%.64s': %.170s", f->col_names[c], detail);
            table_fail(s, info, NULL, NULL, &failure, 0);
            return;
        }
    }
    s->rows += rows;
    duckdb_data_chunk_set_size(output, (idx_t)rows);
}

/* ---- DuckFunction, the Python type ------------------------------------------------------ */

static int DuckFunction_init(DuckFunction *self, PyObject *args, PyObject *kw) {
    static char *names[] = {"name", "kind", "codes", "rcode", "strict", "output_limit", "bind", "interrupted",
                            "group_limit", "token", "movable", "columns", "table_rows", NULL};
    PyObject *what, *codes, *bind, *interrupted, *columns = NULL;
    int kind, rcode, strict, movable = 0;
    long long output_limit, group_limit = 1LL << 30, token = 0, table_rows = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "UiOipLOO|LLpOL", names, &what, &kind, &codes, &rcode, &strict,
                                     &output_limit, &bind, &interrupted, &group_limit, &token, &movable, &columns,
                                     &table_rows))
        return -1;
    self->ncols = 0;
    if (kind == KIND_TABLE) {
        /* columns: (name, type code) pairs, the table's output */
        PyObject *cols = columns ? PySequence_Fast(columns, "columns must be a sequence") : NULL;
        if (!cols) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "a table function needs its columns");
            return -1;
        }
        Py_ssize_t ncols = PySequence_Fast_GET_SIZE(cols);
        for (Py_ssize_t i = 0; i < ncols && i < MAX_PARAMS; i++) {
            const char *cname;
            int code;
            if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(cols, i), "si", &cname, &code) ||
                (type_width(code) == 0 && !is_varlen(code)) || strlen(cname) >= sizeof self->col_names[0]) {
                Py_DECREF(cols);
                if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "bad table column");
                return -1;
            }
            snprintf(self->col_names[i], sizeof self->col_names[i], "%s", cname);
            self->col_codes[i] = code;
        }
        Py_DECREF(cols);
        if (ncols < 1 || ncols > MAX_PARAMS) {
            PyErr_SetString(PyExc_ValueError, "a table function has 1 to 32 columns");
            return -1;
        }
        self->ncols = (int)ncols;
    }
    PyObject *seq = PySequence_Fast(codes, "codes must be a sequence");
    if (!seq) return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n < (kind == KIND_TABLE ? 0 : 1) || n > MAX_PARAMS || kind < KIND_SCALAR || kind > KIND_TABLE ||
        (type_width(rcode) == 0 && !is_varlen(rcode)) || !PyCallable_Check(bind) || group_limit <= 0) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "bad function description");
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        int code = (int)PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, i));
        if (type_width(code) == 0 && !is_varlen(code)) {
            Py_DECREF(seq);
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "bad parameter type code");
            return -1;
        }
        self->codes[i] = code;
    }
    Py_DECREF(seq);
    if (interrupted != Py_None) {
        if (PyObject_GetBuffer(interrupted, &self->interrupt_view, PyBUF_SIMPLE) < 0) return -1;
        if (self->interrupt_view.len < 8 || ((uintptr_t)self->interrupt_view.buf & 7)) {
            PyBuffer_Release(&self->interrupt_view);
            memset(&self->interrupt_view, 0, sizeof self->interrupt_view);
            PyErr_SetString(PyExc_ValueError, "interrupted must be an aligned 8-byte buffer");
            return -1;
        }
    }
    Py_XSETREF(self->what, Py_NewRef(what));
    Py_XSETREF(self->bind, Py_NewRef(bind));
    Py_XSETREF(self->interrupted, Py_NewRef(interrupted));
    self->kind = kind;
    self->nargs = (int)n;
    self->rcode = rcode;
    self->strict = strict;
    self->output_limit = output_limit;
    self->group_limit = group_limit;
    self->token = token;
    self->movable = movable && kind == KIND_AGGREGATE;
    self->table_rows = table_rows;
    self->generation = __atomic_fetch_add(&next_generation, 1, __ATOMIC_RELAXED);
    self->enabled = 1;
    free(self->memo_text);
    self->memo_text = NULL;
    pthread_mutex_init(&self->memo_lock, NULL);
    snprintf(self->unregistered_text, sizeof self->unregistered_text,
             "RegistrationError: `%s` was unregistered (DuckDB cannot drop a function registered through its C API)",
             PyUnicode_AsUTF8(what) ? PyUnicode_AsUTF8(what) : "?");
    PyErr_Clear();
    return 0;
}

static int DuckFunction_traverse(DuckFunction *self, visitproc visit, void *arg) {
    Py_VISIT(self->what);
    Py_VISIT(self->bind);
    Py_VISIT(self->interrupted);
    return 0;
}

static int DuckFunction_clear(DuckFunction *self) {
    Py_CLEAR(self->what);
    Py_CLEAR(self->bind);
    return 0;
}

static void DuckFunction_dealloc(DuckFunction *self) {
    PyObject_GC_UnTrack(self);
    if (self->interrupt_view.buf) PyBuffer_Release(&self->interrupt_view);
    free(self->memo_text);
    DuckFunction_clear(self);
    Py_CLEAR(self->interrupted);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *DuckFunction_disable(DuckFunction *self, PyObject *unused) {
    self->enabled = 0;
    Py_RETURN_NONE;
}

/* A table function replaced by one of the same shape: DuckDB keeps the entry it has (its C
   API cannot drop or swap a table function), so the entry's function takes the new target. */
static PyObject *DuckFunction_retarget(DuckFunction *self, PyObject *args) {
    PyObject *bind;
    long long output_limit, table_rows;
    if (!PyArg_ParseTuple(args, "OLL", &bind, &output_limit, &table_rows)) return NULL;
    if (!PyCallable_Check(bind)) {
        PyErr_SetString(PyExc_TypeError, "bind must be callable");
        return NULL;
    }
    Py_XSETREF(self->bind, Py_NewRef(bind));
    self->output_limit = output_limit;
    self->table_rows = table_rows;
    self->generation = __atomic_fetch_add(&next_generation, 1, __ATOMIC_RELAXED);
    self->enabled = 1;
    Py_RETURN_NONE;
}

static PyMethodDef DuckFunction_methods[] = {
    {"retarget", (PyCFunction)DuckFunction_retarget, METH_VARARGS,
     "retarget(bind, output_limit, table_rows): a table function's entry calls another function"},
    {"disable", (PyCFunction)DuckFunction_disable, METH_NOARGS, "make every later call fail (unregistered)"},
    {NULL},
};

static PyTypeObject DuckFunctionType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "wasmudf._speedups.DuckFunction",
    .tp_basicsize = sizeof(DuckFunction),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "DuckFunction(name, kind, codes, rcode, strict, output_limit, bind, interrupted, group_limit=1 GiB, "
              "token=0)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)DuckFunction_init,
    .tp_dealloc = (destructor)DuckFunction_dealloc,
    .tp_traverse = (traverseproc)DuckFunction_traverse,
    .tp_clear = (inquiry)DuckFunction_clear,
    .tp_methods = DuckFunction_methods,
};

/* ---- Registrar: one connection to a database that loaded the extension ------------------- */

typedef struct {
    PyObject_HEAD
    duckdb_connection conn;
} Registrar;

static duckdb_logical_type logical_type(int code) {
    static const duckdb_type types[] = {
        [ABI_BOOL] = DUCKDB_TYPE_BOOLEAN, [ABI_INT32] = DUCKDB_TYPE_INTEGER, [ABI_INT64] = DUCKDB_TYPE_BIGINT,
        [ABI_FLOAT32] = DUCKDB_TYPE_FLOAT, [ABI_FLOAT64] = DUCKDB_TYPE_DOUBLE, [ABI_UTF8] = DUCKDB_TYPE_VARCHAR,
        [ABI_BINARY] = DUCKDB_TYPE_BLOB, [ABI_DATE] = DUCKDB_TYPE_DATE, [ABI_TIMESTAMP] = DUCKDB_TYPE_TIMESTAMP,
        [ABI_TIMESTAMPTZ] = DUCKDB_TYPE_TIMESTAMP_TZ,
    };
    return duckdb_create_logical_type(types[code]);
}

static int registrar_open(Registrar *self) {
    if (self->conn) return 0;
    PyErr_SetString(PyExc_ValueError, "this Registrar is closed");
    return -1;
}

static PyObject *Registrar_register(Registrar *self, PyObject *args) {
    DuckFunction *f;
    int deterministic;
    const char *name = NULL;
    if (!PyArg_ParseTuple(args, "O!p|s", &DuckFunctionType, &f, &deterministic, &name) || registrar_open(self))
        return NULL;
    f->deterministic = deterministic;
    if (!name && !(name = PyUnicode_AsUTF8(f->what))) return NULL;
    duckdb_logical_type rtype = logical_type(f->rcode);
    duckdb_state rc;
    Py_INCREF(f); /* DuckDB's reference, given back through release_reference */
    if (f->kind == KIND_LIST_FORM) {
        duckdb_scalar_function s = duckdb_create_scalar_function();
        duckdb_scalar_function_set_name(s, name);
        duckdb_logical_type element, members[MAX_PARAMS];
        char member_names[MAX_PARAMS][16];
        const char *member_name_ptrs[MAX_PARAMS];
        for (int i = 0; i < f->nargs; i++) {
            members[i] = logical_type(f->codes[i]);
            snprintf(member_names[i], sizeof member_names[i], "a%d", i);
            member_name_ptrs[i] = member_names[i];
        }
        if (f->nargs == 1) element = members[0];
        else element = duckdb_create_struct_type(members, member_name_ptrs, f->nargs);
        duckdb_logical_type list = duckdb_create_list_type(element);
        duckdb_scalar_function_add_parameter(s, list);
        duckdb_destroy_logical_type(&list);
        if (f->nargs > 1) duckdb_destroy_logical_type(&element);
        for (int i = 0; i < f->nargs; i++) duckdb_destroy_logical_type(&members[i]);
        duckdb_scalar_function_set_return_type(s, rtype);
        duckdb_scalar_function_set_special_handling(s); /* a NULL list is an empty group */
        if (!deterministic) duckdb_scalar_function_set_volatile(s);
        duckdb_scalar_function_set_extra_info(s, f, release_reference);
        duckdb_scalar_function_set_bind(s, scalar_bind);
        duckdb_scalar_function_set_function(s, list_form_call);
        Py_BEGIN_ALLOW_THREADS
        rc = duckdb_register_scalar_function(self->conn, s);
        duckdb_destroy_scalar_function(&s);
        Py_END_ALLOW_THREADS
    } else if (f->kind == KIND_TABLE) {
        duckdb_table_function t = duckdb_create_table_function();
        duckdb_table_function_set_name(t, name);
        for (int i = 0; i < f->nargs; i++) {
            duckdb_logical_type p = logical_type(f->codes[i]);
            duckdb_table_function_add_parameter(t, p);
            duckdb_destroy_logical_type(&p);
        }
        duckdb_table_function_set_extra_info(t, f, release_reference);
        duckdb_table_function_set_bind(t, table_bind);
        duckdb_table_function_set_init(t, table_init);
        duckdb_table_function_set_function(t, table_call);
        Py_BEGIN_ALLOW_THREADS
        rc = duckdb_register_table_function(self->conn, t);
        duckdb_destroy_table_function(&t);
        Py_END_ALLOW_THREADS
    } else if (f->kind == KIND_SCALAR) {
        duckdb_scalar_function s = duckdb_create_scalar_function();
        duckdb_scalar_function_set_name(s, name);
        for (int i = 0; i < f->nargs; i++) {
            duckdb_logical_type t = logical_type(f->codes[i]);
            duckdb_scalar_function_add_parameter(s, t);
            duckdb_destroy_logical_type(&t);
        }
        duckdb_scalar_function_set_return_type(s, rtype);
        /* NULLs are ours: a strict function's NULL rows never reach the guest, and any
           function may return NULL. */
        duckdb_scalar_function_set_special_handling(s);
        if (!deterministic) duckdb_scalar_function_set_volatile(s);
        duckdb_scalar_function_set_extra_info(s, f, release_reference);
        duckdb_scalar_function_set_init(s, scalar_init);
        duckdb_scalar_function_set_bind(s, scalar_bind);
        duckdb_scalar_function_set_function(s, scalar_call);
        Py_BEGIN_ALLOW_THREADS
        rc = duckdb_register_scalar_function(self->conn, s);
        duckdb_destroy_scalar_function(&s);
        Py_END_ALLOW_THREADS
    } else {
        duckdb_aggregate_function a = duckdb_create_aggregate_function();
        duckdb_aggregate_function_set_name(a, name);
        for (int i = 0; i < f->nargs; i++) {
            duckdb_logical_type t = logical_type(f->codes[i]);
            duckdb_aggregate_function_add_parameter(a, t);
            duckdb_destroy_logical_type(&t);
        }
        duckdb_aggregate_function_set_return_type(a, rtype);
        duckdb_aggregate_function_set_functions(a, agg_state_size, agg_init, agg_update, agg_combine, agg_finalize);
        duckdb_aggregate_function_set_destructor(a, agg_destroy);
        duckdb_aggregate_function_set_special_handling(a);
        duckdb_aggregate_function_set_extra_info(a, f, release_reference);
        Py_BEGIN_ALLOW_THREADS
        rc = duckdb_register_aggregate_function(self->conn, a);
        duckdb_destroy_aggregate_function(&a);
        Py_END_ALLOW_THREADS
    }
    duckdb_destroy_logical_type(&rtype);
    if (rc == DuckDBError) {
        PyErr_Format(PyExc_RuntimeError, "DuckDB refused to register `%s`", name);
        return NULL;
    }
    Py_RETURN_NONE;
}

/* The token function: no arguments, returns the BIGINT in its extra info. Which database a
   connection is in cannot be asked from Python; this answers it. */
static void token_call(duckdb_function_info info, duckdb_data_chunk input, duckdb_vector output) {
    int64_t token = *(int64_t *)duckdb_scalar_function_get_extra_info(info);
    idx_t rows = duckdb_data_chunk_get_size(input);
    int64_t *out = duckdb_vector_get_data(output);
    for (idx_t i = 0; i < (rows ? rows : 1); i++) out[i] = token;
}

static PyObject *Registrar_register_token(Registrar *self, PyObject *args) {
    const char *name;
    long long value;
    if (!PyArg_ParseTuple(args, "sL", &name, &value) || registrar_open(self)) return NULL;
    int64_t *token = malloc(sizeof *token);
    if (!token) return PyErr_NoMemory();
    *token = value;
    duckdb_scalar_function s = duckdb_create_scalar_function();
    duckdb_scalar_function_set_name(s, name);
    duckdb_logical_type t = duckdb_create_logical_type(DUCKDB_TYPE_BIGINT);
    duckdb_scalar_function_set_return_type(s, t);
    duckdb_destroy_logical_type(&t);
    duckdb_scalar_function_set_volatile(s);
    duckdb_scalar_function_set_extra_info(s, token, free);
    duckdb_scalar_function_set_function(s, token_call);
    duckdb_state rc;
    Py_BEGIN_ALLOW_THREADS
    rc = duckdb_register_scalar_function(self->conn, s);
    duckdb_destroy_scalar_function(&s);
    Py_END_ALLOW_THREADS
    if (rc == DuckDBError) {
        PyErr_Format(PyExc_RuntimeError, "DuckDB refused to register `%s`", name);
        return NULL;
    }
    Py_RETURN_NONE;
}

static void registrar_close(Registrar *self) {
    if (!self->conn) return;
    duckdb_connection conn = self->conn;
    self->conn = NULL;
    /* The database may close here (this was its last connection), destroying our functions,
       whose references are given back with the GIL: let it go meanwhile. */
    if (PyGILState_Check()) {
        Py_BEGIN_ALLOW_THREADS
        duckdb_disconnect(&conn);
        Py_END_ALLOW_THREADS
    } else {
        duckdb_disconnect(&conn);
    }
}

static PyObject *Registrar_close(Registrar *self, PyObject *unused) {
    registrar_close(self);
    Py_RETURN_NONE;
}

static PyObject *Registrar_get_closed(Registrar *self, void *closure) { return PyBool_FromLong(self->conn == NULL); }

static void Registrar_dealloc(Registrar *self) {
    if (!finalizing()) registrar_close(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Registrar_methods[] = {
    {"register", (PyCFunction)Registrar_register, METH_VARARGS,
     "register(DuckFunction, deterministic, sql_name=its name)"},
    {"register_token", (PyCFunction)Registrar_register_token, METH_VARARGS,
     "register_token(name, value): a function of no arguments returning value"},
    {"close", (PyCFunction)Registrar_close, METH_NOARGS, "disconnect (the database may close then)"},
    {NULL},
};

static PyGetSetDef Registrar_getset[] = {
    {"closed", (getter)Registrar_get_closed, NULL, "True once closed", NULL},
    {NULL},
};

static PyTypeObject RegistrarType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "wasmudf._speedups.Registrar",
    .tp_basicsize = sizeof(Registrar),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "a connection of wasmudf's own to a database that loaded the extension",
    .tp_dealloc = (destructor)Registrar_dealloc,
    .tp_methods = Registrar_methods,
    .tp_getset = Registrar_getset,
};

/* ---- the extension's entry point ------------------------------------------------------------ */

/* Called by the shim's wasmudf_init_c_api with the GIL held. */
static bool duckdb_attach(duckdb_extension_info info, struct duckdb_extension_access *access) {
    const duckdb_ext_api_v1 *table = access->get_api(info, DUCKDB_EXTENSION_API_VERSION_STRING);
    if (!table) return false; /* DuckDB set the error: it does not speak this API version */
    duckdb_ext_api = *table;
    duckdb_database *db = access->get_database(info);
    if (!db) return false;
    Registrar *r = PyObject_New(Registrar, &RegistrarType);
    if (!r) {
        PyErr_Clear();
        access->set_error(info, "wasmudf: out of memory");
        return false;
    }
    r->conn = NULL;
    if (duckdb_connect(*db, &r->conn) == DuckDBError) {
        r->conn = NULL;
        Py_DECREF(r);
        access->set_error(info, "wasmudf: cannot open a connection to the database");
        return false;
    }
    if (PyList_Append(attached, (PyObject *)r) < 0) {
        PyErr_Clear();
        Py_DECREF(r);
        access->set_error(info, "wasmudf: out of memory");
        return false;
    }
    Py_DECREF(r);
    return true;
}

static PyObject *py_duckdb_take_attached(PyObject *self, PyObject *unused) {
    PyObject *taken = PyList_GetSlice(attached, 0, PyList_GET_SIZE(attached));
    if (taken && PyList_SetSlice(attached, 0, PyList_GET_SIZE(attached), NULL) < 0) Py_CLEAR(taken);
    return taken;
}

static PyMethodDef duckdb_methods[] = {
    {"duckdb_interrupt", py_duckdb_interrupt, METH_VARARGS,
     "duckdb_interrupt(token, connection_id): stop that connection's running native calls"},
    {"duckdb_forget_connection", py_duckdb_forget_connection, METH_VARARGS,
     "duckdb_forget_connection(token, connection_id): the connection closed"},
    {"duckdb_take_attached", py_duckdb_take_attached, METH_NOARGS,
     "the Registrars of the databases that loaded the extension since the last call"},
    {NULL},
};

int duckdb_add_to_module(PyObject *module) {
    if (PyType_Ready(&RegistrarType) < 0 || PyType_Ready(&DuckFunctionType) < 0) return -1;
    if (!(attached = PyList_New(0))) return -1;
    PyObject *capsule = PyCapsule_New((void *)duckdb_attach, "wasmudf._speedups._duckdb_attach", NULL);
    if (!capsule || PyModule_AddObjectRef(module, "_duckdb_attach", capsule) < 0) {
        Py_XDECREF(capsule);
        return -1;
    }
    Py_DECREF(capsule);
    if (PyModule_AddObjectRef(module, "Registrar", (PyObject *)&RegistrarType) < 0 ||
        PyModule_AddObjectRef(module, "DuckFunction", (PyObject *)&DuckFunctionType) < 0)
        return -1;
    for (PyMethodDef *m = duckdb_methods; m->ml_name; m++) {
        PyObject *fn = PyCFunction_New(m, NULL);
        int rc = fn ? PyModule_AddObjectRef(module, m->ml_name, fn) : -1;
        Py_XDECREF(fn);
        if (rc < 0) return -1;
    }
    return 0;
}

#endif /* WASMUDF_DUCKDB */
