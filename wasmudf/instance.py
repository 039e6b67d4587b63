"""One instantiated module in its own wasmtime Store: fast calls and checked memory access.

An :class:`Instance` belongs to one thread (ABI §7); :class:`InstancePool` hands each thread
its own and replaces an instance that failed. Calls go through ``wasmtime_func_call_unchecked``:
from the C accelerator's ``Core`` when it is built (~0.1 µs a call), else via ctypes with
preallocated argument slots (~1 µs); wasmtime-py's ``Func.__call__`` costs ~50 µs. Export
signatures were checked at load time, which is what makes the unchecked call sound.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import wasmtime
from wasmtime import _ffi as ffi

from . import _native
from .capabilities import CapabilityContext, LogBudget, host_imports
from .errors import (
    CallInterrupted,
    FuelExhausted,
    GuestError,
    GuestFailure,
    GuestTrap,
    InvalidGuestOutput,
    MemoryLimitExceeded,
    OutputLimitExceeded,
    StackLimitExceeded,
    TableLimitExceeded,
    TimeLimitExceeded,
)
from .limits import Limits

U32 = 0xFFFFFFFF
ERROR_MESSAGE_MAX = 4096
RESET_EVERY = 64
_NO_DEADLINE = 1 << 62


_symbol = _native.symbol
c_void_p, c_size_t, c_uint64 = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint64
# Our own prototypes over wasmtime-py's library, taking plain ints: much cheaper than the
# wrappers in wasmtime._bindings. The call itself releases the GIL (CFUNCTYPE) so DuckDB's
# threads run Wasm in parallel; the tiny accessors keep it (PYFUNCTYPE).
_call_unchecked = ctypes.CFUNCTYPE(c_void_p, c_void_p, c_void_p, c_void_p, c_size_t, c_void_p)(
    _symbol("wasmtime_func_call_unchecked")
)
_memory_data = ctypes.PYFUNCTYPE(c_void_p, c_void_p, c_void_p)(_symbol("wasmtime_memory_data"))
_memory_size = ctypes.PYFUNCTYPE(c_size_t, c_void_p, c_void_p)(_symbol("wasmtime_memory_data_size"))
_set_deadline = ctypes.PYFUNCTYPE(None, c_void_p, c_uint64)(_symbol("wasmtime_context_set_epoch_deadline"))
_error_new = ctypes.PYFUNCTYPE(c_size_t, ctypes.c_char_p)(_symbol("wasmtime_error_new"))
_EPOCH_CALLBACK = ctypes.CFUNCTYPE(
    c_size_t, c_void_p, c_void_p, ctypes.POINTER(c_uint64), ctypes.POINTER(ctypes.c_uint8)
)
_deadline_callback = ctypes.PYFUNCTYPE(None, c_void_p, _EPOCH_CALLBACK, c_void_p, c_void_p)(
    _symbol("wasmtime_store_epoch_deadline_callback")
)


@dataclass
class InstanceSpec:
    """Everything needed to make a fresh instance of one loaded module on any thread."""

    label: str
    compiled: wasmtime.Module
    engine: wasmtime.Engine
    ticker: Any
    limits: Limits
    capabilities: CapabilityContext
    granted_imports: set[str] = field(default_factory=set)
    wasi: bool = False
    has_initialize: bool = False
    has_error_export: bool = False
    tick_ms: float = 5.0


class Instance:
    """A store, an instance of the module in it, and fast calls into its exports."""

    MAX_SLOTS = 4

    def __init__(self, spec: InstanceSpec, function: str | None = None):
        """Instantiate the module in a new store: the start function, ``_initialize`` and the
        ABI version check run here, under the module's limits.

        Raises:
            GuestError: the instance could not start; the message names ``function`` (the SQL
                function whose call needed this instance) and the module.
        """
        try:
            self._start(spec)
        except GuestError as exc:
            raise start_failure(exc, function, spec.label) from exc.__cause__

    def _start(self, spec: InstanceSpec) -> None:
        self.spec = spec
        self.label = spec.label
        self._broken = False
        self._core: Any = None
        #: Aggregate states opened in this instance and not yet finished (leak checks).
        self.live_states = 0
        #: States dropped while open, to be finalized by this instance's own thread (see
        #: AggregateState.__del__); appending to a list is safe from any thread.
        self.orphaned_states: list[Any] = []
        limits = spec.limits
        store = wasmtime.Store(spec.engine)
        store.set_limits(
            memory_size=-1 if limits.memory_bytes is None else limits.memory_bytes,
            table_elements=-1 if limits.table_elements is None else limits.table_elements,
            instances=1,
            tables=1,
            memories=1,
        )
        self._store = store
        self._ctx = ctypes.cast(store._context(), c_void_p).value
        self._ticks = None if limits.timeout_ms is None else int(limits.timeout_ms // spec.tick_ms) + 2
        self._armed_epoch = -1
        self._fuel = limits.fuel
        # Only `log` keeps per-call state (its message budget); skip the reset otherwise.
        self._counts_logs = "log" in spec.granted_imports
        self._interrupt_check: Callable[[], bool] | None = None
        self._ticks_left: int | None = None
        self._slots = (ctypes.c_uint64 * (2 * self.MAX_SLOTS))()
        self._slots_addr = ctypes.addressof(self._slots)
        self._trap = ctypes.c_void_p()
        self._trap_addr = ctypes.addressof(self._trap)

        self._log_budget = LogBudget()
        linker = wasmtime.Linker(spec.engine)
        for name, (ty, fn) in host_imports(spec.capabilities, spec.granted_imports, self._log_budget).items():
            linker.define_func("wasmudf", name, ty, fn, access_caller=True)
        if spec.wasi:
            linker.define_wasi()
            store.set_wasi(_sandboxed_wasi())
        self.arm_deadline(force=True)
        with translate_errors(self, "instantiation"):
            if self._fuel is not None:
                store.set_fuel(self._fuel)
            instance = linker.instantiate(store, spec.compiled)
        self._exports = instance.exports(store)
        memory = self._exports["memory"]
        assert isinstance(memory, wasmtime.Memory)  # checked at load time
        self._memory = memory
        self._mem_addr = ctypes.addressof(memory._memory)
        self._func_addrs: dict[str, int] = {}
        self._scratch = (0, 0)
        self._calls_since_reset = 0
        self._keep: list[Any] = []
        speedups = _native.speedups
        if speedups is None:
            self._epoch_callback = _EPOCH_CALLBACK(self._epoch_reached)  # kept alive with self
            _deadline_callback(ctypes.cast(store.ptr(), c_void_p).value, self._epoch_callback, None, None)
        else:
            self._core = speedups.Core(
                ctypes.cast(store.ptr(), c_void_p).value,
                self._ctx,
                self._mem_addr,
                self.func_addr("wasmudf_reset"),
                self.func_addr("wasmudf_alloc"),
                -1 if self._ticks is None else self._ticks,
                -1 if self._fuel is None else self._fuel,
                spec.ticker,
                self._log_budget.new_call if self._counts_logs else None,
                self._on_failure,
                self,
            )
        if spec.has_initialize:
            self.call("_initialize", (), what="_initialize")
        version = self.call("wasmudf_abi_version", (), what="wasmudf_abi_version")
        if version != 1:
            self.broken = True
            raise InvalidGuestOutput(
                f"`wasmudf_abi_version` in {self.label} returned {version}; this host speaks ABI 1",
                function="wasmudf_abi_version",
                module=self.label,
            )

    @property
    def broken(self) -> bool:
        """True once a call failed: the instance's state is suspect and it must be replaced."""
        return self._broken

    @broken.setter
    def broken(self, value: bool) -> None:
        self._broken = value
        if value and self._core is not None:
            self._core.dead = 1

    @contextlib.contextmanager
    def interruptible(self, check: Callable[[], bool] | None) -> Iterator[None]:
        """Calls in this block stop within one epoch tick once ``check()`` is true."""
        core = self._core
        if check is None:
            yield
        elif core is None:
            previous, self._interrupt_check = self._interrupt_check, check
            try:
                yield
            finally:
                self._interrupt_check = previous
        else:
            previous, core.interrupt_check = core.interrupt_check, check
            try:
                yield
            finally:
                core.interrupt_check = previous

    @property
    def core(self) -> Any:
        """The C accelerator's handle on this instance, or None on the pure-Python path."""
        return self._core

    # -- calls ---------------------------------------------------------------------------

    def func_addr(self, export: str) -> int:
        addr = self._func_addrs.get(export)
        if addr is None:
            func = self._exports[export]
            assert isinstance(func, wasmtime.Func)
            self._keep.append(func)
            addr = self._func_addrs[export] = ctypes.addressof(func._func)
        return addr

    def arm_deadline(self, force: bool = False) -> None:
        """Set the epoch deadline for the next call.

        A deadline is absolute (epoch now + ticks); while the ticker has not advanced since we
        last set it, that absolute deadline is the same as a new one would be, so setting it
        again is skipped.
        """
        if self._interrupt_check is not None:
            # Interruptible: a deadline every tick, where _epoch_reached asks the check.
            _set_deadline(self._ctx, 1)
            self._ticks_left = self._ticks
            self._armed_epoch = -1
            return
        epoch = self.spec.ticker.epoch
        if force or epoch != self._armed_epoch:
            _set_deadline(self._ctx, _NO_DEADLINE if self._ticks is None else self._ticks)
            self._armed_epoch = epoch

    def _epoch_reached(self, _ctx: Any, _data: Any, delta: Any, kind: Any) -> int:
        """The pure-Python path's epoch callback, the twin of the C accelerator's: the time
        limit, or with an interrupt check, one look at it per tick. It runs on the calling
        thread, holding the GIL only for itself; it must not raise."""
        try:
            check = self._interrupt_check
            if check is not None:
                if check():
                    return _error_new(b"wasmudf: interrupted")
                if self._ticks_left is not None:
                    self._ticks_left -= 1
                    if self._ticks_left <= 0:
                        return _error_new(b"wasmudf: time limit")
                delta[0] = 1
                kind[0] = 0  # WASMTIME_UPDATE_DEADLINE_CONTINUE
                return 0
        except Exception:  # noqa: BLE001 - a failing check is not an interruption
            delta[0] = 1
            kind[0] = 0
            return 0
        return _error_new(b"wasmudf: time limit")

    def call(self, export: str, args: tuple[int, ...], *, what: str) -> int | None:
        """Call an export taking and returning i32s; the result as an unsigned u32, or None.

        Raises:
            GuestError: a trap or a limit, translated; the instance is then marked broken.
        """
        if self._core is not None:
            return self._core.call(self.func_addr(export), what, *args)
        slots = self._slots
        for i, value in enumerate(args):
            slots[2 * i] = value & U32
        self.arm_deadline()
        if self._fuel is not None:
            self._store.set_fuel(self._fuel)
        if self._counts_logs:
            self._log_budget.new_call()
        err = _call_unchecked(
            self._ctx, self.func_addr(export), self._slots_addr, self.MAX_SLOTS, self._trap_addr
        )
        if err or self._trap.value:
            trap, self._trap.value = self._trap.value, None
            self._raise_call_failure(err, trap, what)
        return slots[0] & U32

    def _raise_call_failure(self, err: int | None, trap: int | None, what: str) -> None:
        self.broken = True
        if trap:
            exc: Exception = wasmtime.Trap._from_ptr(ctypes.cast(trap, ctypes.POINTER(ffi.wasm_trap_t)))
        else:
            exc = wasmtime.WasmtimeError._from_ptr(ctypes.cast(err, ctypes.POINTER(ffi.wasmtime_error_t)))
        with translate_errors(self, what):
            raise exc

    def status_call(self, export: str, args: tuple[int, ...], *, what: str) -> None:
        """Call an export returning a status; a non-zero status raises GuestFailure."""
        status = self.call(export, args, what=what)
        if status:
            self._raise_status(status, what)

    def _raise_status(self, status: int, what: str) -> None:
        self.broken = True
        message = self.guest_message()
        detail = f": {message}" if message else ""
        raise GuestFailure(
            f"`{what}` in {self.label} failed (status {status}){detail}",
            guest_message=message,
            function=what,
            module=self.label,
        )

    def invalid_output(self, what: str, message: str) -> InvalidGuestOutput:
        """The error for a result that breaks the ABI; marks the instance broken."""
        self.broken = True
        return InvalidGuestOutput(
            f"`{what}` in {self.label} returned invalid data: {message}", function=what, module=self.label
        )

    def output_limit_exceeded(self, what: str, size: int, limit: int) -> OutputLimitExceeded:
        self.broken = True
        return OutputLimitExceeded(
            f"`{what}` in {self.label} returned {size} bytes in one call, over "
            f"Limits.output_bytes = {limit}; raise the limit or return less",
            function=what,
            module=self.label,
        )

    def _on_failure(self, kind: str, what: str, detail: Any) -> None:
        """Raise the error for a failure the C accelerator found (it calls this)."""
        if kind == "call":
            err, trap = detail
            self._raise_call_failure(err, trap, what)
        elif kind == "status":
            self._raise_status(detail, what)
        elif kind == "alloc":
            size, align, addr, mem_size = detail
            self._raise_bad_alloc(what, size, align, addr, mem_size)
        elif kind == "invalid":
            raise self.invalid_output(what, detail)
        elif kind == "output_limit":
            limit = self.spec.limits.output_bytes
            raise self.output_limit_exceeded(what, detail, limit if limit is not None else -1)
        raise AssertionError(f"unknown failure kind {kind!r}")

    # -- the arena -----------------------------------------------------------------------

    def reset(self) -> None:
        if self._core is not None:
            self._core.reset()
            return
        self.call("wasmudf_reset", (), what="wasmudf_reset")
        self._scratch = (0, 0)
        self._calls_since_reset = 0

    def frame_block(self, size: int, *, what: str, fresh: bool) -> int:
        """An 8-aligned block of ``size`` bytes for one call's descriptors and buffers.

        The arena need not be reset before every call (ABI §7: the host resets when it
        likes), so a call whose guest allocates nothing of its own (``fresh`` False: no
        variable-length data) reuses the previous call's block, and the arena is reset every
        ``RESET_EVERY`` calls to bound whatever scratch the guest took meanwhile. That saves
        two of the three guest calls per batch.
        """
        if self._core is not None:
            return self._core.frame_block(size, what, fresh)
        addr, capacity = self._scratch
        if fresh or not addr or capacity < size or self._calls_since_reset >= RESET_EVERY:
            self.reset()
            capacity = max(size, 4096)
            addr = self.alloc(capacity, 8, what=what)
            self._scratch = (addr, capacity)
        self._calls_since_reset += 1
        return addr

    def alloc(self, size: int, align: int, *, what: str) -> int:
        """A block from ``wasmudf_alloc``, checked to be non-zero, aligned and in memory."""
        if self._core is not None:
            return self._core.alloc(size, align, what)
        addr = self.call("wasmudf_alloc", (size, align), what=what)
        assert addr is not None
        _, mem_size = self.memory()
        if addr == 0 or addr % align or addr + size > mem_size:
            self._raise_bad_alloc(what, size, align, addr, mem_size)
        return addr

    def _raise_bad_alloc(self, what: str, size: int, align: int, addr: int, mem_size: int) -> None:
        self.broken = True
        if addr == 0:
            message = self.guest_message()
            raise GuestFailure(
                f"`{what}` in {self.label}: wasmudf_alloc could not allocate {size} bytes"
                + (f": {message}" if message else "; raise Limits.memory_bytes if the data is large"),
                guest_message=message,
                function=what,
                module=self.label,
            )
        raise InvalidGuestOutput(
            f"`{what}` in {self.label}: wasmudf_alloc({size}, {align}) returned 0x{addr:x}, "
            f"{'misaligned' if addr % align else 'outside linear memory'} "
            f"(memory is {mem_size} bytes)",
            function=what,
            module=self.label,
        )

    # -- memory --------------------------------------------------------------------------

    def memory(self) -> tuple[int, int]:
        """(base address, size in bytes) of linear memory, read afresh: any call may grow it."""
        if self._core is not None:
            return self._core.memory()
        return _memory_data(self._ctx, self._mem_addr), _memory_size(self._ctx, self._mem_addr)

    def guest_message(self) -> str | None:
        """The guest's ``wasmudf_error`` text, bounded and decoded leniently, if it has one."""
        if not self.spec.has_error_export:
            return None
        try:
            self.arm_deadline(force=True)
            addr = self.call("wasmudf_error", (), what="wasmudf_error")
        except GuestError:
            return None
        base, size = self.memory()
        if not addr or addr >= size:
            return None
        raw = ctypes.string_at(base + addr, min(ERROR_MESSAGE_MAX, size - addr))
        return raw.split(b"\0", 1)[0].decode("utf-8", errors="replace") or None


