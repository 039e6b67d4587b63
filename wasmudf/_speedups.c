/*
 * wasmudf._speedups: the hot paths of calling a guest, in C.
 *
 * Optional: when this extension is missing (no compiler at install time) or switched off
 * (WASMUDF_PURE_PYTHON=1), the same work is done in Python by instance.py/columns.py/
 * functions.py, with the same checks and the same errors. The two paths are tested alike.
 *
 * We do not link against wasmtime: wasmudf._native hands us the addresses of the few C API
 * functions we need from the library wasmtime-py already loaded, so both always agree.
 *
 * Pieces:
 *   Ticker     a native thread advancing an engine's epoch: it needs no GIL, so a guest
 *              running with the GIL held still meets its deadline.
 *   Core       one per wasmudf Instance (one store, one thread): calls exports, manages
 *              the call frame block, and runs a whole batch (copy in, call, check, copy out).
 *   RowCaller  (adapters/_sqlite.c) the per-row SQL function for a fixed-width scalar on SQLite, called
 *              by apsw or registered with SQLite directly.
 *   DuckFunction (adapters/_duckdb.c) a scalar or aggregate registered with DuckDB through its C
 *              extension API, called on DuckDB's worker threads without the GIL.
 *
 * Failures are reported by calling the Instance's `on_failure(kind, what, detail)`, which
 * raises the right WasmUdfError; the messages live in one place, in Python.
 */
#include "_speedups.h"
#include <structmember.h>
#include <pthread.h>
#include <stdio.h>
#include <time.h>

WasmtimeApi api;

#define NO_DEADLINE (1ULL << 62)
#define BATCH_MAX_BYTES 0x7fff0000u
#define RELEASE_GIL_ABOVE_NS 50000.0

const char *FIELD_NAMES[8] = {"type", "length", "null_count", "validity", "offsets", "values", "values_len", "reserved"};

static PyObject *py_init(PyObject *self, PyObject *args) {
    unsigned long long call, data, size, deadline, fuel, epoch, error_new, callback;
    if (!PyArg_ParseTuple(args, "KKKKKKKK", &call, &data, &size, &deadline, &fuel, &epoch, &error_new, &callback))
        return NULL;
    api.error_new = (error_new_fn)(uintptr_t)error_new;
    api.deadline_callback = (deadline_callback_fn)(uintptr_t)callback;
    api.call = (call_unchecked_fn)(uintptr_t)call;
    api.memory_data = (memory_data_fn)(uintptr_t)data;
    api.memory_size = (memory_size_fn)(uintptr_t)size;
    api.set_deadline = (set_deadline_fn)(uintptr_t)deadline;
    api.set_fuel = (set_fuel_fn)(uintptr_t)fuel;
    api.increment_epoch = (increment_epoch_fn)(uintptr_t)epoch;
    Py_RETURN_NONE;
}

/* ---- Ticker ----------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    void *engine;
    long interval_us;
    volatile uint64_t epoch;
} Ticker;

static void *ticker_main(void *arg) {
    Ticker *t = (Ticker *)arg;
    struct timespec ts = {t->interval_us / 1000000, (t->interval_us % 1000000) * 1000};
    for (;;) {
        nanosleep(&ts, NULL);
        api.increment_epoch(t->engine);
        __atomic_add_fetch(&t->epoch, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

static int Ticker_init(Ticker *self, PyObject *args, PyObject *kw) {
    unsigned long long engine;
    long interval_us;
    if (!PyArg_ParseTuple(args, "Kl", &engine, &interval_us)) return -1;
    if (!api.increment_epoch) { PyErr_SetString(PyExc_RuntimeError, "_speedups.init was not called"); return -1; }
    if (interval_us <= 0) { PyErr_SetString(PyExc_ValueError, "interval must be positive"); return -1; }
    self->engine = (void *)(uintptr_t)engine;
    self->interval_us = interval_us;
    pthread_t thread;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&thread, &attr, ticker_main, self);
    pthread_attr_destroy(&attr);
    if (rc) { PyErr_SetString(PyExc_OSError, "cannot start the epoch ticker thread"); return -1; }
    Py_INCREF(self); /* the thread uses it forever (engines live as long as the process) */
    return 0;
}

static PyObject *Ticker_get_epoch(Ticker *self, void *closure) {
    return PyLong_FromUnsignedLongLong(__atomic_load_n(&self->epoch, __ATOMIC_RELAXED));
}

static PyGetSetDef Ticker_getset[] = {
    {"epoch", (getter)Ticker_get_epoch, NULL, "epochs advanced so far", NULL},
    {NULL},
};

static PyTypeObject TickerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "wasmudf._speedups.Ticker",
    .tp_basicsize = sizeof(Ticker),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Ticker(engine_address, interval_us): a native thread advancing the epoch",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Ticker_init,
    .tp_getset = Ticker_getset,
};

/* ---- UTF-8 -------------------------------------------------------------------------- */

/* Whether s[0..n) is well-formed UTF-8 (no overlong forms, surrogates or code points past
   U+10FFFF: what Python's strict decoder and Arrow accept); else *bad is the first bad byte. */
