"""The Wasm runtime: wasmtime engines, the epoch ticker, and the compile cache (memory and disk).

One :class:`wasmtime.Engine` per distinct engine configuration (fuel on/off, Wasm stack size):
everything else about limits is per store. Compiled modules are cached in memory and, as
serialized artifacts, on disk, keyed by the module's sha256 and the engine configuration.
A serialized artifact is native code: this host only deserializes files it wrote itself,
which it proves with an HMAC under a key that never leaves the cache directory.
"""

from __future__ import annotations

import ctypes
import hashlib
import hmac
import os
import secrets
import tempfile
import threading
import time
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import wasmtime

from . import _native
from .caches import LruCache
from .limits import Limits

#: Compiled modules kept in memory (native code, typically 0.1-5 MiB each; Modules loaded
#: and alive keep theirs whatever this says). Past it, a load reads the disk cache again.
COMPILED_CACHE_BOUND = 64

#: How often the ticker advances the epoch. A time limit is honoured to within one tick.
EPOCH_TICK_MS = 5.0

_WASMTIME_VERSION = version("wasmtime")


@dataclass(frozen=True)
class EngineKey:
    fuel: bool
    stack_bytes: int

    def describe(self) -> str:
        # Everything that changes the compiled code goes into the cache key.
        return (
            f"wasmudf-engine-1;wasmtime={_WASMTIME_VERSION};fuel={int(self.fuel)};"
            f"stack={self.stack_bytes};epoch=1;memory=fixed4g;features=mvp+simd+bulk+multivalue+reftypes"
        )

    @classmethod
    def for_limits(cls, limits: Limits) -> EngineKey:
        return cls(fuel=limits.fuel is not None, stack_bytes=limits.stack_bytes)


def start_ticker(engine: wasmtime.Engine) -> Any:
    """A ticker for ``engine``: the C accelerator's native thread when it is built (it needs
    no GIL, so a guest running while the GIL is held still meets its deadline), else a
    Python thread. Both count the ticks in ``epoch``."""
    speedups = _native.speedups
    if speedups is not None:
        # The thread ticks a clone of the engine handle that is never freed: wasmtime-py may
        # free its own handle while the interpreter shuts down, and the thread runs until exit.
        clone = wasmtime._ffi.wasmtime_engine_clone(engine.ptr())
        address = ctypes.cast(clone, ctypes.c_void_p).value
        return speedups.Ticker(address, int(EPOCH_TICK_MS * 1000))
    return Ticker(engine)