#: The steps of starting an instance, as start_failure describes them.
_START_STEPS = {
    "instantiation": "its start function, memory or table",
    "_initialize": "_initialize",
    "wasmudf_abi_version": "wasmudf_abi_version",
    "wasmudf_error": "wasmudf_error",
}


def start_failure(exc: GuestError, function: str | None, label: str) -> GuestError:
    """``exc`` (of the same class, with its attributes) reworded for an instance that could not
    start: naming the SQL function whose call needed the instance, and the step that failed."""
    step = exc.function or "instantiation"
    detail = str(exc).removeprefix(f"`{step}` in {label}").lstrip(": ")
    where = _START_STEPS.get(step, step)
    if function is None:
        message = f"{label} could not be instantiated ({where}): {detail}"
    else:
        message = f"`{function}` in {label}: a new instance could not start ({where}): {detail}"
    new = copy.copy(exc)
    new.args = (message,)
    new.function = function
    return new


# Trap codes that mean "a limit was hit" rather than "the guest is wrong".
_LIMIT_TRAPS: dict[Any, tuple[type[GuestError], str]] = {
    wasmtime.TrapCode.INTERRUPT: (
        TimeLimitExceeded,
        "ran past its {timeout} time limit (Limits.timeout_ms); raise the limit or check for an endless loop",
    ),
    wasmtime.TrapCode.OUT_OF_FUEL: (
        FuelExhausted,
        "ran out of fuel ({fuel} units, Limits.fuel); raise the limit or check for an endless loop",
    ),
    wasmtime.TrapCode.STACK_OVERFLOW: (
        StackLimitExceeded,
        "overflowed its {stack} KiB Wasm stack (Limits.stack_bytes); check for unbounded recursion",
    ),
}