int utf8_valid(const uint8_t *s, size_t n, size_t *bad) {
    size_t i = 0;
    while (i < n) {
        if (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (!(w & 0x8080808080808080ull)) { i += 8; continue; }
        }
        uint8_t c = s[i];
        if (c < 0x80) { i++; continue; }
        size_t need;
        uint32_t cp;
        if (c >= 0xC2 && c <= 0xDF) { need = 1; cp = c & 0x1F; }
        else if (c >= 0xE0 && c <= 0xEF) { need = 2; cp = c & 0x0F; }
        else if (c >= 0xF0 && c <= 0xF4) { need = 3; cp = c & 0x07; }
        else goto fail;
        if (n - i - 1 < need) goto fail;
        for (size_t k = 1; k <= need; k++) {
            uint8_t b = s[i + k];
            if ((b & 0xC0) != 0x80) goto fail;
            cp = (cp << 6) | (b & 0x3F);
        }
        if ((need == 2 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) || (need == 3 && (cp < 0x10000 || cp > 0x10FFFF)))
            goto fail;
        i += need + 1;
    }
    return 1;
fail:
    if (bad) *bad = i;
    return 0;
}

/* ---- Core ------------------------------------------------------------------------- */

static PyObject *s_reset; /* interned "wasmudf_reset" */

/* Report a failure through on_failure, which raises; always returns -1. */
int fail(Core *c, const char *kind, PyObject *what, PyObject *detail) {
    c->dead = 1;
    if (!detail) return -1;
    PyObject *r = PyObject_CallFunction(c->on_failure, "sOO", kind, what, detail);
    Py_DECREF(detail);
    if (r) {
        Py_DECREF(r);
        PyErr_Format(PyExc_RuntimeError, "wasmudf: on_failure(%s) did not raise", kind);
    }
    return -1;
}

int fail_invalid(Core *c, PyObject *what, const char *fmt, ...) {
    va_list va;
    va_start(va, fmt);
    PyObject *msg = PyUnicode_FromFormatV(fmt, va);
    va_end(va);
    return fail(c, "invalid", what, msg);
}

int core_call(Core *c, void *func, uint32_t a0, uint32_t a1, uint32_t a2, uint32_t *result, void **err, void **trap) {
    /* A deadline is absolute (engine epoch + ticks): while the ticker has not moved since it
       was set, setting it again would change nothing. A call that can be interrupted gets a
       deadline every tick instead, where epoch_reached asks whether to stop. */
    uint64_t epoch = c->epoch ? __atomic_load_n(c->epoch, __ATOMIC_RELAXED) : 0;
    int per_tick = c->interrupt_check != Py_None || c->native_check;
    if (!c->epoch || epoch != c->armed_epoch || per_tick != c->armed_per_tick) {
        api.set_deadline(c->ctx, per_tick ? 1 : c->ticks < 0 ? NO_DEADLINE : (uint64_t)c->ticks);
        c->armed_epoch = epoch;
        c->armed_per_tick = per_tick;
    }
    c->ticks_left = c->ticks;
    *trap = NULL;
    if (c->fuel >= 0 && (*err = api.set_fuel(c->ctx, (uint64_t)c->fuel))) return -1;
    /* wasmtime_val_raw_t is a 16-byte union; an i32 sits in its first four bytes. */
    uint64_t slots[8] = {a0, 0, a1, 0, a2, 0, 0, 0};
    *err = api.call(c->ctx, func, slots, 4, trap);
    if (*err || *trap) return -1;
    *result = (uint32_t)slots[0];
    return 0;
}

int report_call_failure(Core *c, PyObject *what, void *err, void *trap) {
    return fail(c, "call", what,
                Py_BuildValue("(KK)", (unsigned long long)(uintptr_t)err, (unsigned long long)(uintptr_t)trap));
}

int core_before_call(Core *c) {
    if (c->before_call == Py_None) return 0;
    PyObject *r = PyObject_CallNoArgs(c->before_call);
    if (!r) return -1;
    Py_DECREF(r);
    return 0;
}

/* core_call with the Python side: before_call, optionally without the GIL, failures raised. */
static int invoke(Core *c, void *func, uint32_t a0, uint32_t a1, uint32_t a2, int release_gil,
                  uint32_t *result, PyObject *what) {
    if (core_before_call(c)) return -1;
    void *err, *trap;
    int rc;
    if (release_gil) {
        Py_BEGIN_ALLOW_THREADS
        rc = core_call(c, func, a0, a1, a2, result, &err, &trap);
        Py_END_ALLOW_THREADS
    } else {
        rc = core_call(c, func, a0, a1, a2, result, &err, &trap);
    }
    return rc ? report_call_failure(c, what, err, trap) : 0;
}

static int invoke_status(Core *c, void *func, uint32_t a0, uint32_t a1, uint32_t a2, int release_gil, PyObject *what) {
    uint32_t status;
    if (invoke(c, func, a0, a1, a2, release_gil, &status, what)) return -1;
    if (status) return fail(c, "status", what, PyLong_FromUnsignedLong(status));
    return 0;
}

