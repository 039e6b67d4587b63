"""Just enough of the WebAssembly binary format to read and write custom sections.

wasmtime-py cannot read custom sections, and ``wasmudf build`` must add one, so this module
walks the section table itself. Everything else about a module is left to wasmtime.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ModuleError

MAGIC = b"\0asm"
VERSION = b"\x01\0\0\0"
CUSTOM, FUNCTION, DATA = 0, 3, 11


@dataclass(frozen=True)
class Section:
    id: int
    start: int  # offset of the section id byte
    end: int  # offset just past the payload
    payload_start: int
    name: str | None = None  # custom sections only
    content_start: int = 0  # custom sections: start of the bytes after the name


def read_uleb(data: bytes, pos: int, limit: int | None = None) -> tuple[int, int]:
    """Decode an unsigned LEB128 u32 at ``pos``; return (value, next position)."""
    end = len(data) if limit is None else limit
    result = shift = 0
    for i in range(5):
        if pos >= end:
            raise ModuleError("truncated module: a LEB128 number runs past its section")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            if result >= 1 << 32 or (i == 4 and byte & 0x70):
                raise ModuleError("malformed module: a LEB128 number does not fit in 32 bits")
            return result, pos
        shift += 7
    raise ModuleError("malformed module: a LEB128 number is longer than 5 bytes")


def write_uleb(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def sections(data: bytes) -> list[Section]:
    """The section table of a core module, checked for structure only.

    Raises:
        ModuleError: not a core WebAssembly module (components are refused here too),
            or a section runs past the end of the bytes.
    """
    if data[:4] != MAGIC:
        raise ModuleError("not a WebAssembly module (the file does not start with \\0asm)")
    if data[4:8] != VERSION:
        raise ModuleError(
            "not a core WebAssembly module version 1 (components and other layers are not "
            "supported: wasmudf runs plain core modules)"
        )
    out = []
    pos = 8
    while pos < len(data):
        start = pos
        sid = data[pos]
        size, pos = read_uleb(data, pos + 1)
        end = pos + size
        if end > len(data):
            raise ModuleError(f"truncated module: section {sid} runs past the end of the file")
        if sid == CUSTOM:
            name_len, npos = read_uleb(data, pos, end)
            if npos + name_len > end:
                raise ModuleError("malformed module: a custom section name runs past its section")
            try:
                name = data[npos : npos + name_len].decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ModuleError("malformed module: a custom section name is not UTF-8") from exc
            out.append(Section(sid, start, end, pos, name, npos + name_len))
        else:
            out.append(Section(sid, start, end, pos))
        pos = end
    return out


def custom_sections(data: bytes, name: str) -> list[bytes]:
    """The contents of every custom section called ``name``, in order."""
    return [data[s.content_start : s.end] for s in sections(data) if s.name == name]


def without_custom_sections(data: bytes, name: str) -> bytes:
    """The module with every custom section called ``name`` removed."""
    parts = [data[:8]]
    parts += [data[s.start : s.end] for s in sections(data) if s.name != name]
    return b"".join(parts)


def with_custom_section(data: bytes, name: str, content: bytes) -> bytes:
    """The module with its ``name`` sections replaced by one holding ``content``, at the end."""
    encoded_name = name.encode("utf-8")
    payload = write_uleb(len(encoded_name)) + encoded_name + content
    return without_custom_sections(data, name) + bytes([CUSTOM]) + write_uleb(len(payload)) + payload


def defined_function_count(data: bytes) -> int:
    """How many functions the module defines (its function section's count)."""
    for s in sections(data):
        if s.id == FUNCTION:
            return read_uleb(data, s.payload_start, s.end)[0]
    return 0


def data_segment_bytes(data: bytes) -> list[bytes]:
    """The bytes of every data segment (active or passive), for ``wasmudf build``."""
    out = []
    for s in sections(data):
        if s.id != DATA:
            continue
        count, pos = read_uleb(data, s.payload_start, s.end)
        for _ in range(count):
            flags, pos = read_uleb(data, pos, s.end)
            if flags == 2:
                _, pos = read_uleb(data, pos, s.end)  # memory index
            if flags in (0, 2):
                pos = _skip_const_expr(data, pos, s.end)
            size, pos = read_uleb(data, pos, s.end)
            out.append(data[pos : pos + size])
            pos += size
    return out


def _skip_const_expr(data: bytes, pos: int, end: int) -> int:
    # Offsets of data segments emitted by our toolchains are `i32.const N end` or
    # `global.get N end`; skip to the `end` opcode, decoding LEB immediates on the way.
    while pos < end:
        op = data[pos]
        pos += 1
        if op == 0x0B:
            return pos
        if op in (0x41, 0x42, 0x23):  # i32.const, i64.const, global.get
            while data[pos] & 0x80:
                pos += 1
            pos += 1
        else:
            raise ModuleError(f"unsupported opcode 0x{op:02x} in a data segment offset")
    raise ModuleError("truncated data segment offset expression")