@contextlib.contextmanager
def translate_errors(instance: Instance, what: str) -> Iterator[None]:
    """Map wasmtime's Trap/WasmtimeError to our tree, most specific first, with context."""
    try:
        yield
    except wasmtime.Trap as exc:
        instance.broken = True
        if exc.trap_code in _LIMIT_TRAPS:
            raise _limit_error(instance, what, exc.trap_code) from exc
        code = exc.trap_code.name.lower() if exc.trap_code is not None else None
        first_line = _trap_reason(str(exc.message or ""))
        guest = instance.guest_message() if what not in ("wasmudf_error", "instantiation") else None
        raise GuestTrap(
            f"`{what}` in {instance.label} trapped: {first_line}"
            + (f" (guest says: {guest})" if guest else ""),
            trap_code=code,
            function=what,
            module=instance.label,
        ) from exc
    except wasmtime.WasmtimeError as exc:
        instance.broken = True
        text = str(exc).strip()
        # The epoch callbacks (C accelerator and Python path alike) stop a call with these texts.
        if "wasmudf: time limit" in text:
            raise _limit_error(instance, what, wasmtime.TrapCode.INTERRUPT) from exc
        if "wasmudf: interrupted" in text:
            raise CallInterrupted(
                f"`{what}` in {instance.label} was stopped: its query was interrupted",
                function=what,
                module=instance.label,
            ) from exc
        if "table" in text and ("limit" in text or "exceeds" in text):
            raise TableLimitExceeded(
                f"`{what}` in {instance.label}: the module's table does not fit in "
                f"Limits.table_elements = {instance.spec.limits.table_elements} ({text.splitlines()[0]})",
                function=what,
                module=instance.label,
            ) from exc
        if "memory" in text and ("limit" in text or "exceeds" in text):
            raise MemoryLimitExceeded(
                f"`{what}` in {instance.label}: the module's memory does not fit in "
                f"Limits.memory_bytes = {instance.spec.limits.memory_bytes} ({text.splitlines()[0]})",
                function=what,
                module=instance.label,
            ) from exc
        raise GuestTrap(
            f"`{what}` in {instance.label} failed: {text.splitlines()[0] if text else 'error'}",
            function=what,
            module=instance.label,
        ) from exc