static int core_alloc(Core *c, uint32_t size, uint32_t align, PyObject *what, uint32_t *out) {
    uint32_t addr;
    if (invoke(c, c->alloc_fn, size, align, 0, 0, &addr, what)) return -1;
    uint64_t msize = api.memory_size(c->ctx, c->mem);
    if (addr == 0 || addr % align || (uint64_t)addr + size > msize)
        return fail(c, "alloc", what, Py_BuildValue("(IIIK)", size, align, addr, (unsigned long long)msize));
    *out = addr;
    return 0;
}

static int core_reset(Core *c) {
    uint32_t ignored;
    if (invoke(c, c->reset_fn, 0, 0, 0, 0, &ignored, s_reset)) return -1;
    c->block = 0;
    c->capacity = 0;
    c->calls_since_reset = 0;
    c->scratch_bytes = 0;
    return 0;
}

int frame_block_reusable(Core *c, uint64_t size, uint32_t *out) {
    if (!c->block || c->capacity < size || c->calls_since_reset >= RESET_EVERY || c->scratch_bytes > RESET_SCRATCH_BYTES)
        return 0;
    c->calls_since_reset++;
    *out = c->block;
    return 1;
}

int frame_block(Core *c, uint64_t size, int fresh, PyObject *what, uint32_t *out) {
    if (size > BATCH_MAX_BYTES) {
        PyErr_Format(PyExc_OverflowError, "one call's frame would be %llu bytes", (unsigned long long)size);
        return -1;
    }
    if (!fresh && frame_block_reusable(c, size, out)) return 0;
    if (core_reset(c)) return -1;
    uint32_t cap = size > 4096 ? (uint32_t)size : 4096;
    uint32_t addr;
    if (core_alloc(c, cap, 8, what, &addr)) return -1;
    c->block = addr;
    c->capacity = cap;
    c->calls_since_reset = 1;
    *out = addr;
    return 0;
}

/* Whether the caller asked to stop: native_check needs no GIL; interrupt_check is Python.
   Either way other Python threads get to run first when we hold the GIL (one of them may be
   the one calling the engine's interrupt()). */
static int interrupt_requested(Core *c) {
    if (c->native_check) {
        if (PyGILState_Check()) {
            Py_BEGIN_ALLOW_THREADS
            Py_END_ALLOW_THREADS
        }
        return c->native_check(c->native_check_arg);
    }
    PyGILState_STATE gil = PyGILState_Ensure();
    Py_BEGIN_ALLOW_THREADS
    Py_END_ALLOW_THREADS
    PyObject *r = PyObject_CallNoArgs(c->interrupt_check);
    int stop = r ? PyObject_IsTrue(r) == 1 : 0;
    if (r) Py_DECREF(r);
    else PyErr_Clear(); /* a failing check is not an interruption */
    PyGILState_Release(gil);
    return stop;
}

/* The store's epoch deadline was reached. Without an interrupt check that is the time limit.
   With one, it runs every tick: it asks the check and counts down the time limit itself.
   The errors' texts are what instance.translate_errors recognizes. */
static void *epoch_reached(void *ctx, void *data, uint64_t *delta, uint8_t *kind) {
    Core *c = (Core *)data;
    int interruptible = c->native_check || (c->interrupt_check != NULL && c->interrupt_check != Py_None);
    if (!interruptible) return api.error_new("wasmudf: time limit");
    if (interrupt_requested(c)) return api.error_new("wasmudf: interrupted");
    if (c->ticks >= 0 && --c->ticks_left <= 0) return api.error_new("wasmudf: time limit");
    *delta = 1;
    *kind = 0; /* WASMTIME_UPDATE_DEADLINE_CONTINUE */
    return NULL;
}

static int Core_init(Core *self, PyObject *args, PyObject *kw) {
    unsigned long long store, ctx, mem, reset_fn, alloc_fn;
    long long ticks, fuel;
    PyObject *before, *on_failure, *owner, *ticker;
    if (!PyArg_ParseTuple(args, "KKKKKLLOOOO", &store, &ctx, &mem, &reset_fn, &alloc_fn, &ticks, &fuel, &ticker,
                          &before, &on_failure, &owner))
        return -1;
    if (!api.call) { PyErr_SetString(PyExc_RuntimeError, "_speedups.init was not called"); return -1; }
    self->ctx = (void *)(uintptr_t)ctx;
    self->mem = (void *)(uintptr_t)mem;
    self->reset_fn = (void *)(uintptr_t)reset_fn;
    self->alloc_fn = (void *)(uintptr_t)alloc_fn;
    self->ticks = ticks;
    self->fuel = fuel;
    self->base = api.memory_data(self->ctx, self->mem);
    if (PyObject_TypeCheck(ticker, &TickerType)) {
        self->epoch = &((Ticker *)ticker)->epoch; /* tickers live forever */
        self->armed_epoch = UINT64_MAX;
    }
    Py_INCREF(before); Py_XSETREF(self->before_call, before);
    Py_INCREF(on_failure); Py_XSETREF(self->on_failure, on_failure);
    Py_INCREF(owner); Py_XSETREF(self->owner, owner);
    Py_XSETREF(self->interrupt_check, Py_NewRef(Py_None));
    /* The owner (the Instance) keeps the store alive as long as this Core. */
    api.deadline_callback((void *)(uintptr_t)store, epoch_reached, self, NULL);
    return 0;
}

