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
 *   RowCaller  the per-row SQL function SQLite calls for a fixed-width scalar; anything it
 *              cannot handle itself (NULL in a `called` function, a value of the wrong type)
 *              goes to the Python path, which explains the problem.
 *
 * Failures are reported by calling the Instance's `on_failure(kind, what, detail)`, which
 * raises the right WasmUdfError; the messages live in one place, in Python.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

/* ---- the wasmtime C API, by address ----------------------------------------------- */

typedef void *(*call_unchecked_fn)(void *ctx, const void *func, void *args, size_t nargs, void **trap);
typedef uint8_t *(*memory_data_fn)(const void *ctx, const void *mem);
typedef size_t (*memory_size_fn)(const void *ctx, const void *mem);
typedef void (*set_deadline_fn)(void *ctx, uint64_t ticks);
typedef void *(*set_fuel_fn)(void *ctx, uint64_t fuel);
typedef void (*increment_epoch_fn)(void *engine);
typedef void *(*error_new_fn)(const char *message);
typedef void *(*epoch_reached_fn)(void *ctx, void *data, uint64_t *delta, uint8_t *kind);
typedef void (*deadline_callback_fn)(void *store, epoch_reached_fn callback, void *data, void (*finalizer)(void *));

static struct {
    call_unchecked_fn call;
    memory_data_fn memory_data;
    memory_size_fn memory_size;
    set_deadline_fn set_deadline;
    set_fuel_fn set_fuel;
    increment_epoch_fn increment_epoch;
    error_new_fn error_new;
    deadline_callback_fn deadline_callback;
} api;

#define DESC 32            /* bytes per column descriptor */
#define MAX_PARAMS 32      /* ABI: at most 32 parameters */
#define RESET_EVERY 64     /* see Instance.frame_block */
#define NO_DEADLINE (1ULL << 62)
#define BATCH_MAX_BYTES 0x7fff0000u
#define RELEASE_GIL_ABOVE_NS 50000.0

enum { ABI_BOOL = 1, ABI_INT32, ABI_INT64, ABI_FLOAT32, ABI_FLOAT64, ABI_UTF8, ABI_BINARY };

static int type_width(int code) {
    switch (code) {
    case ABI_BOOL: return 1;
    case ABI_INT32: case ABI_FLOAT32: return 4;
    case ABI_INT64: case ABI_FLOAT64: return 8;
    default: return 0;
    }
}

static int is_varlen(int code) { return code == ABI_UTF8 || code == ABI_BINARY; }

static uint64_t align8(uint64_t n) { return (n + 7) & ~(uint64_t)7; }

static void put_u32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); } /* wasm is little-endian, so is x86/arm */
static void put_u64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static uint32_t get_u32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }

static void put_desc(uint8_t *p, uint32_t type, uint32_t length, uint32_t null_count, uint32_t validity,
                     uint32_t offsets, uint32_t values, uint32_t values_len) {
    put_u32(p, type); put_u32(p + 4, length); put_u32(p + 8, null_count); put_u32(p + 12, validity);
    put_u32(p + 16, offsets); put_u32(p + 20, values); put_u32(p + 24, values_len); put_u32(p + 28, 0);
}

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

/* ---- Core ------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    void *ctx;
    void *mem;
    void *reset_fn;
    void *alloc_fn;
    uint8_t *base;   /* linear memory: the engine never moves it (see engine._make_config) */
    volatile uint64_t *epoch; /* the native ticker's count, or NULL: arm before every call */
    uint64_t armed_epoch;
    int armed_per_tick;   /* the armed deadline is one tick (interruptible) rather than the limit */
    double call_ns;       /* recent batch-call durations (EWMA): is releasing the GIL worth it? */
    long long ticks; /* epoch ticks per call; < 0: no time limit */
    long long fuel;  /* fuel per call; < 0: no fuel metering */
    uint32_t block, capacity;
    int calls_since_reset;
    int dead;
    PyObject *before_call; /* None, or called before every guest call */
    PyObject *on_failure;  /* raises the WasmUdfError for (kind, what, detail) */
    PyObject *interrupt_check; /* None, or true once the caller's query was interrupted */
    long long ticks_left;  /* with interrupt_check: epoch ticks this call has left */
    PyObject *owner;       /* the Instance: keeps the store and the Func structs alive */
} Core;

