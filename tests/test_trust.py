"""Pinning and signatures: which modules load."""

from __future__ import annotations

import base64
import hashlib
import json

import pytest
from conftest import EXAMPLES

import wasmudf
from wasmudf import Policy, PolicyError, SignatureError, trust, wasmbin

NUMERIC = EXAMPLES["numeric"].read_bytes()


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    root = tmp_path_factory.mktemp("keys")
    made = {}
    for who in ("release", "other"):
        key, pub, kid = trust.generate_key(root / who)
        made[who] = (trust.load_private_key(key), pub, kid)
    return made


def signed(keys, who="release", wasm=NUMERIC) -> bytes:
    return trust.sign(wasm, keys[who][0])


def policy(keys, *who, require=True) -> Policy:
    return Policy(require_signature=require, trusted_keys=[keys[w][1] for w in who])


def test_pinning_refuses_other_bytes_naming_both_digests():
    digest = hashlib.sha256(NUMERIC).hexdigest()
    assert wasmudf.load(NUMERIC, sha256=digest.upper()).sha256 == digest
    other = "0" * 64
    with pytest.raises(PolicyError, match=f"has sha256 {digest}, but sha256 {other} was pinned"):
        wasmudf.load(NUMERIC, sha256=other)


def test_a_signed_module_loads_under_a_policy_that_trusts_its_key(keys):
    module = wasmudf.load(signed(keys), policy=policy(keys, "release"))
    assert module.functions["add_i64"]([1], [2]).to_pylist() == [3]
    sig = trust.verify(signed(keys), keys["release"][1])
    assert sig.key_id == keys["release"][2]


def test_unsigned_refused_when_a_signature_is_required(keys):
    with pytest.raises(SignatureError, match="is not signed, and this policy requires a signature"):
        wasmudf.load(NUMERIC, policy=policy(keys, "release"))
    assert wasmudf.load(NUMERIC, policy=policy(keys, "release", require=False))  # optional: fine


def test_untrusted_key_refused_when_required_and_ignored_otherwise(keys):
    by_other = signed(keys, "other")
    with pytest.raises(SignatureError, match=f"signed by key {keys['other'][2]}, which this policy does not trust"):
        wasmudf.load(by_other, policy=policy(keys, "release"))
    assert wasmudf.load(by_other, policy=policy(keys, "release", require=False))


def _flip_in_section(wasm: bytes, pick) -> bytes:
    section = next(s for s in wasmbin.sections(wasm) if pick(s))
    at = (section.content_start + section.end) // 2
    out = bytearray(wasm)
    out[at] ^= 0x01
    return bytes(out)


CODE, DATA = 10, 11


@pytest.mark.parametrize(
    "part",
    ["code", "data", "manifest", "a re-packed extra section", "the signature itself"],
)
def test_any_change_after_signing_is_refused(keys, part):
    wasm = signed(keys)
    if part == "code":
        bad = _flip_in_section(wasm, lambda s: s.id == CODE)
    elif part == "data":
        bad = _flip_in_section(wasm, lambda s: s.id == DATA)
    elif part == "manifest":
        doc = json.loads(wasmbin.custom_sections(wasm, "wasmudf")[0])
        doc["functions"][0]["doc"] = "harmless, honest"
        content = wasmbin.custom_sections(wasm, trust.SIGNATURE_SECTION)[0]
        bad = wasmbin.with_custom_section(
            wasmbin.with_custom_section(wasm, "wasmudf", json.dumps(doc).encode()), trust.SIGNATURE_SECTION, content
        )
    elif part == "a re-packed extra section":
        content = wasmbin.custom_sections(wasm, trust.SIGNATURE_SECTION)[0]
        bad = wasmbin.with_custom_section(
            wasmbin.with_custom_section(wasm, "producers", b"\x00"), trust.SIGNATURE_SECTION, content
        )
    else:
        record = json.loads(wasmbin.custom_sections(wasm, trust.SIGNATURE_SECTION)[0])
        sig = bytearray(base64.b64decode(record["sig"]))
        sig[0] ^= 1
        record["sig"] = base64.b64encode(bytes(sig)).decode()
        bad = wasmbin.with_custom_section(wasm, trust.SIGNATURE_SECTION, json.dumps(record).encode())
    assert bad != wasm
    with pytest.raises(SignatureError, match="changed after it was signed"):
        wasmudf.load(bad, policy=policy(keys, "release"))


def test_signing_twice(keys):
    once = signed(keys)
    assert trust.sign(once, keys["release"][0]) == once  # deterministic, and no signature of a signature
    resigned = trust.sign(once, keys["other"][0])
    assert len(wasmbin.custom_sections(resigned, trust.SIGNATURE_SECTION)) == 1
    assert wasmudf.load(resigned, policy=policy(keys, "other"))
    with pytest.raises(SignatureError, match="does not trust"):
        wasmudf.load(resigned, policy=policy(keys, "release"))
    # Stripping the signature gives back the unsigned bytes exactly.
    assert trust.signed_content(resigned) == NUMERIC


def test_two_signature_sections_are_refused(keys):
    wasm = signed(keys)
    content = wasmbin.custom_sections(wasm, trust.SIGNATURE_SECTION)[0]
    name = trust.SIGNATURE_SECTION.encode()
    payload = bytes([len(name)]) + name + content
    doubled = wasm + b"\x00" + wasmbin.write_uleb(len(payload)) + payload
    with pytest.raises(SignatureError, match="2 'wasmudf.signature' sections"):
        wasmudf.load(doubled, policy=policy(keys, "release"))


def test_malformed_signature_section(keys):
    bad = wasmbin.with_custom_section(NUMERIC, trust.SIGNATURE_SECTION, b'{"alg": "ed25519"}')
    with pytest.raises(SignatureError, match="malformed"):
        wasmudf.load(bad, policy=policy(keys, "release"))


def test_a_required_signature_needs_a_trusted_key():
    with pytest.raises(PolicyError, match="needs at least one trusted key"):
        Policy(require_signature=True)