static int Core_traverse(Core *self, visitproc visit, void *arg) {
    Py_VISIT(self->before_call);
    Py_VISIT(self->on_failure);
    Py_VISIT(self->owner);
    Py_VISIT(self->interrupt_check);
    return 0;
}

static int Core_clear(Core *self) {
    Py_CLEAR(self->before_call);
    Py_CLEAR(self->on_failure);
    Py_CLEAR(self->owner);
    Py_CLEAR(self->interrupt_check);
    return 0;
}

static void Core_dealloc(Core *self) {
    PyObject_GC_UnTrack(self);
    Core_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Core_call(Core *self, PyObject *args) {
    unsigned long long func;
    PyObject *what;
    unsigned int a0 = 0, a1 = 0, a2 = 0;
    int release = 0;
    if (!PyArg_ParseTuple(args, "KU|IIIp", &func, &what, &a0, &a1, &a2, &release)) return NULL;
    uint32_t result;
    if (invoke(self, (void *)(uintptr_t)func, a0, a1, a2, release, &result, what)) return NULL;
    return PyLong_FromUnsignedLong(result);
}

static PyObject *Core_frame_block(Core *self, PyObject *args) {
    unsigned long long size;
    PyObject *what;
    int fresh;
    if (!PyArg_ParseTuple(args, "KUp", &size, &what, &fresh)) return NULL;
    uint32_t addr;
    if (frame_block(self, size, fresh, what, &addr)) return NULL;
    return PyLong_FromUnsignedLong(addr);
}

static PyObject *Core_reset(Core *self, PyObject *unused) {
    if (core_reset(self)) return NULL;
    Py_RETURN_NONE;
}

static PyObject *Core_alloc(Core *self, PyObject *args) {
    unsigned int size, align;
    PyObject *what;
    if (!PyArg_ParseTuple(args, "IIU", &size, &align, &what)) return NULL;
    uint32_t addr;
    if (core_alloc(self, size, align, what, &addr)) return NULL;
    return PyLong_FromUnsignedLong(addr);
}

static PyObject *Core_memory(Core *self, PyObject *unused) {
    uint8_t *base = self->base;
    size_t size = api.memory_size(self->ctx, self->mem);
    return Py_BuildValue("(Kn)", (unsigned long long)(uintptr_t)base, (Py_ssize_t)size);
}

/* -- one batch --------------------------------------------------------------------------

   columns: a sequence of (type_code, arrow_offset, null_count, validity, buffer1, buffer2)
   in Arrow's own layout (validity bitmap or None; values, or int32 offsets for utf8/binary;
   the data buffer for utf8/binary, else None). The frame is laid out as in
   PyCore._run_batch (pycore.py): [descriptors][per column: validity, offsets, values][out validity]
   [out values or offsets], every piece 8-aligned. */

typedef struct {
    int code;
    Py_ssize_t offset;
    uint32_t null_count;
    Py_buffer validity, buf1, buf2; /* .obj NULL when absent */
    uint64_t at_validity, at_offsets, at_values;
    uint32_t validity_size, offsets_size, values_size;
    uint32_t data_start; /* varlen: offsets[arrow_offset] */
} Column;

static void release_columns(Column *cols, int n) {
    for (int i = 0; i < n; i++) {
        if (cols[i].validity.obj) PyBuffer_Release(&cols[i].validity);
        if (cols[i].buf1.obj) PyBuffer_Release(&cols[i].buf1);
        if (cols[i].buf2.obj) PyBuffer_Release(&cols[i].buf2);
    }
}

static int get_buffer(PyObject *obj, Py_buffer *view) {
    memset(view, 0, sizeof(*view));
    if (obj == Py_None) return 0;
    return PyObject_GetBuffer(obj, view, PyBUF_SIMPLE);
}

/* Copy `n` bits starting at bit `off` of `src` (srclen bytes) to `dst`, starting at bit 0. */
static void copy_bits(uint8_t *dst, const uint8_t *src, Py_ssize_t srclen, Py_ssize_t off, Py_ssize_t n) {
    Py_ssize_t nbytes = (n + 7) / 8, first = off / 8;
    int shift = (int)(off % 8);
    if (!shift) {
        memcpy(dst, src + first, nbytes);
        return;
    }
    for (Py_ssize_t j = 0; j < nbytes; j++) {
        Py_ssize_t k = first + j;
        uint8_t lo = src[k] >> shift;
        uint8_t hi = k + 1 < srclen ? (uint8_t)(src[k + 1] << (8 - shift)) : 0;
        dst[j] = lo | hi;
    }
}

static int column_from(PyObject *item, Py_ssize_t rows, Column *col, PyObject *what) {
    /* A tuple (type code, offset, null count, validity, buffer1, buffer2); unpacked by hand,
       as PyArg_ParseTuple's format parsing costs more than the rest for a one-row call. */
    if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 6) {
        PyErr_SetString(PyExc_ValueError, "bad column description");
        return -1;
    }
    col->code = (int)PyLong_AsLong(PyTuple_GET_ITEM(item, 0));
    col->offset = PyLong_AsSsize_t(PyTuple_GET_ITEM(item, 1));
    unsigned long null_count = PyLong_AsUnsignedLong(PyTuple_GET_ITEM(item, 2));
    if (PyErr_Occurred()) return -1;
    PyObject *validity = PyTuple_GET_ITEM(item, 3), *b1 = PyTuple_GET_ITEM(item, 4), *b2 = PyTuple_GET_ITEM(item, 5);
    col->null_count = (uint32_t)null_count;
    if (null_count > UINT32_MAX || col->offset < 0 || (type_width(col->code) == 0 && !is_varlen(col->code))) {
        PyErr_SetString(PyExc_ValueError, "bad column description");
        return -1;
    }
    if (get_buffer(validity, &col->validity) || get_buffer(b1, &col->buf1) || get_buffer(b2, &col->buf2)) return -1;
    Py_ssize_t off = col->offset;
    /* The Arrow arrays come from the caller, not the guest, but a hand-built array can still
       be short: check every buffer covers the rows before reading it. */
    if (null_count) {
        if (!col->validity.obj || col->validity.len * 8 < off + rows) goto short_buffer;
        col->validity_size = (uint32_t)((rows + 7) / 8);
    }
    if (col->code == ABI_BOOL) {
        if (rows && (!col->buf1.obj || col->buf1.len * 8 < off + rows)) goto short_buffer;
        col->values_size = (uint32_t)rows;
    } else if (!is_varlen(col->code)) {
        int w = type_width(col->code);
        if (rows && (!col->buf1.obj || col->buf1.len < (off + rows) * w)) goto short_buffer;
        col->values_size = (uint32_t)(rows * w);
    } else {
        if (!col->buf1.obj || col->buf1.len < (off + rows + 1) * 4) goto short_buffer;
        const int32_t *o = (const int32_t *)col->buf1.buf;
        int32_t start = o[off], end = o[off + rows];
        if (start < 0 || end < start) goto short_buffer;
        if (end > start && (!col->buf2.obj || col->buf2.len < end)) goto short_buffer;
        col->data_start = (uint32_t)start;
        col->offsets_size = (uint32_t)((rows + 1) * 4);
        col->values_size = (uint32_t)(end - start);
    }
    return 0;
short_buffer:
    PyErr_Format(PyExc_ValueError, "`%U`: an argument array's buffers are shorter than its length", what);
    return -1;
}

