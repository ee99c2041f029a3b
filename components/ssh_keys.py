"""SSH keys from the stack config, parsed for real (not matched by shape).

Each check returns None for a usable key, else one sentence saying what is
wrong and what to do. A message never quotes a private key, nor any part of
one: the caller names the config key, never the value.
"""

from __future__ import annotations

from typing import Any

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed25519, rsa

# ssh-keygen's default RSA size since OpenSSH 8.0 (2019). NIST SP 800-57
# accepts 2048 bits only until 2030, and these keys grant root on hosts
# that live for years; anything new should be ed25519 anyway.
MIN_RSA_BITS = 3072
# Key types sshd accepts in authorized_keys that this project grants. The
# FIDO (`sk-`) types keep their private half on a hardware token.
USER_KEY_TYPES = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
)
# A server's host key is never a FIDO key.
HOST_KEY_TYPES = USER_KEY_TYPES[:5]
PRIVATE_MARKER = "PRIVATE KEY"
GENERATE = "generate one with `ssh-keygen -t ed25519`"


def _has_control(text: str) -> bool:
    return any(ord(c) < 32 or ord(c) == 127 for c in text)


def _rsa_problem(key: object) -> str | None:
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey) and key.key_size < MIN_RSA_BITS:
        return (
            f"an RSA key of {key.key_size} bits is too small; at least {MIN_RSA_BITS} bits are "
            f"required ({GENERATE}, or `ssh-keygen -t rsa -b 4096`)"
        )
    if isinstance(key, dsa.DSAPublicKey | dsa.DSAPrivateKey):
        return f"DSA keys are disabled in OpenSSH; {GENERATE}"
    return None


def _holds_another_key(comment: str) -> bool:
    """Whether a key line's comment is itself a key (a type name, or a key
    body: base64 of an SSH key always starts `AAAA`, the length of its type
    name)."""
    return any(word in USER_KEY_TYPES or word in ("ssh-dss",) or (word.startswith("AAAA") and len(word) >= 60)
               for word in comment.split())


def ssh_public_key_problem(line: str, accepted: tuple[str, ...] = USER_KEY_TYPES) -> str | None:
    """What is wrong with one OpenSSH public key line ('type base64 [comment]')."""
    if PRIVATE_MARKER in line:
        return (
            "this is a private key: give the public key (the .pub file's one line) and keep the "
            "private key to yourself"
        )
    if _has_control(line):
        return "holds a line break or control character; give exactly one key per list entry"
    fields = line.split(None, 2)
    if len(fields) < 2:
        return "expected an OpenSSH public key line ('ssh-ed25519 AAAA... comment')"
    kind, body = fields[0], fields[1]
    if kind not in accepted:
        if "=" in kind or "," in kind:
            return "authorized_keys options (from=..., command=...) are not accepted; give the key alone"
        return f"key type {kind[:40]!r} is not accepted; accepted: {', '.join(accepted)}"
    if len(fields) == 3 and _holds_another_key(fields[2]):
        return (
            "holds more than one key: sshd reads the second as the first one's comment and grants it "
            "nothing; give exactly one key per list entry"
        )
    try:
        key = serialization.load_ssh_public_key(f"{kind} {body}".encode())
    except (ValueError, UnsupportedAlgorithm):
        return (
            f"the {kind} key's body is not a valid key (truncated or altered?); copy the whole "
            "line of the .pub file again"
        )
    return _rsa_problem(key)


def ssh_private_key_problem(text: str) -> str | None:
    """What is wrong with a private key the program dials SSH with.

    Accepted: OpenSSH (`-----BEGIN OPENSSH PRIVATE KEY-----`) or PEM
    (PKCS#8, PKCS#1, SEC1), unencrypted (the stack stores it encrypted as a
    Pulumi secret), ed25519, ECDSA, or RSA of MIN_RSA_BITS or more. FIDO
    keys cannot be used: their private half never leaves the token.
    """
    stripped = text.strip()
    if stripped.startswith(tuple(f"{t} " for t in USER_KEY_TYPES)):
        return "holds a public key; give the private key file (e.g. ~/.ssh/id_ed25519, not the .pub)"
    if PRIVATE_MARKER not in stripped:
        return (
            "is not a private key (no '-----BEGIN ... PRIVATE KEY-----' block); set it with "
            "`pulumi config set --secret functions-runtime:dedicatedSshKey < ~/.ssh/id_ed25519`"
        )
    data = stripped.encode() + b"\n"
    try:
        if b"OPENSSH PRIVATE KEY" in data:
            key: object = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        return (
            "is encrypted with a passphrase, which the program cannot type; give an unencrypted "
            "key (Pulumi stores it encrypted), e.g. a copy after `ssh-keygen -p -N '' -f <copy>`"
        )
    except (ValueError, UnsupportedAlgorithm):
        return (
            "does not parse as an OpenSSH or PEM private key (truncated, altered, or a FIDO key "
            f"whose private half stays on the token); {GENERATE} and add its .pub on the hosts"
        )
    if not isinstance(
        key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | dsa.DSAPrivateKey
    ):
        return f"is a key type SSH cannot use; {GENERATE}"
    return _rsa_problem(key)


def ssh_public_key_line(private_key_text: str, config_key: str) -> str:
    """The OpenSSH public key of a private key (the program grants itself
    that key on every host). A key that does not parse raises, naming its
    config key and what is wrong, never the value."""
    problem = ssh_private_key_problem(private_key_text)
    if problem:
        raise ValueError(f"{config_key}: {problem}")
    data = private_key_text.strip().encode() + b"\n"
    if b"OPENSSH PRIVATE KEY" in data:
        key: Any = serialization.load_ssh_private_key(data, password=None)
    else:
        key = serialization.load_pem_private_key(data, password=None)
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
