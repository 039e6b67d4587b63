"""Which modules may run: sha256 pinning, Ed25519 signatures, and the trust policy.

A signature lives inside the module, in a custom section ``wasmudf.signature`` holding
``{"alg": "ed25519", "key_id": ..., "sig": ...}`` (JSON; ``sig`` in base64). It covers the
module's bytes with that section left out, so a signed module stays one file, any other
byte (code, data, the manifest, any other custom section) is covered, and signing again
replaces the signature rather than signing a signature. Ed25519 is deterministic: signing
the same module with the same key twice gives the same bytes.

A key id is the first 16 hex digits of the sha256 of the raw 32-byte public key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import wasmbin
from .errors import ModuleError, PolicyError, SignatureError

SIGNATURE_SECTION = "wasmudf.signature"
ALGORITHM = "ed25519"


def _crypto() -> Any:
    try:
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise PolicyError("signatures need the 'cryptography' package") from exc
    return ed25519, serialization, InvalidSignature


def key_id(public_key: Any) -> str:
    """The id of an Ed25519 public key (object or 32 raw bytes)."""
    return hashlib.sha256(_raw_public(public_key)).hexdigest()[:16]


def _raw_public(public_key: Any) -> bytes:
    if isinstance(public_key, (bytes, bytearray)):
        if len(public_key) != 32:
            raise PolicyError(f"an Ed25519 public key is 32 bytes, not {len(public_key)}")
        return bytes(public_key)
    _, serialization, _ = _crypto()
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


# -- keys on disk -----------------------------------------------------------------------


def generate_key(path: str | os.PathLike[str]) -> tuple[Path, Path, str]:
    """Write a new private key (PEM, mode 0600) to ``path`` and its public key to
    ``path.pub`` (hex of the raw key); returns both paths and the key id."""
    ed25519, serialization, _ = _crypto()
    private = ed25519.Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    key_path = Path(path)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    public = _raw_public(private.public_key())
    pub_path = key_path.with_name(key_path.name + ".pub")
    pub_path.write_text(public.hex() + "\n")
    return key_path, pub_path, key_id(public)


def load_private_key(path: str | os.PathLike[str]) -> Any:
    _, serialization, _ = _crypto()
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise PolicyError(f"cannot read a private key from {str(path)!r}: {exc}") from exc
    ed25519, _, _ = _crypto()
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise PolicyError(f"{str(path)!r} is not an Ed25519 private key")
    return key


def load_public_key(source: Any) -> bytes:
    """Raw public key bytes from 32 raw bytes, a hex string, a key object, or a path to a
    ``.pub`` file written by :func:`generate_key`."""
    if isinstance(source, (bytes, bytearray)):
        return _raw_public(source)
    if isinstance(source, str) and len(source) == 64:
        try:
            return bytes.fromhex(source)
        except ValueError:
            pass
    if isinstance(source, (str, os.PathLike)):
        try:
            text = Path(source).read_text().strip()
            return _raw_public(bytes.fromhex(text))
        except (OSError, ValueError) as exc:
            raise PolicyError(f"cannot read a public key (hex) from {str(source)!r}: {exc}") from exc
    return _raw_public(source)


# -- signing and verifying ----------------------------------------------------------------


def signed_content(wasm: bytes) -> bytes:
    """What a signature covers: the module without its signature section."""
    try:
        return wasmbin.without_custom_sections(wasm, SIGNATURE_SECTION)
    except ValueError as exc:
        raise ModuleError(f"not a WebAssembly module: {exc}") from exc


def sign(wasm: bytes, private_key: Any) -> bytes:
    """The module with a (new) signature section by ``private_key``."""
    content = signed_content(wasm)
    signature = private_key.sign(content)
    record = {
        "alg": ALGORITHM,
        "key_id": key_id(private_key.public_key()),
        "sig": base64.b64encode(signature).decode("ascii"),
    }
    return wasmbin.with_custom_section(wasm, SIGNATURE_SECTION, json.dumps(record, sort_keys=True).encode())


@dataclass(frozen=True)
class Signature:
    key_id: str
    algorithm: str
    signature: bytes


def read_signature(wasm: bytes, label: str = "module") -> Signature | None:
    """The module's signature record, None when unsigned; a malformed one is an error."""
    try:
        found = wasmbin.custom_sections(wasm, SIGNATURE_SECTION)
    except ValueError as exc:
        raise ModuleError(f"{label} is not a WebAssembly module: {exc}") from exc
    if not found:
        return None
    if len(found) > 1:
        raise SignatureError(f"{label} has {len(found)} '{SIGNATURE_SECTION}' sections; a module carries one")
    try:
        record = json.loads(found[0].decode("utf-8"))
        if not isinstance(record, dict) or set(record) != {"alg", "key_id", "sig"}:
            raise ValueError("expected exactly the fields alg, key_id, sig")
        signature = base64.b64decode(record["sig"], validate=True)
        sig = Signature(str(record["key_id"]), str(record["alg"]), signature)
    except (UnicodeDecodeError, ValueError, TypeError, binascii.Error) as exc:
        raise SignatureError(f"{label}: its '{SIGNATURE_SECTION}' section is malformed ({exc})") from None
    if sig.algorithm != ALGORITHM:
        raise SignatureError(f"{label} is signed with {sig.algorithm!r}; only {ALGORITHM} is supported")
    return sig


