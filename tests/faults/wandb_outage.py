"""A logged-in W&B user whose network reaches nothing, for tests and the outage benchmark.

The user's key sits in ``~/.netrc`` under wandb's default server; every connection goes through an HTTPS
proxy on 127.0.0.1 that records which server was asked for (``CONNECT host:443``) and answers nothing,
so wandb really tries its server and fails as in an outage, and nothing leaves the machine.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlsplit

from faults.secrets import FAKE_SECRETS, NETRC_PASSWORD

# What a W&B user's environment may set; the outage environment starts without any of it.
WANDB_VARIABLES = ("WANDB_API_KEY", "WANDB_BASE_URL", "WANDB_MODE", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_SILENT",
                   "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "NETRC")


def default_base_url() -> str:
    import wandb

    return wandb.Settings().base_url  # wandb's own default server, whatever the release makes it


def write_netrc(home: Path, host_url: str, key: str = NETRC_PASSWORD) -> Path:
    """``home/.netrc`` with ``key`` for ``host_url``'s host, as `wandb login` writes it."""
    netrc = home / ".netrc"
    netrc.write_text(f"machine {urlsplit(host_url).netloc}\n  login user\n  password {key}\n")
    netrc.chmod(0o600)
    return netrc


class RecordingBlackHole:
    """A TCP listener on 127.0.0.1 that records the first bytes of each connection and closes it."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            with connection:
                connection.settimeout(2)
                try:
                    self.seen.append(connection.recv(200))
                except OSError:
                    pass

    def asked_for(self, host: str) -> bool:
        return any(f"CONNECT {host}:443".encode() in seen for seen in self.seen)

    def close(self) -> None:
        self.socket.close()


def outage_environment(home: Path, proxy_url: str, repo: Path) -> dict[str, str]:
    """The environment of an ``mtl-train`` child: a key in ``home/.netrc`` for wandb's default server,
    the other fake secrets around, W&B's folders under ``home``, every connection through ``proxy_url``."""
    home.mkdir(parents=True, exist_ok=True)
    write_netrc(home, default_base_url())
    env = {k: v for k, v in os.environ.items() if k not in WANDB_VARIABLES and not k.lower().endswith("_proxy")}
    env.update({k: v for k, v in FAKE_SECRETS.items() if k != "WANDB_API_KEY"})  # the netrc is the key here
    env.update(HOME=str(home), WANDB_CONFIG_DIR=str(home / ".config" / "wandb"),
               WANDB_CACHE_DIR=str(home / ".cache" / "wandb"), WANDB_DATA_DIR=str(home / ".local" / "wandb"),
               HTTPS_PROXY=proxy_url, HTTP_PROXY=proxy_url, https_proxy=proxy_url, http_proxy=proxy_url,
               WANDB_ERROR_REPORTING="false", PYTHONPATH=str(repo))
    return env
