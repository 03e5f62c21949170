"""Fake credentials, and a scan of every byte a run or an export wrote for any of them.

The scan looks for the exact values, not for patterns: in every file under a folder (hidden ones and
W&B's included) and, inside every zip -- submission.zip, source.zip, torch checkpoints, the export --
in every member, decompressed, recursively.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

# Distinctive fakes in each vendor's format (none is a real credential).
FAKE_SECRETS = {
    "WANDB_API_KEY": "5f0c1e2d3c4b5a69788796a5b4c3d2e1f0a9b8c7",
    "NGROK_AUTHTOKEN": "2Zq8fakeNgrokTokenAbCdEf_7Gh8Ij9Kl0Mn1Op2Qr3St",
    "GITHUB_TOKEN": "ghp_FakeGithubTokenFakeGithubToken1234",
    "HF_TOKEN": "hf_FakeHuggingFaceTokenFakeHuggingFace",
    "OPENAI_API_KEY": "sk-FakeOpenAiKeyFakeOpenAiKeyFakeOpenAiKey42",
    "AWS_SECRET_ACCESS_KEY": "fAkEaWsSeCrEtKeYfAkEaWsSeCrEtKeY01234567",
}
NETRC_PASSWORD = "9e8d7c6b5a49382716059e8d7c6b5a4938271605"


def fake_credentials(home: Path) -> dict[str, str]:
    """Environment variables with fake credentials, and a fake ~/.netrc (W&B's login file) under ``home``."""
    home.mkdir(parents=True, exist_ok=True)
    netrc = home / ".netrc"
    netrc.write_text(f"machine api.wandb.ai\n  login user\n  password {NETRC_PASSWORD}\n")
    netrc.chmod(0o600)
    return {**FAKE_SECRETS, "HOME": str(home), "NETRC": str(netrc)}


def secret_values() -> list[bytes]:
    return [value.encode() for value in (*FAKE_SECRETS.values(), NETRC_PASSWORD)]


def _findings(data: bytes, where: str, secrets: list[bytes]) -> tuple[int, list[str]]:
    scanned, found = 1, [f"{where}: holds {secret[:6].decode()}..." for secret in secrets if secret in data]
    if data[:4] == b"PK\x03\x04":
        try:
            archive = zipfile.ZipFile(io.BytesIO(data))
        except zipfile.BadZipFile:
            return scanned, found
        with archive:
            for name in archive.namelist():
                count, inner = _findings(archive.read(name), f"{where}!{name}", secrets)
                scanned += count
                found += inner
    return scanned, found


def scan_for_secrets(paths: list[Path]) -> tuple[int, list[str]]:
    """(files and zip members scanned, findings) over every file under ``paths``."""
    secrets = secret_values()
    scanned, found = 0, []
    for root in paths:
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for path in files:
            count, inner = _findings(path.read_bytes(), str(path), secrets)
            scanned += count
            found += inner
    return scanned, found
