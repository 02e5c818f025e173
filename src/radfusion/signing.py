"""Optional signatures of a bundle's ``bundle.json``.

``bundle.json`` records the SHA-256 of every other bundle file, so a signature over
it vouches for the whole bundle. Whoever can edit a bundle can also rewrite its
hashes; a signature made with a key the recipient trusts cannot be forged that way.

Two kinds of key, both read from a file:

- a shared secret (any file of at least 16 bytes, e.g. ``head -c 32 /dev/urandom``):
  HMAC-SHA256, signed and checked with the same file;
- an Ed25519 key pair in PEM form (``openssl genpkey -algorithm ed25519``): signed with
  the private key, checked with the public key (``openssl pkey -pubout``).

The signature lives next to ``bundle.json`` in ``bundle.json.sig`` (JSON: algorithm
and hex signature).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

from radfusion.errors import RadfusionError
from radfusion.layout import BundleLayout
from radfusion.utils import atomic_write_json

HMAC = "hmac-sha256"
ED25519 = "ed25519"
_MIN_SECRET = 16


class SignatureError(RadfusionError):
    """A bundle signature that is missing, malformed or does not verify."""


def _read_key(path: Path) -> bytes:
    if not path.is_file():
        raise SignatureError(f"key file not found: {path}")
    data = path.read_bytes()
    if not data:
        raise SignatureError(f"key file {path} is empty")
    return data


def _pem_key(data: bytes, path: Path) -> Any | None:
    """The Ed25519 key in a PEM file, or None when the file is not PEM (a shared secret)."""
    if not data.lstrip().startswith(b"-----BEGIN"):
        return None
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )
    from cryptography.hazmat.primitives.serialization import (
        load_pem_private_key,
        load_pem_public_key,
    )

    try:
        key: Any = (
            load_pem_private_key(data, password=None)
            if b"PRIVATE KEY" in data
            else load_pem_public_key(data)
        )
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"key file {path} is not a readable PEM key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey | Ed25519PublicKey):
        raise SignatureError(f"key file {path} holds a {type(key).__name__}; use an Ed25519 key")
    return key


def _secret(data: bytes, path: Path) -> bytes:
    if len(data) < _MIN_SECRET:
        raise SignatureError(
            f"shared key file {path} holds {len(data)} bytes; use at least {_MIN_SECRET} "
            "random bytes (e.g. head -c 32 /dev/urandom > KEY)"
        )
    return data


def sign_bundle(bundle: str | Path, key_file: str | Path) -> Path:
    """Sign ``bundle/bundle.json`` with a shared secret or an Ed25519 private key.

    Parameters
    ----------
    bundle : Path
        The bundle folder.
    key_file : Path
        A shared-secret file (HMAC-SHA256) or an Ed25519 private key in PEM form.

    Returns
    -------
    Path
        The signature file written, ``bundle/bundle.json.sig``.
    """
    bundle, key_file = Path(bundle), Path(key_file)
    layout = BundleLayout(bundle)
    if not layout.meta.is_file():
        raise SignatureError(f"{bundle} is not a radfusion bundle ({layout.META} missing)")
    message = layout.meta.read_bytes()
    data = _read_key(key_file)
    key = _pem_key(data, key_file)
    if key is None:
        sig = {"algorithm": HMAC, "signature": _hmac(_secret(data, key_file), message)}
    elif hasattr(key, "sign"):
        sig = {"algorithm": ED25519, "signature": key.sign(message).hex()}
    else:
        raise SignatureError(f"{key_file} is a public key; signing needs the private key")
    atomic_write_json(layout.signature, sig)
    return layout.signature


def _hmac(secret: bytes, message: bytes) -> str:
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def verify_bundle_signature(bundle: str | Path, key_file: str | Path) -> str:
    """Check ``bundle.json.sig`` against a trusted key; return the algorithm used.

    Raises
    ------
    SignatureError
        No signature, a malformed one, another algorithm than the key's, or a
        signature that does not match (the bundle was changed after signing, or it
        was signed with another key).
    """
    bundle, key_file = Path(bundle), Path(key_file)
    layout = BundleLayout(bundle)
    sig_path = layout.signature
    if not sig_path.is_file():
        raise SignatureError(
            f"{bundle} is not signed ({layout.SIGNATURE} missing) but a trusted key was given; "
            "ask its author for a signed bundle"
        )
    try:
        sig = json.loads(sig_path.read_text())
        algorithm, signature = str(sig["algorithm"]), bytes.fromhex(sig["signature"])
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise SignatureError(f"{sig_path} is not a radfusion signature file") from None
    message = layout.meta.read_bytes()
    data = _read_key(key_file)
    key = _pem_key(data, key_file)
    expected = HMAC if key is None else ED25519
    if algorithm != expected:
        raise SignatureError(
            f"{sig_path} is a {algorithm} signature but {key_file} is a {expected} key"
        )
    if key is None:
        ok = hmac.compare_digest(_hmac(_secret(data, key_file), message), signature.hex())
    else:
        from cryptography.exceptions import InvalidSignature

        public = key.public_key() if hasattr(key, "sign") else key
        try:
            public.verify(signature, message)
            ok = True
        except InvalidSignature:
            ok = False
    if not ok:
        raise SignatureError(
            f"{bundle}: the signature of {layout.META} does not match the trusted key "
            f"{key_file}; the bundle was changed after signing or signed with another key"
        )
    return algorithm