def _limit_error(instance: Instance, what: str, trap_code: Any) -> GuestError:
    """The LimitExceeded subclass for a limit trap, naming the limit and its value."""
    cls, text = _LIMIT_TRAPS[trap_code]
    limits = instance.spec.limits
    message = text.format(
        timeout=f"{limits.timeout_ms:g} ms" if limits.timeout_ms else "(unset)",
        fuel=limits.fuel,
        stack=limits.stack_bytes // 1024,
    )
    return cls(f"`{what}` in {instance.label} {message}", function=what, module=instance.label)


def _trap_reason(message: str) -> str:
    """The cause line of a wasmtime trap message ("wasm trap: ..."), without the backtrace."""
    lines = [ln.strip() for ln in message.strip().splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.startswith("wasm trap:"):
            return ln.removeprefix("wasm trap:").strip()
    return lines[-1] if lines else "trap"


def _sandboxed_wasi() -> wasmtime.WasiConfig:
    """No preopened directories, no environment, no arguments, and stdout/stderr left
    unconnected, so what the guest writes goes nowhere. (A custom output callback would run
    on wasmtime's own I/O threads, which may still call it while the interpreter shuts down.)"""
    return wasmtime.WasiConfig()


class InstancePool:
    """One live instance per thread, created on first use and replaced after a failure.

    Keyed by the OS thread id, not ``threading.local``: DuckDB's worker threads are not
    Python threads, and each time one takes the GIL it gets a fresh Python thread state, so
    thread-local data (an instance) would be thrown away after every vector. A Python
    thread's entry is removed when the thread ends; a foreign thread's stays (engines keep
    a fixed pool of workers).
    """

    def __init__(self, factory: Callable[[str | None], Instance]):
        self._factory = factory
        self._instances: dict[int, Instance] = {}
        self._local = threading.local()

    def get(self, function: str | None = None) -> Instance:
        """This thread's instance, started now if it has none or its last one failed;
        ``function`` (the SQL function about to be called) is named if starting fails."""
        ident = threading.get_ident()
        inst = self._instances.get(ident)
        if inst is None or inst.broken:
            inst = self._instances[ident] = self._factory(function)
            if not isinstance(threading.current_thread(), threading._DummyThread):  # a Python thread
                if getattr(self._local, "forget", None) is None:
                    self._local.forget = _ForgetOnExit(self._instances, ident)
        return inst

    def discard(self) -> None:
        self._instances.pop(threading.get_ident(), None)


class _ForgetOnExit:
    """Held in a Python thread's thread-local storage: drops the thread's instance when the
    thread (and with it this object) goes away."""

    def __init__(self, instances: dict[int, Instance], ident: int):
        self._instances = instances
        self._ident = ident

    def __del__(self) -> None:
        self._instances.pop(self._ident, None)
