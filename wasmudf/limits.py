"""Resource limits: a frozen value object, ``None`` meaning unlimited."""

from __future__ import annotations

from dataclasses import dataclass, fields

KiB = 1024
MiB = 1024 * KiB


@dataclass(frozen=True)
class Limits:
    """What one module may use. Every field is a policy of the host, never of the guest.

    Attributes:
        timeout_ms: wall-clock time per guest call (and for instantiation), including time
            spent in host imports. Enforced by wasmtime epoch interruption, so the bound is
            this value plus at most one tick of the ticker (``EPOCH_TICK_MS``).
        fuel: a deterministic budget of Wasm instructions per call (wasmtime fuel), or None.
            Metering costs about 1.3x on tight loops, so it is off by default.
        memory_bytes: the most linear memory an instance may have; ``memory.grow`` beyond
            it returns -1 to the guest.
        table_elements: the most elements a table may hold; ``table.grow`` beyond returns -1.
        stack_bytes: the Wasm stack (wasmtime ``max_wasm_stack``). Kept well below the real
            stack of any thread that runs a UDF; at most ``MAX_STACK_BYTES``.
        output_bytes: the most bytes of variable-length output one call may return (for a
            table function: one batch, all its columns together).
        table_rows: the most rows one table-function call (one row of arguments) may return
            over all its batches.
        module_bytes: the largest module accepted by ``load``.
        max_functions: the most functions a module may define (a compile-time bomb guard).
    """

    timeout_ms: float | None = 1000.0
    fuel: int | None = None
    memory_bytes: int | None = 256 * MiB
    table_elements: int | None = 10_000
    stack_bytes: int = 512 * KiB
    output_bytes: int | None = 64 * MiB
    table_rows: int | None = 1_000_000_000
    module_bytes: int | None = 32 * MiB
    max_functions: int | None = 50_000

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"Limits.{f.name} must be a positive number or None, not {value!r}")
        if not 16 * KiB <= self.stack_bytes <= MAX_STACK_BYTES:
            raise ValueError(
                f"Limits.stack_bytes must be between 16 KiB and {MAX_STACK_BYTES // KiB} KiB "
                "(it must stay well below the real stack of the engine's threads)"
            )

    @classmethod
    def unlimited(cls) -> Limits:
        """No time, memory, output or module limits (the stack keeps its default)."""
        return cls(
            timeout_ms=None,
            memory_bytes=None,
            table_elements=None,
            output_bytes=None,
            table_rows=None,
            module_bytes=None,
            max_functions=None,
        )


# Threads that run UDFs (Python's main thread, DuckDB's workers) have stacks of at least
# 2 MiB on the platforms we support; wasmtime needs headroom above max_wasm_stack for its
# own frames and for host calls, so the Wasm stack stays at a quarter of that.
MAX_STACK_BYTES = 1 * MiB