class Ticker:
    """A daemon thread advancing one engine's epoch every ``EPOCH_TICK_MS``.

    ``epoch`` mirrors the engine's counter so callers can tell cheaply whether a deadline
    they set is still current (see ``PyCore.call``).
    """

    def __init__(self, engine: wasmtime.Engine):
        self._engine = engine
        self.epoch = 0
        self._thread = threading.Thread(target=self._run, name="wasmudf-epoch", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        interval = EPOCH_TICK_MS / 1000.0
        while True:
            time.sleep(interval)
            self._engine.increment_epoch()
            self.epoch += 1


def _make_config(key: EngineKey) -> wasmtime.Config:
    config = wasmtime.Config()
    # ABI v1 §1: what a module may use. Everything else is switched off so that wasmtime's
    # validator rejects it at compile time, naming the feature.
    config.wasm_simd = True
    config.wasm_bulk_memory = True
    config.wasm_multi_value = True
    # Reference types stay on: switching them off aborts the process in wasmtime-py 50.
    config.wasm_reference_types = True
    config.wasm_threads = False
    config.shared_memory = False
    config.wasm_memory64 = False
    config.wasm_multi_memory = False
    config.wasm_gc = False
    config.wasm_function_references = False
    config.wasm_exceptions = False
    config.wasm_relaxed_simd = False
    config.wasm_tail_call = False
    config.wasm_component_model = False
    config.wasm_stack_switching = False
    config.wasm_wide_arithmetic = False
    config.wasm_custom_page_sizes = False
    # Reserve the whole 32-bit address space up front and never move a memory: its base
    # address stays valid for the instance's life, so the fast paths read it once.
    config.memory_reservation = 4 << 30
    config.memory_may_move = False
    config.epoch_interruption = True
    config.consume_fuel = key.fuel
    config.max_wasm_stack = key.stack_bytes
    config.cranelift_opt_level = "speed"
    return config


class EngineSet:
    """The process-wide engines, each with its ticker and compiled-module cache."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._engines: dict[EngineKey, tuple[wasmtime.Engine, Any]] = {}
        self._modules: LruCache[tuple[EngineKey, str], wasmtime.Module] = LruCache(COMPILED_CACHE_BOUND)

    def engine(self, key: EngineKey) -> tuple[wasmtime.Engine, Any]:
        with self._lock:
            found = self._engines.get(key)
            if found is None:
                engine = wasmtime.Engine(_make_config(key))
                found = self._engines[key] = (engine, start_ticker(engine))
            return found

    def compile(self, key: EngineKey, sha256: str, wasm: bytes) -> wasmtime.Module:
        """The compiled module, from memory, from this host's disk cache, or compiled now.

        Raises:
            wasmtime.WasmtimeError: the module does not validate under the engine's features.
        """
        module = self._modules.get((key, sha256))
        if module is not None:
            return module
        engine, _ = self.engine(key)
        cache = DiskCache.default()
        module = cache.load(engine, key, sha256) if cache else None
        if module is None:
            module = wasmtime.Module(engine, wasm)
            if cache:
                cache.store(key, sha256, module)
        return self._modules.put((key, sha256), module)

    def forget_compiled(self) -> None:
        """Drop the in-memory compile cache (tests and benchmarks of cold loads use this)."""
        self._modules.clear()


ENGINES = EngineSet()


class DiskCache:
    """Serialized compiled modules under ``WASMUDF_CACHE_DIR`` (default ~/.cache/wasmudf).

    Set ``WASMUDF_CACHE_DIR`` to an empty string to switch the disk cache off.
    """

    _HEADER = b"wasmudf-cwasm-1\n"

    def __init__(self, root: Path):
        self.root = root

    @classmethod
    def default(cls) -> DiskCache | None:
        configured = os.environ.get("WASMUDF_CACHE_DIR")
        if configured == "":
            return None
        root = Path(configured) if configured else Path.home() / ".cache" / "wasmudf"
        return cls(root)

    def _key(self) -> bytes | None:
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            path = self.root / "host.key"
            try:
                return path.read_bytes()
            except FileNotFoundError:
                key = secrets.token_bytes(32)
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(key)
                return key
        except FileExistsError:
            return (self.root / "host.key").read_bytes()
        except OSError:
            return None  # an unwritable cache is no cache, never an error

    def _path(self, key: EngineKey, sha256: str) -> Path:
        engine_id = hashlib.sha256(key.describe().encode()).hexdigest()[:16]
        return self.root / engine_id / f"{sha256}.cwasm"

    def load(self, engine: wasmtime.Engine, key: EngineKey, sha256: str) -> wasmtime.Module | None:
        secret = self._key()
        if secret is None:
            return None
        try:
            blob = self._path(key, sha256).read_bytes()
        except OSError:
            return None
        head = len(self._HEADER)
        if blob[:head] != self._HEADER:
            return None
        mac, body = blob[head : head + 32], blob[head + 32 :]
        expected = hmac.new(secret, key.describe().encode() + sha256.encode() + body, "sha256")
        # Only native code this host wrote may be deserialized: anything else is ignored.
        if not hmac.compare_digest(mac, expected.digest()):
            return None
        try:
            return wasmtime.Module.deserialize(engine, body)
        except wasmtime.WasmtimeError:
            return None

    def store(self, key: EngineKey, sha256: str, module: wasmtime.Module) -> None:
        secret = self._key()
        if secret is None:
            return
        body = bytes(module.serialize())
        mac = hmac.new(secret, key.describe().encode() + sha256.encode() + body, "sha256")
        path = self._path(key, sha256)
        try:
            path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
            with os.fdopen(fd, "wb") as f:
                f.write(self._HEADER + mac.digest() + body)
            os.replace(tmp, path)
        except OSError:
            pass