static void write_column(uint8_t *frame, const Column *col, Py_ssize_t rows) {
    Py_ssize_t off = col->offset;
    if (col->validity_size)
        copy_bits(frame + col->at_validity, col->validity.buf, col->validity.len, off, rows);
    if (col->code == ABI_BOOL) {
        const uint8_t *bits = col->buf1.buf;
        uint8_t *dst = frame + col->at_values;
        for (Py_ssize_t i = 0; i < rows; i++) dst[i] = (bits[(off + i) >> 3] >> ((off + i) & 7)) & 1;
    } else if (!is_varlen(col->code)) {
        if (col->values_size)
            memcpy(frame + col->at_values, (const uint8_t *)col->buf1.buf + off * type_width(col->code), col->values_size);
    } else {
        const int32_t *o = (const int32_t *)col->buf1.buf + off;
        uint8_t *dst = frame + col->at_offsets;
        for (Py_ssize_t i = 0; i <= rows; i++) put_u32(dst + 4 * i, (uint32_t)(o[i] - (int32_t)col->data_start));
        if (col->values_size)
            memcpy(frame + col->at_values, (const uint8_t *)col->buf2.buf + col->data_start, col->values_size);
    }
}

/* A new output buffer of `size` bytes from `allocate` (pyarrow's allocator: pooled, so large
   results do not cost fresh pages every call), or bytes when allocate is None (cheaper for
   a few rows), with its bytes copied from `src`. */
static PyObject *output_buffer(PyObject *allocate, const uint8_t *src, Py_ssize_t size, uint8_t **dst_out) {
    if (allocate == Py_None) {
        PyObject *bytes = PyBytes_FromStringAndSize(NULL, size);
        if (!bytes) return NULL;
        uint8_t *dst = (uint8_t *)PyBytes_AS_STRING(bytes); /* ours until returned */
        if (src && size) memcpy(dst, src, size);
        if (dst_out) *dst_out = dst;
        return bytes;
    }
    PyObject *buf = PyObject_CallFunction(allocate, "n", size);
    if (!buf) return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(buf, &view, PyBUF_WRITABLE) < 0) { Py_DECREF(buf); return NULL; }
    if (view.len < size) {
        PyBuffer_Release(&view);
        Py_DECREF(buf);
        PyErr_SetString(PyExc_ValueError, "allocate() returned a short buffer");
        return NULL;
    }
    if (src && size) memcpy(view.buf, src, size);
    if (dst_out) *dst_out = view.buf; /* the buffer object keeps the memory alive */
    PyBuffer_Release(&view);
    return buf;
}