static PyObject *s_reset; /* interned "wasmudf_reset" */

/* Report a failure through on_failure, which raises; always returns -1. */
static int fail(Core *c, const char *kind, PyObject *what, PyObject *detail) {
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

static int fail_invalid(Core *c, PyObject *what, const char *fmt, ...) {
    va_list va;
    va_start(va, fmt);
    PyObject *msg = PyUnicode_FromFormatV(fmt, va);
    va_end(va);
    return fail(c, "invalid", what, msg);
}

/* Call an export with up to three i32 arguments; its i32 result in *result. */
static int invoke(Core *c, void *func, uint32_t a0, uint32_t a1, uint32_t a2, int release_gil,
                  uint32_t *result, PyObject *what) {
    if (c->before_call != Py_None) {
        PyObject *r = PyObject_CallNoArgs(c->before_call);
        if (!r) return -1;
        Py_DECREF(r);
    }
    /* A deadline is absolute (engine epoch + ticks): while the ticker has not moved since it
       was set, setting it again would change nothing. A call that can be interrupted gets a
       deadline every tick instead, where epoch_reached looks at interrupt_check. */
    uint64_t epoch = c->epoch ? __atomic_load_n(c->epoch, __ATOMIC_RELAXED) : 0;
    int per_tick = c->interrupt_check != Py_None;
    if (!c->epoch || epoch != c->armed_epoch || per_tick != c->armed_per_tick) {
        api.set_deadline(c->ctx, per_tick ? 1 : c->ticks < 0 ? NO_DEADLINE : (uint64_t)c->ticks);
        c->armed_epoch = epoch;
        c->armed_per_tick = per_tick;
    }
    c->ticks_left = c->ticks;
    if (c->fuel >= 0) {
        void *err = api.set_fuel(c->ctx, (uint64_t)c->fuel);
        if (err) return fail(c, "call", what, Py_BuildValue("(KK)", (unsigned long long)(uintptr_t)err, 0ULL));
    }
    /* wasmtime_val_raw_t is a 16-byte union; an i32 sits in its first four bytes. */
    uint64_t slots[8] = {a0, 0, a1, 0, a2, 0, 0, 0};
    void *trap = NULL, *err;
    if (release_gil) {
        Py_BEGIN_ALLOW_THREADS
        err = api.call(c->ctx, func, slots, 4, &trap);
        Py_END_ALLOW_THREADS
    } else {
        err = api.call(c->ctx, func, slots, 4, &trap);
    }
    if (err || trap)
        return fail(c, "call", what,
                    Py_BuildValue("(KK)", (unsigned long long)(uintptr_t)err, (unsigned long long)(uintptr_t)trap));
    *result = (uint32_t)slots[0];
    return 0;
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
    return 0;
}

/* The block for one call's frame; see Instance.frame_block for the reuse rule. */
static int frame_block(Core *c, uint64_t size, int fresh, PyObject *what, uint32_t *out) {
    if (size > BATCH_MAX_BYTES) {
        PyErr_Format(PyExc_OverflowError, "one call's frame would be %llu bytes", (unsigned long long)size);
        return -1;
    }
    if (fresh || !c->block || c->capacity < size || c->calls_since_reset >= RESET_EVERY) {
        if (core_reset(c)) return -1;
        uint32_t cap = size > 4096 ? (uint32_t)size : 4096;
        uint32_t addr;
        if (core_alloc(c, cap, 8, what, &addr)) return -1;
        c->block = addr;
        c->capacity = cap;
    }
    c->calls_since_reset++;
    *out = c->block;
    return 0;
}

/* The store's epoch deadline was reached. Without an interrupt check that is the time limit.
   With one, it runs every tick: it lets other Python threads run (one of them may be calling
   the engine's interrupt()), asks the check, and counts down the time limit itself. The
   errors' texts are what instance.translate_errors recognizes. */
static void *epoch_reached(void *ctx, void *data, uint64_t *delta, uint8_t *kind) {
    Core *c = (Core *)data;
    if (c->interrupt_check == NULL || c->interrupt_check == Py_None) return api.error_new("wasmudf: time limit");
    PyGILState_STATE gil = PyGILState_Ensure();
    Py_BEGIN_ALLOW_THREADS
    Py_END_ALLOW_THREADS
    PyObject *r = PyObject_CallNoArgs(c->interrupt_check);
    int stop = r ? PyObject_IsTrue(r) == 1 : 0;
    if (r) Py_DECREF(r);
    else PyErr_Clear(); /* a failing check is not an interruption */
    PyGILState_Release(gil);
    if (stop) return api.error_new("wasmudf: interrupted");
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
   columns.write_frame: [descriptors][per column: validity, offsets, values][out validity]
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
    PyObject *validity, *b1, *b2;
    unsigned int null_count;
    if (!PyArg_ParseTuple(item, "inIOOO", &col->code, &col->offset, &null_count, &validity, &b1, &b2)) return -1;
    col->null_count = null_count;
    if (col->offset < 0 || (type_width(col->code) == 0 && !is_varlen(col->code))) {
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

static const char *FIELD_NAMES[8] = {"type", "length", "null_count", "validity", "offsets", "values", "values_len", "reserved"};

/* A new output buffer of `size` bytes from `allocate` (pyarrow's allocator: pooled, so large
   results do not cost fresh pages every call), with its bytes copied from `src`. */
static PyObject *output_buffer(PyObject *allocate, const uint8_t *src, Py_ssize_t size, uint8_t **dst_out) {
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

/* Read back and check the output descriptor and buffers; returns the result tuple. */
static PyObject *read_result(Core *c, PyObject *what, uint32_t out_at, const uint32_t want[8], int rcode,
                             Py_ssize_t rows, long long output_limit, PyObject *allocate) {
    uint8_t *base = c->base;
    uint64_t msize = api.memory_size(c->ctx, c->mem);
    uint32_t got[8];
    for (int i = 0; i < 8; i++) got[i] = get_u32(base + out_at + 4 * i);
    /* The guest may write only null_count, and values/values_len of a varlen result. */
    static const int fixed_fields[] = {0, 1, 3, 4, 7};
    for (int k = 0; k < 5; k++) {
        int f = fixed_fields[k];
        if (got[f] != want[f])
            return fail_invalid(c, what, "it changed the output descriptor's '%s' field from %u to %u",
                                FIELD_NAMES[f], want[f], got[f]), NULL;
    }
    if (!is_varlen(rcode) && (got[5] != want[5] || got[6] != want[6]))
        return fail_invalid(c, what, "it changed 'values' or 'values_len' of a fixed-width result"), NULL;

    uint32_t values_at = got[5], values_len = got[6];
    const uint8_t *offs = base + want[4];
    if (is_varlen(rcode)) {
        /* Check everything before allocating anything. */
        if (output_limit >= 0 && values_len > (unsigned long long)output_limit)
            return fail(c, "output_limit", what, PyLong_FromUnsignedLong(values_len)), NULL;
        if (values_len > 0x7fffffffu)
            return fail_invalid(c, what, "values_len %u is over 2 GiB", values_len), NULL;
        if (get_u32(offs) != 0)
            return fail_invalid(c, what, "offsets[0] is %u, not 0", get_u32(offs)), NULL;
        for (Py_ssize_t i = 0; i < rows; i++) {
            uint32_t a = get_u32(offs + 4 * i), b = get_u32(offs + 4 * (i + 1));
            if (b < a) return fail_invalid(c, what, "offsets decrease at row %zd (%u then %u)", i, a, b), NULL;
        }
        if (get_u32(offs + 4 * rows) != values_len)
            return fail_invalid(c, what, "offsets[%zd] is %u but values_len is %u", rows, get_u32(offs + 4 * rows),
                                values_len), NULL;
        if (values_len && (values_at == 0 || (uint64_t)values_at + values_len > msize))
            return fail_invalid(c, what, "values [0x%x, +%u) is outside the %llu-byte linear memory", values_at,
                                values_len, (unsigned long long)msize), NULL;
    }

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
   -> (validity bytes or None, values) or (validity, offsets, data), the last from allocate(size).
   shape SCALAR: func(args, nargs, out) over `rows` rows;
   shape FOLD: func(state, args, nargs) (an aggregate's __update/__inverse), no result: None;
   shape RESULT: func(state, out), no columns, one result row (__finalize/__value). */
enum { SHAPE_SCALAR = 0, SHAPE_FOLD = 1, SHAPE_RESULT = 2 };

static PyObject *run_batch(Core *self, unsigned long long func, PyObject *what, Py_ssize_t rows, int rcode,
                           long long output_limit, PyObject *allocate, PyObject *columns, int shape,
                           unsigned int state);

static PyObject *Core_call_batch(Core *self, PyObject *args) {
    unsigned long long func;
    PyObject *what, *columns, *allocate;
    Py_ssize_t rows;
    int rcode;
    long long output_limit;
    int shape = SHAPE_SCALAR;
    unsigned int state = 0;
    PyObject *interrupt_check = Py_None;
    if (!PyArg_ParseTuple(args, "KUniLOO|iIO", &func, &what, &rows, &rcode, &output_limit, &allocate, &columns, &shape,
                          &state, &interrupt_check))
        return NULL;
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
    int fresh = is_varlen(rcode);
    uint64_t pos = DESC * (uint64_t)(nargs + 1);
    for (Py_ssize_t i = 0; i < nargs; i++) {
        Column *col = &cols[i];
        if (column_from(PySequence_Fast_GET_ITEM(seq, i), rows, col, what)) goto done;
        fresh |= is_varlen(col->code);
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
    if (frame_block(self, pos < 8 ? 8 : pos, fresh, what, &block)) goto done;
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
    {"call_batch", (PyCFunction)Core_call_batch, METH_VARARGS, "one scalar call over a batch of Arrow columns"},
    {NULL},
};

static PyTypeObject CoreType = {
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

/* ---- RowCaller -------------------------------------------------------------------- */

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
    Core *core;         /* bound instance, or NULL */
    void *func;
    unsigned long thread;
} RowCaller;

/* Layout of a row frame: [nargs descriptors][out descriptor][8-byte slot per argument]
   [out validity, 8 bytes][out value, 8 bytes]. */
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

static PyObject *to_fallback(RowCaller *r, PyObject *const *args, size_t nargsf) {
    return PyObject_Vectorcall(r->fallback, args, PyVectorcall_NARGS(nargsf), NULL);
}

static PyObject *RowCaller_vectorcall(RowCaller *r, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
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
        switch (r->codes[i]) {
        case ABI_INT32: case ABI_INT64: case ABI_BOOL: {
            if (!PyLong_Check(v)) return to_fallback(r, args, nargsf);
            int overflow;
            long long x = PyLong_AsLongLongAndOverflow(v, &overflow);
            if (overflow || (x == -1 && PyErr_Occurred())) { PyErr_Clear(); return to_fallback(r, args, nargsf); }
            if (r->codes[i] == ABI_INT32) {
                if (x < INT32_MIN || x > INT32_MAX) return to_fallback(r, args, nargsf);
                int32_t y = (int32_t)x;
                memcpy(&slots[i], &y, 4);
            } else if (r->codes[i] == ABI_BOOL) {
                slots[i] = x != 0;
            } else {
                memcpy(&slots[i], &x, 8);
            }
            break;
        }
        case ABI_FLOAT32: case ABI_FLOAT64: {
            double d;
            if (PyFloat_CheckExact(v)) d = PyFloat_AS_DOUBLE(v);
            else if (PyLong_Check(v) || PyFloat_Check(v)) {
                d = PyFloat_AsDouble(v);
                if (d == -1.0 && PyErr_Occurred()) { PyErr_Clear(); return to_fallback(r, args, nargsf); }
            } else return to_fallback(r, args, nargsf);
            if (r->codes[i] == ABI_FLOAT32) {
                float f = (float)d;
                memcpy(&slots[i], &f, 4);
            } else {
                memcpy(&slots[i], &d, 8);
            }
            break;
        }
        default:
            return to_fallback(r, args, nargsf);
        }
    }
    if (!r->core || r->core->dead || r->thread != PyThread_get_thread_ident()) {
        if (row_bind(r)) return NULL;
    }
    Core *c = r->core;
    uint32_t slots_at = DESC * (uint32_t)(n + 1);
    uint32_t validity_at = slots_at + 8 * (uint32_t)n, value_at = validity_at + 8;
    uint32_t block;
    Py_INCREF(c); /* a failure may unbind it */
    PyObject *result = NULL;
    if (frame_block(c, value_at + 8, 0, r->what, &block)) goto done;
    uint8_t *frame = c->base + block;
    for (Py_ssize_t i = 0; i < n; i++)
        put_desc(frame + DESC * i, r->codes[i], 1, 0, 0, 0, block + slots_at + 8 * (uint32_t)i, type_width(r->codes[i]));
    uint32_t want[8] = {(uint32_t)r->rcode, 1, 0, block + validity_at, 0, block + value_at, (uint32_t)type_width(r->rcode), 0};
    put_desc(frame + DESC * n, want[0], want[1], want[2], want[3], want[4], want[5], want[6]);
    /* Word stores: a memcpy/memset of a runtime size becomes `rep movs`, slow to start. */
    for (Py_ssize_t i = 0; i < n; i++) put_u64(frame + slots_at + 8 * i, slots[i]);
    put_u64(frame + validity_at, 0xFF);
    put_u64(frame + value_at, 0);
    uint32_t out_at = block + DESC * (uint32_t)n;
    PyObject *previous = c->interrupt_check; /* owned; restored below */
    c->interrupt_check = Py_NewRef(r->interrupt_check);
    int failed = invoke_status(c, r->func, block, (uint32_t)n, out_at, 0, r->what);
    Py_SETREF(c->interrupt_check, previous);
    if (failed) goto done;
    frame = c->base + block;
    for (int f = 0; f < 8; f++) {
        uint32_t got = get_u32(frame + DESC * n + 4 * f);
        if (f != 2 && got != want[f]) {
            fail_invalid(c, r->what, "it changed the output descriptor's '%s' field from %u to %u", FIELD_NAMES[f],
                         want[f], got);
            goto done;
        }
    }
    if (!(frame[validity_at] & 1)) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    const uint8_t *value = frame + value_at;
    switch (r->rcode) {
    case ABI_BOOL: result = PyBool_FromLong(value[0] != 0); break;
    case ABI_INT32: { int32_t x; memcpy(&x, value, 4); result = PyLong_FromLong(x); break; }
    case ABI_INT64: { int64_t x; memcpy(&x, value, 8); result = PyLong_FromLongLong(x); break; }
    case ABI_FLOAT32: { float x; memcpy(&x, value, 4); result = PyFloat_FromDouble(x); break; }
    case ABI_FLOAT64: { double x; memcpy(&x, value, 8); result = PyFloat_FromDouble(x); break; }
    }
done:
    Py_DECREF(c);
    return result;
}

static int RowCaller_init(RowCaller *self, PyObject *args, PyObject *kw) {
    PyObject *bind, *fallback, *what, *codes, *interrupt_check = Py_None;
    int strict, rcode;
    if (!PyArg_ParseTuple(args, "OOUOpi|O", &bind, &fallback, &what, &codes, &strict, &rcode, &interrupt_check))
        return -1;
    Py_INCREF(interrupt_check);
    Py_XSETREF(self->interrupt_check, interrupt_check);
    PyObject *seq = PySequence_Fast(codes, "codes must be a sequence");
    if (!seq) return -1;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n < 1 || n > MAX_PARAMS || type_width(rcode) == 0) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "RowCaller handles 1..32 fixed-width parameters and a fixed-width result");
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        long code = PyLong_AsLong(PySequence_Fast_GET_ITEM(seq, i));
        if (type_width((int)code) == 0) {
            Py_DECREF(seq);
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "RowCaller handles fixed-width parameters only");
            return -1;
        }
        self->codes[i] = (int)code;
    }
    Py_DECREF(seq);
    self->nargs = (int)n;
    self->strict = strict;
    self->rcode = rcode;
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
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(RowCaller, vectorcall),
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
    if (PyType_Ready(&TickerType) < 0 || PyType_Ready(&CoreType) < 0 || PyType_Ready(&RowCallerType) < 0)
        return NULL;
    s_reset = PyUnicode_InternFromString("wasmudf_reset");
    PyObject *m = PyModule_Create(&module_def);
    if (!m) return NULL;
    if (PyModule_AddObjectRef(m, "Ticker", (PyObject *)&TickerType) < 0 ||
        PyModule_AddObjectRef(m, "Core", (PyObject *)&CoreType) < 0 ||
        PyModule_AddObjectRef(m, "RowCaller", (PyObject *)&RowCallerType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
