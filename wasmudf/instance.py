"""One instantiated module in its own wasmtime Store: fast calls and checked memory access.

An :class:`Instance` belongs to one thread (ABI §7); :class:`InstancePool` hands each thread
its own and replaces an instance that failed. Every guest call goes through the instance's
core, which calls ``wasmtime_func_call_unchecked``: the C accelerator's ``Core`` when it is
built (~0.1 µs a call), else :class:`~wasmudf.pycore.PyCore` via ctypes (~1 µs);
wasmtime-py's ``Func.__call__`` costs ~50 µs. Export signatures were checked at load time,
which is what makes the unchecked call sound. Failures found by either core come back
through :meth:`Instance._on_failure`, so every error text is written here once.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import functools
import re
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
from .pycore import PyCore, arm_deadline

ERROR_MESSAGE_MAX = 4096


#: The core every Instance holds: the C accelerator's when it is built, else its twin.
CoreClass: Any = _native.speedups.Core if _native.speedups is not None else PyCore


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
        #: Called once a call failed (the pool lets go of the instance then).
        self.on_broken: Callable[[], None] = lambda: None
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
        ctx = ctypes.cast(store._context(), ctypes.c_void_p).value
        ticks = -1 if limits.timeout_ms is None else int(limits.timeout_ms // spec.tick_ms) + 2
        fuel = -1 if limits.fuel is None else limits.fuel
        self._log_budget = LogBudget()
        linker = wasmtime.Linker(spec.engine)
        for name, (ty, fn) in host_imports(spec.capabilities, spec.granted_imports, self._log_budget).items():
            linker.define_func("wasmudf", name, ty, fn, access_caller=True)
        if spec.wasi:
            linker.define_wasi()
            store.set_wasi(_sandboxed_wasi())
        # The start function runs under the limits too; the core arms every later call.
        arm_deadline(ctx, ticks)
        with translate_errors(self, "instantiation"):
            if fuel >= 0:
                store.set_fuel(fuel)
            instance = linker.instantiate(store, spec.compiled)
        self._exports = instance.exports(store)
        memory = self._exports["memory"]
        assert isinstance(memory, wasmtime.Memory)  # checked at load time
        self._memory = memory
        self._func_addrs: dict[str, int] = {}
        self._keep: list[Any] = []
        #: Makes this instance's guest calls: the C accelerator's ``Core`` or its pure-Python
        #: twin :class:`~wasmudf.pycore.PyCore`, which has the same methods.
        self.core: Any = CoreClass(
            ctypes.cast(store.ptr(), ctypes.c_void_p).value,
            ctx,
            ctypes.addressof(memory._memory),
            self.func_addr("wasmudf_reset"),
            self.func_addr("wasmudf_alloc"),
            ticks,
            fuel,
            spec.ticker,
            # Only `log` keeps per-call state (its message budget); skip the hook otherwise.
            self._log_budget.new_call if "log" in spec.granted_imports else None,
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
        if value:
            core = getattr(self, "core", None)  # none yet while the instance is starting
            if core is not None:
                core.dead = 1
            self.on_broken()

    @contextlib.contextmanager
    def interruptible(self, check: Callable[[], bool] | None) -> Iterator[None]:
        """Calls in this block stop within one epoch tick once ``check()`` is true."""
        core = self.core
        if check is None:
            yield
            return
        previous, core.interrupt_check = core.interrupt_check, check
        try:
            yield
        finally:
            core.interrupt_check = previous

    # -- calls ---------------------------------------------------------------------------

    def func_addr(self, export: str) -> int:
        addr = self._func_addrs.get(export)
        if addr is None:
            func = self._exports[export]
            assert isinstance(func, wasmtime.Func)
            self._keep.append(func)
            addr = self._func_addrs[export] = ctypes.addressof(func._func)
        return addr

    def call(self, export: str, args: tuple[int, ...], *, what: str) -> int | None:
        """Call an export taking and returning i32s; the result as an unsigned u32, or None.

        Raises:
            GuestError: a trap or a limit, translated; the instance is then marked broken.
        """
        return self.core.call(self.func_addr(export), what, *args)

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
            self.status_failed(status, what)

    def status_failed(self, status: int, what: str) -> None:
        """Raise the GuestFailure for a call that returned a non-zero status."""
        self.broken = True
        message = self.guest_message()
        detail = f": {message}" if message else ""
        raise GuestFailure(
            f"`{what}` in {self.label} failed (status {status}){detail}",
            guest_message=message,
            function=what,
            module=self.label,
        )

    def no_state(self, what: str, message: str) -> GuestFailure:
        """The error for an export that gave no state back (an aggregate's ``__init``, a table
        function's ``__open``): the instance is suspect, and the guest's message says why."""
        self.broken = True
        guest = self.guest_message()
        return GuestFailure(
            f"`{what}` in {self.label}: {message}" + (f": {guest}" if guest else ""),
            guest_message=guest,
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
            self.status_failed(detail, what)
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
        return self.core.memory()

    def guest_message(self) -> str | None:
        """The guest's ``wasmudf_error`` text, bounded and decoded leniently, if it has one."""
        if not self.spec.has_error_export:
            return None
        try:
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
    """The cause of a wasmtime trap message ("wasm trap: ...") without the backtrace or the
    "Caused by" list's numbering, with a memory fault's address when there is one."""
    lines = [re.sub(r"^\d+:\s*", "", ln.strip()) for ln in message.strip().splitlines() if ln.strip()]
    fault = next((ln for ln in lines if ln.startswith("memory fault at")), None)
    for ln in reversed(lines):
        if ln.startswith("wasm trap:"):
            reason = ln.removeprefix("wasm trap:").strip()
            return f"{reason} ({fault})" if fault else reason
    return lines[-1] if lines else "trap"


def _sandboxed_wasi() -> wasmtime.WasiConfig:
    """No preopened directories, no environment, no arguments, and stdout/stderr left
    unconnected, so what the guest writes goes nowhere. (A custom output callback would run
    on wasmtime's own I/O threads, which may still call it while the interpreter shuts down.)"""
    return wasmtime.WasiConfig()


class InstancePool:
    """One live instance per thread, created on first use and replaced after a failure
    (an instance marked broken tells its pool, which lets go of it).

    Keyed by the OS thread id, not ``threading.local``: DuckDB's worker threads are not
    Python threads, and each time one takes the GIL it gets a fresh Python thread state, so
    thread-local data (an instance) would be thrown away after every vector. A Python
    thread's entry is removed when the thread ends; a foreign thread's stays (engines keep
    a fixed pool of workers).
    """

    def __init__(self, spec: InstanceSpec):
        #: What every instance of the module is made from (its label, limits, ...).
        self.spec = spec
        self._factory: Callable[[str | None], Instance] = functools.partial(Instance, spec)
        self._instances: dict[int, Instance] = {}
        self._local = threading.local()

    def get(self, function: str | None = None) -> Instance:
        """This thread's instance, started now if it has none or its last one failed;
        ``function`` (the SQL function about to be called) is named if starting fails."""
        ident = threading.get_ident()
        inst = self._instances.get(ident)
        if inst is None or inst.broken:
            inst = self._instances[ident] = self._factory(function)
            inst.on_broken = functools.partial(self._forget, ident, inst)
            if not isinstance(threading.current_thread(), threading._DummyThread):  # a Python thread
                if getattr(self._local, "forget", None) is None:
                    self._local.forget = _ForgetOnExit(self._instances, ident)
        return inst

    def dedicated(self, function: str | None = None) -> Instance:
        """A new instance of the module, outside the pool: for work that may move between
        threads (a table function's reader), one thread at a time."""
        return self._factory(function)

    def _forget(self, ident: int, inst: Instance) -> None:
        """Let go of a failed instance (its memory goes with it); the thread's next call
        starts a new one. This is the one place a failed instance is replaced."""
        if self._instances.get(ident) is inst:
            del self._instances[ident]


class _ForgetOnExit:
    """Held in a Python thread's thread-local storage: drops the thread's instance when the
    thread (and with it this object) goes away."""

    def __init__(self, instances: dict[int, Instance], ident: int):
        self._instances = instances
        self._ident = ident

    def __del__(self) -> None:
        self._instances.pop(self._ident, None)
