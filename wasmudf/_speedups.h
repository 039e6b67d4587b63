/*
 * Shared by the C accelerator's files: the wasmtime C API by address, the ABI's constants and
 * the per-instance Core. _speedups.c has the overview; adapters/_sqlite.c (the SQLite adapter's C
 * part) the per-row SQL functions.
 */
#ifndef WASMUDF_SPEEDUPS_H
#define WASMUDF_SPEEDUPS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

/* ---- the wasmtime C API, by address (filled by _speedups.init) --------------------- */

typedef void *(*call_unchecked_fn)(void *ctx, const void *func, void *args, size_t nargs, void **trap);
typedef uint8_t *(*memory_data_fn)(const void *ctx, const void *mem);
typedef size_t (*memory_size_fn)(const void *ctx, const void *mem);
typedef void (*set_deadline_fn)(void *ctx, uint64_t ticks);
typedef void *(*set_fuel_fn)(void *ctx, uint64_t fuel);
typedef void (*increment_epoch_fn)(void *engine);
typedef void *(*error_new_fn)(const char *message);
typedef void *(*epoch_reached_fn)(void *ctx, void *data, uint64_t *delta, uint8_t *kind);
typedef void (*deadline_callback_fn)(void *store, epoch_reached_fn callback, void *data, void (*finalizer)(void *));

typedef struct {
    call_unchecked_fn call;
    memory_data_fn memory_data;
    memory_size_fn memory_size;
    set_deadline_fn set_deadline;
    set_fuel_fn set_fuel;
    increment_epoch_fn increment_epoch;
    error_new_fn error_new;
    deadline_callback_fn deadline_callback;
} WasmtimeApi;

extern WasmtimeApi api;

/* ---- the ABI ----------------------------------------------------------------------- */

#define DESC 32            /* bytes per column descriptor */
#define MAX_PARAMS 32      /* ABI: at most 32 parameters */
#define RESET_EVERY 64     /* see PyCore.frame_block */
/* A variable-length result is allocated by the guest in its arena, and its scratch grows with
   variable-length input: reuse the frame block (no reset) until this many such bytes have
   piled up since the last reset. */
#define RESET_SCRATCH_BYTES (1u << 20)

enum { ABI_BOOL = 1, ABI_INT32, ABI_INT64, ABI_FLOAT32, ABI_FLOAT64, ABI_UTF8, ABI_BINARY, ABI_DATE, ABI_TIMESTAMP,
       ABI_TIMESTAMPTZ, ABI_DECIMAL, ABI_LIST, ABI_STRUCT };

/* date: int32 days; timestamp and timestamptz: int64 microseconds (abi.py, temporal.py);
   decimal: a 16-byte integer (its precision is checked where results are read, in Python).
   A list or a struct has children with descriptors of their own: nested.py lays those out,
   never a core, so they have no width here and the cores refuse them. */
static inline int type_width(int code) {
    switch (code) {
    case ABI_BOOL: return 1;
    case ABI_INT32: case ABI_FLOAT32: case ABI_DATE: return 4;
    case ABI_INT64: case ABI_FLOAT64: case ABI_TIMESTAMP: case ABI_TIMESTAMPTZ: return 8;
    case ABI_DECIMAL: return 16;
    default: return 0;
    }
}

static inline int is_varlen(int code) { return code == ABI_UTF8 || code == ABI_BINARY; }
static inline uint64_t align8(uint64_t n) { return (n + 7) & ~(uint64_t)7; }
/* wasm is little-endian, so are x86 and arm */
static inline void put_u32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static inline void put_u64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static inline uint32_t get_u32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }

static inline void put_desc(uint8_t *p, uint32_t type, uint32_t length, uint32_t null_count, uint32_t validity,
                            uint32_t offsets, uint32_t values, uint32_t values_len) {
    put_u32(p, type); put_u32(p + 4, length); put_u32(p + 8, null_count); put_u32(p + 12, validity);
    put_u32(p + 16, offsets); put_u32(p + 20, values); put_u32(p + 24, values_len); put_u32(p + 28, 0);
}