/* Check the output descriptor the guest handed back (and the offsets of a variable-length
   result) without touching Python: 0, or -1 with *f saying what is wrong. */
int check_output(Core *c, uint32_t out_at, const uint32_t want[8], int rcode, Py_ssize_t rows, long long output_limit,
                 OutputFailure *f) {
    uint8_t *base = c->base;
    uint64_t msize = api.memory_size(c->ctx, c->mem);
    uint32_t got[8];
    f->kind = OUTPUT_INVALID;
    for (int i = 0; i < 8; i++) got[i] = get_u32(base + out_at + 4 * i);
    /* The guest may write only null_count, and values/values_len of a varlen result. */
    static const int fixed_fields[] = {0, 1, 3, 4, 7};
    for (int k = 0; k < 5; k++) {
        int i = fixed_fields[k];
        if (got[i] != want[i]) {
            snprintf(f->message, sizeof f->message, "it changed the output descriptor's '%s' field from %u to %u",
                     FIELD_NAMES[i], want[i], got[i]);
            return -1;
        }
    }
    if (!is_varlen(rcode)) {
        if (got[5] == want[5] && got[6] == want[6]) return 0;
        snprintf(f->message, sizeof f->message, "it changed 'values' or 'values_len' of a fixed-width result");
        return -1;
    }
    uint32_t values_at = got[5], values_len = got[6];
    const uint8_t *offs = base + want[4];
    c->scratch_bytes += values_len; /* the guest allocated it in its arena */
    if (output_limit >= 0 && values_len > (unsigned long long)output_limit) {
        f->kind = OUTPUT_LIMIT;
        f->size = values_len;
        return -1;
    }
#define INVALID(...) do { snprintf(f->message, sizeof f->message, __VA_ARGS__); return -1; } while (0)
    if (values_len > 0x7fffffffu) INVALID("values_len %u is over 2 GiB", values_len);
    if (get_u32(offs) != 0) INVALID("offsets[0] is %u, not 0", get_u32(offs));
    for (Py_ssize_t i = 0; i < rows; i++) {
        uint32_t a = get_u32(offs + 4 * i), b = get_u32(offs + 4 * (i + 1));
        if (b < a) INVALID("offsets decrease at row %zd (%u then %u)", i, a, b);
    }
    if (get_u32(offs + 4 * rows) != values_len)
        INVALID("offsets[%zd] is %u but values_len is %u", rows, get_u32(offs + 4 * rows), values_len);
    if (values_len && (values_at == 0 || (uint64_t)values_at + values_len > msize))
        INVALID("values [0x%x, +%u) is outside the %llu-byte linear memory", values_at, values_len,
                (unsigned long long)msize);
#undef INVALID
    return 0;
}

int report_output_failure(Core *c, PyObject *what, const OutputFailure *f) {
    if (f->kind == OUTPUT_LIMIT) return fail(c, "output_limit", what, PyLong_FromUnsignedLongLong(f->size));
    return fail_invalid(c, what, "%s", f->message);
}

/* Read back and check the output descriptor and buffers; returns the result tuple. */
static PyObject *read_result(Core *c, PyObject *what, uint32_t out_at, const uint32_t want[8], int rcode,
                             Py_ssize_t rows, long long output_limit, PyObject *allocate) {
    OutputFailure failure;
    if (check_output(c, out_at, want, rcode, rows, output_limit, &failure))
        return report_output_failure(c, what, &failure), NULL;
    uint8_t *base = c->base;
    uint32_t values_at = get_u32(base + out_at + 20), values_len = get_u32(base + out_at + 24);
    const uint8_t *offs = base + want[4];

    Py_ssize_t vbytes = (rows + 7) / 8;
    const uint8_t *vsrc = base + want[3];
    PyObject *validity = Py_None;
    for (Py_ssize_t i = 0; i < vbytes; i++) {
        if (vsrc[i] != 0xFF) { validity = NULL; break; }
    }
    if (validity) Py_INCREF(validity);
    else if (!(validity = PyBytes_FromStringAndSize((const char *)vsrc, vbytes))) return NULL;

    if (rcode == ABI_BOOL) {
        uint8_t *dst;
        PyObject *bits = output_buffer(allocate, NULL, vbytes, &dst);
        if (!bits) { Py_DECREF(validity); return NULL; }
        const uint8_t *src = base + want[5];
        memset(dst, 0, vbytes);
        for (Py_ssize_t i = 0; i < rows; i++)
            if (src[i]) dst[i >> 3] |= (uint8_t)(1u << (i & 7));
        return Py_BuildValue("(NN)", validity, bits);
    }
    if (!is_varlen(rcode)) {
        PyObject *values = output_buffer(allocate, base + want[5], want[6], NULL);
        if (!values) { Py_DECREF(validity); return NULL; }
        return Py_BuildValue("(NN)", validity, values);
    }
    PyObject *offsets = output_buffer(allocate, offs, (rows + 1) * 4, NULL);
    PyObject *data = offsets ? output_buffer(allocate, base + values_at, values_len, NULL) : NULL;
    if (!data) { Py_DECREF(validity); Py_XDECREF(offsets); return NULL; }
    return Py_BuildValue("(NNN)", validity, offsets, data);
}

