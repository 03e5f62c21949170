"""What counts as a secret or a personal path in text that leaves the machine (docs/DESIGN.md §8): the
patterns the export's leak scan refuses (:mod:`report.leaks`) and the redaction applied to what a run
records about its environment (a dirty git diff, ``pip freeze``), so the two can never disagree.

W&B API keys (40 hex characters after ``WANDB_API_KEY`` or as a ``.netrc`` password), ngrok auth tokens,
other API keys and tokens assigned to a key/secret/token name or in a well-known vendor format, private
keys, and absolute home paths (``/home/<user>/``, ``/Users/<user>/``, root's home, ``C:\\Users\\<user>\\``)
that name the person and their machine.

This file travels in every run's source.zip, which the leak scan reads too: no pattern here may match its own
source text (hence the split literal of root's home).
"""

from __future__ import annotations

import re

_TOKEN = rb"[A-Za-z0-9_\\\-]"
_U = rb"\\?_"  # an underscore, also as LaTeX writes it (\_), so the .tex write-up is covered too
HOME_PATH = "absolute home path"
PATTERNS: list[tuple[str, re.Pattern[bytes]]] = [
    ("private key", re.compile(rb"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----")),
    ("W&B API key", re.compile(rb"WANDB" + _U + rb"API" + _U + rb"KEY['\"]?\s*[:=]\s*['\"]?(?:local-)?[0-9a-f]{40}"
                               rb"(?![0-9a-f])")),
    ("W&B API key (.netrc password)", re.compile(rb"\bpassword\s+['\"]?(?:local-)?[0-9a-f]{40}(?![0-9a-f])")),
    ("ngrok auth token", re.compile(rb"(?i)(?:ngrok|auth(?:" + _U + rb")?token)[^\n]{0,40}?['\"\s=:(]\s*[0-9A-Za-z]{20,}"
                                    + _U + rb"[0-9A-Za-z]{15,}")),
    ("API key or token", re.compile(
        rb"(?i)\b[A-Z0-9_\\]*(?:API(?:" + _U + rb")?KEY|SECRET(?:" + _U + rb"KEY)?|(?:ACCESS|AUTH)(?:" + _U + rb")?TOKEN)"
        rb"['\"]?\s*[:=]\s*['\"]?" + _TOKEN + rb"{20,}")),
    ("GitHub token", re.compile(rb"\bgh[pousr]_[A-Za-z0-9]{36}\b")),
    ("AWS access key id", re.compile(rb"\bAKIA[0-9A-Z]{16}\b")),
    ("OpenAI-style secret key", re.compile(rb"\bsk-[A-Za-z0-9_\-]{32,}")),
    ("Hugging Face token", re.compile(rb"\bhf_[A-Za-z0-9]{34}\b")),
    (HOME_PATH, re.compile(rb"(?:/home/[A-Za-z0-9._-]+/|/Users/[A-Za-z0-9._-]+/|(?<![A-Za-z0-9_.-])/ro" rb"ot/"
                           rb"|[A-Za-z]:\\\\?Users\\\\?[A-Za-z0-9._ -]+\\)")),
]
# One pass over the bytes: a cheap literal pre-filter before the detailed patterns.
ANCHORS = re.compile(rb"(?i)BEGIN|WANDB|password|ngrok|auth|key|secret|token|gh[pousr]_|AKIA|sk-|hf_|/home/|/Users/"
                     rb"|/ro" rb"ot/|Users\\")
# A private key is redacted whole, from its BEGIN line to its END line (or to the end of the text).
_PRIVATE_KEY_BLOCK = re.compile(rb"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----.*?(?:-----END (?:[A-Z0-9]+ )*PRIVATE "
                                rb"KEY-----|\Z)", re.DOTALL)


def redact(text: str) -> tuple[str, list[str]]:
    """``text`` with every secret replaced by ``[redacted <kind>]`` and every home path by ``~/``, and the
    kinds found (each once, in pattern order)."""
    data = text.encode("utf-8", "surrogateescape")
    if not ANCHORS.search(data):
        return text, []
    found: list[str] = []
    data, count = _PRIVATE_KEY_BLOCK.subn(b"[redacted private key]", data)
    if count:
        found.append("private key")
    for kind, pattern in PATTERNS[1:]:
        replacement = b"~/" if kind == HOME_PATH else f"[redacted {kind}]".encode()
        data, count = pattern.subn(replacement, data)
        if count:
            found.append(kind)
    return data.decode("utf-8", "surrogateescape"), found