extern const char *FIELD_NAMES[8]; /* of a column descriptor's eight u32 fields */

/* ---- Core: one instance's store, called from C ------------------------------------- */

typedef int (*native_check_fn)(void *arg);

typedef struct {
    PyObject_HEAD
    void *ctx;
    void *mem;
    void *reset_fn;
    void *alloc_fn;
    uint8_t *base;   /* linear memory: the engine never moves it (see runtime._make_config) */
    volatile uint64_t *epoch; /* the native ticker's count, or NULL: arm before every call */
    uint64_t armed_epoch;
    int armed_per_tick;   /* the armed deadline is one tick (interruptible) rather than the limit */
    double call_ns;       /* recent batch-call durations (EWMA): is releasing the GIL worth it? */
    long long ticks; /* epoch ticks per call; < 0: no time limit */
    long long fuel;  /* fuel per call; < 0: no fuel metering */
    uint32_t block, capacity;
    int calls_since_reset;
    uint64_t scratch_bytes; /* variable-length bytes in and out since the last reset */
    int dead;
    PyObject *before_call; /* None, or called before every guest call */
    PyObject *on_failure;  /* raises the WasmUdfError for (kind, what, detail) */
    PyObject *interrupt_check; /* None, or true once the caller's query was interrupted */
    native_check_fn native_check; /* or this, asked without the GIL (SQLite's is_interrupted) */
    void *native_check_arg;
    long long ticks_left;  /* while interruptible: epoch ticks this call has left */
    PyObject *owner;       /* the Instance: keeps the store and the Func structs alive */
} Core;

extern PyTypeObject CoreType;

/* Arm the deadline and fuel and call `func` with up to three i32 arguments. Touches no
   Python object, so it may run without the GIL. 0 with the i32 result in *result, or -1
   with wasmtime's *err or *trap (report it with report_call_failure). */
int core_call(Core *c, void *func, uint32_t a0, uint32_t a1, uint32_t a2, uint32_t *result, void **err, void **trap);

/* Run the Instance's before_call hook, if it has one (GIL held); -1 when it raised. */
int core_before_call(Core *c);

/* Failures, reported through the Instance's on_failure, which raises; all return -1. */
int fail(Core *c, const char *kind, PyObject *what, PyObject *detail);
int fail_invalid(Core *c, PyObject *what, const char *fmt, ...);
int report_call_failure(Core *c, PyObject *what, void *err, void *trap);

/* The block for one call's frame; see PyCore.frame_block for the reuse rule. */
int frame_block(Core *c, uint64_t size, int fresh, PyObject *what, uint32_t *out);
/* The same when the current block can be reused without calling the guest; else 0. */
int frame_block_reusable(Core *c, uint64_t size, uint32_t *out);

/* The guest's output descriptor (and a variable-length result's offsets), checked without
   the GIL; report_output_failure (GIL held) raises what check_output found. */
enum { OUTPUT_INVALID = 1, OUTPUT_LIMIT = 2 };
typedef struct {
    int kind;
    uint64_t size;      /* OUTPUT_LIMIT: the result's size */
    char message[256];  /* OUTPUT_INVALID: what is wrong */
} OutputFailure;
int check_output(Core *c, uint32_t out_at, const uint32_t want[8], int rcode, Py_ssize_t rows, long long output_limit,
                 OutputFailure *f);
int report_output_failure(Core *c, PyObject *what, const OutputFailure *f);

/* Whether s[0..n) is well-formed UTF-8 (what Python's strict decoder and Arrow accept); else
   *bad is the offset of the first bad byte. */
int utf8_valid(const uint8_t *s, size_t n, size_t *bad);

/* adapters/_sqlite.c: adds RowCaller, RowBuffer and the SQLite entry points to the module. */
int sqlite_add_to_module(PyObject *module);

/* adapters/_duckdb.c: adds the DuckDB extension's entry point and types (when built with
   DuckDB's headers; else nothing). */
int duckdb_add_to_module(PyObject *module);

#endif