/* call_batch(func, what, rows, return_code, output_limit, allocate, columns, shape=0, state=0)
   -> (validity bytes or None, values) or (validity, offsets, data), the last from allocate(size)
   (bytes when allocate is None).
   shape SCALAR: func(args, nargs, out) over `rows` rows;
   shape FOLD: func(state, args, nargs) (an aggregate's __update/__inverse), no result: None;
   shape RESULT: func(state, out), no columns, one result row (__finalize/__value). */
enum { SHAPE_SCALAR = 0, SHAPE_FOLD = 1, SHAPE_RESULT = 2 };

static PyObject *run_batch(Core *self, unsigned long long func, PyObject *what, Py_ssize_t rows, int rcode,
                           long long output_limit, PyObject *allocate, PyObject *columns, int shape,
                           unsigned int state);

static PyObject *Core_call_batch(Core *self, PyObject *const *args, Py_ssize_t nargs) {
    /* METH_FASTCALL, unpacked by hand: this runs once per DuckDB vector. */
    if (nargs < 7 || nargs > 10) {
        PyErr_SetString(PyExc_TypeError, "call_batch takes 7 to 10 arguments");
        return NULL;
    }
    unsigned long long func = PyLong_AsUnsignedLongLong(args[0]);
    PyObject *what = args[1], *allocate = args[5], *columns = args[6];
    Py_ssize_t rows = PyLong_AsSsize_t(args[2]);
    int rcode = (int)PyLong_AsLong(args[3]);
    long long output_limit = PyLong_AsLongLong(args[4]);
    int shape = nargs > 7 ? (int)PyLong_AsLong(args[7]) : SHAPE_SCALAR;
    unsigned long state = nargs > 8 ? PyLong_AsUnsignedLong(args[8]) : 0;
    PyObject *interrupt_check = nargs > 9 ? args[9] : Py_None;
    if (PyErr_Occurred()) return NULL;
    if (!PyUnicode_Check(what) || state > UINT32_MAX) {
        PyErr_SetString(PyExc_TypeError, "call_batch: `what` must be a str and `state` a u32");
        return NULL;
    }
    if (interrupt_check == Py_None)
        return run_batch(self, func, what, rows, rcode, output_limit, allocate, columns, shape, state);
    /* For this call only: stop within a tick once interrupt_check() is true. */
    PyObject *previous = self->interrupt_check; /* owned; restored below */
    self->interrupt_check = Py_NewRef(interrupt_check);
    PyObject *result = run_batch(self, func, what, rows, rcode, output_limit, allocate, columns, shape, state);
    Py_SETREF(self->interrupt_check, previous);
    return result;
}

static PyObject *run_batch(Core *self, unsigned long long func, PyObject *what, Py_ssize_t rows, int rcode,
                           long long output_limit, PyObject *allocate, PyObject *columns, int shape,
                           unsigned int state) {
    PyObject *seq = PySequence_Fast(columns, "columns must be a sequence");
    if (!seq) return NULL;
    Py_ssize_t nargs = PySequence_Fast_GET_SIZE(seq);
    int has_output = shape != SHAPE_FOLD;
    if (nargs > MAX_PARAMS || rows < 0 || rows > 0x7fffffff || shape < 0 || shape > SHAPE_RESULT ||
        (has_output && type_width(rcode) == 0 && !is_varlen(rcode)) || (shape == SHAPE_RESULT && (nargs || rows != 1))) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "bad batch description");
        return NULL;
    }
    Column cols[MAX_PARAMS];
    memset(cols, 0, sizeof(cols));
    PyObject *result = NULL;
    /* Variable-length input is what a guest's own scratch tends to grow with: it counts
       towards the reset (see frame_block_reusable), as the result's bytes do below. */
    uint64_t varlen_in = 0;
    uint64_t pos = DESC * (uint64_t)(nargs + 1);
    for (Py_ssize_t i = 0; i < nargs; i++) {
        Column *col = &cols[i];
        if (column_from(PySequence_Fast_GET_ITEM(seq, i), rows, col, what)) goto done;
        if (is_varlen(col->code)) varlen_in += col->values_size;
        col->at_validity = pos;
        pos = align8(pos + col->validity_size);
        col->at_offsets = pos;
        pos = align8(pos + col->offsets_size);
        col->at_values = pos;
        pos = align8(pos + col->values_size);
    }
    uint64_t out_validity = pos, out_values = pos, out_size = 0;
    if (has_output) {
        pos = align8(pos + (rows + 7) / 8);
        out_values = pos;
        out_size = is_varlen(rcode) ? (rows + 1) * 4 : rows * type_width(rcode);
        pos = align8(pos + out_size);
    }

    uint32_t block;
    if (frame_block(self, pos < 8 ? 8 : pos, 0, what, &block)) goto done;
    self->scratch_bytes += varlen_in;
    uint8_t *frame = self->base + block;
    for (Py_ssize_t i = 0; i < nargs; i++) {
        Column *col = &cols[i];
        write_column(frame, col, rows);
        put_desc(frame + DESC * i, col->code, (uint32_t)rows, col->null_count,
                 col->validity_size ? block + (uint32_t)col->at_validity : 0,
                 is_varlen(col->code) ? block + (uint32_t)col->at_offsets : 0, block + (uint32_t)col->at_values,
                 col->values_size);
    }
    uint32_t want[8] = {(uint32_t)rcode, (uint32_t)rows, 0, block + (uint32_t)out_validity,
                        is_varlen(rcode) ? block + (uint32_t)out_values : 0,
                        is_varlen(rcode) ? 0 : block + (uint32_t)out_values,
                        is_varlen(rcode) ? 0 : (uint32_t)out_size, 0};
    uint32_t out_at = block + DESC * (uint32_t)nargs;
    if (has_output) {
        put_desc(frame + DESC * nargs, want[0], want[1], want[2], want[3], want[4], want[5], want[6]);
        memset(frame + out_validity, 0xFF, (rows + 7) / 8);
        /* Offsets start at zero, as the Python core's and the row path's do: a guest that
           leaves them is judged on the same bytes whichever path called it. */
        if (is_varlen(rcode)) memset(frame + out_values, 0, out_size);
    }
    /* Buffers are copied in; let other threads run while the guest works. */
    release_columns(cols, (int)nargs);
    memset(cols, 0, sizeof(cols));
    int failed;
    /* Let other threads run while the guest works, when the work is long enough to pay for
       handing the GIL over and back (a short call is faster holding it, and with DuckDB's
       threads the hand-over itself is what costs). */
    int release = self->call_ns > RELEASE_GIL_ABOVE_NS;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (shape == SHAPE_SCALAR)
        failed = invoke_status(self, (void *)(uintptr_t)func, block, (uint32_t)nargs, out_at, release, what);
    else if (shape == SHAPE_FOLD)
        failed = invoke_status(self, (void *)(uintptr_t)func, state, block, (uint32_t)nargs, release, what);
    else
        failed = invoke_status(self, (void *)(uintptr_t)func, state, out_at, 0, 0, what);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ns = (double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec);
    self->call_ns = 0.75 * self->call_ns + 0.25 * ns;
    if (failed) goto done;
    result = has_output ? read_result(self, what, out_at, want, rcode, rows, output_limit, allocate) : Py_NewRef(Py_None);