def verify(wasm: bytes, public_key: Any, label: str = "module") -> Signature:
    """Check the module's signature against one public key; raises SignatureError."""
    sig = read_signature(wasm, label)
    if sig is None:
        raise SignatureError(f"{label} is not signed")
    raw = load_public_key(public_key)
    if sig.key_id != key_id(raw):
        raise SignatureError(f"{label} is signed by key {sig.key_id}, not by {key_id(raw)}")
    ed25519, _, invalid = _crypto()
    try:
        ed25519.Ed25519PublicKey.from_public_bytes(raw).verify(sig.signature, signed_content(wasm))
    except invalid:
        raise SignatureError(
            f"{label}: the signature by key {sig.key_id} does not match its bytes "
            "(the module was changed after it was signed)"
        ) from None
    return sig


@dataclass(frozen=True)
class Policy:
    """Which modules ``load``/``register``/``attach`` accept.

    ``require_signature``: refuse unsigned modules. ``trusted_keys``: public keys (raw bytes,
    hex, or ``.pub`` paths) whose signatures are accepted. A signature by a key outside
    ``trusted_keys`` is refused when a signature is required, and ignored otherwise; a
    signature by a trusted key must always verify.
    """

    require_signature: bool = False
    trusted_keys: tuple[bytes, ...] = field(default=())

    def __init__(self, require_signature: bool = False, trusted_keys: Iterable[Any] = ()):
        object.__setattr__(self, "require_signature", bool(require_signature))
        object.__setattr__(self, "trusted_keys", tuple(load_public_key(k) for k in trusted_keys))
        if self.require_signature and not self.trusted_keys:
            raise PolicyError("Policy(require_signature=True) needs at least one trusted key")

    def check(self, wasm: bytes, label: str = "module") -> Signature | None:
        """Apply the policy; returns the verified signature, if there is one by a trusted key."""
        sig = read_signature(wasm, label)
        if sig is None:
            if self.require_signature:
                raise SignatureError(f"{label} is not signed, and this policy requires a signature")
            return None
        trusted = {key_id(k): k for k in self.trusted_keys}
        key = trusted.get(sig.key_id)
        if key is None:
            if self.require_signature:
                raise SignatureError(f"{label} is signed by key {sig.key_id}, which this policy does not trust")
            return None
        return verify(wasm, key, label)


def check_pin(found: str, expected: str, label: str) -> None:
    """Refuse a module whose sha256 (``found``) is not the pinned one, naming both."""
    if found != expected.lower():
        raise PolicyError(f"{label} has sha256 {found}, but sha256 {expected.lower()} was pinned")