done:
    release_columns(cols, (int)nargs);
    Py_DECREF(seq);
    return result;
}

static PyMemberDef Core_members[] = {
    {"dead", T_INT, offsetof(Core, dead), 0, "set once the instance failed: it must not be used again"},
    {"interrupt_check", T_OBJECT_EX, offsetof(Core, interrupt_check), 0,
     "None, or a callable: true stops the running call within one epoch tick"},
    {NULL},
};

static PyMethodDef Core_methods[] = {
    {"call", (PyCFunction)Core_call, METH_VARARGS, "call(func, what, a0=0, a1=0, a2=0, release_gil=False) -> u32"},
    {"frame_block", (PyCFunction)Core_frame_block, METH_VARARGS, "frame_block(size, what, fresh) -> address"},
    {"reset", (PyCFunction)Core_reset, METH_NOARGS, "call wasmudf_reset"},
    {"alloc", (PyCFunction)Core_alloc, METH_VARARGS, "alloc(size, align, what) -> checked address"},
    {"memory", (PyCFunction)Core_memory, METH_NOARGS, "(base address, size) of linear memory"},
    {"call_batch", (PyCFunction)(void (*)(void))Core_call_batch, METH_FASTCALL,
     "one scalar call over a batch of Arrow columns"},
    {NULL},
};

PyTypeObject CoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "wasmudf._speedups.Core",
    .tp_basicsize = sizeof(Core),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Core(store, ctx, memory, reset_func, alloc_func, ticks, fuel, ticker, before_call, on_failure, owner)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Core_init,
    .tp_dealloc = (destructor)Core_dealloc,
    .tp_traverse = (traverseproc)Core_traverse,
    .tp_clear = (inquiry)Core_clear,
    .tp_members = Core_members,
    .tp_methods = Core_methods,
};

/* ---- module ----------------------------------------------------------------------- */

static PyMethodDef module_methods[] = {
    {"init", py_init, METH_VARARGS,
     "init(call, memory_data, memory_size, set_deadline, set_fuel, increment_epoch, error_new, deadline_callback)"},
    {NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "wasmudf._speedups", "C hot paths for wasmudf (optional)", -1, module_methods,
};

PyMODINIT_FUNC PyInit__speedups(void) {
    if (PyType_Ready(&TickerType) < 0 || PyType_Ready(&CoreType) < 0) return NULL;
    s_reset = PyUnicode_InternFromString("wasmudf_reset");
    PyObject *m = PyModule_Create(&module_def);
    if (!m) return NULL;
    if (PyModule_AddObjectRef(m, "Ticker", (PyObject *)&TickerType) < 0 ||
        PyModule_AddObjectRef(m, "Core", (PyObject *)&CoreType) < 0 || sqlite_add_to_module(m) < 0 ||
        duckdb_add_to_module(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
