"""`travelbot serve` without an API key: refused on an address others can reach, served
with a loud warning on loopback. The console script, run as a user would."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from inference.openai_server import is_loopback

TRAVELBOT = Path(sys.executable).with_name("travelbot")
ROOT = Path(__file__).resolve().parent.parent


def serve_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAVELBOT_")}
    env |= {"TRAVELBOT_DEVICE": "cpu", "PYTHONPATH": str(ROOT), **settings}  # this checkout
    return env


@pytest.mark.parametrize("key", [None, "", "  "])
def test_no_key_on_a_public_address_is_refused(key: str | None, tiny_model_dir: Path) -> None:
    """Refused before the model is loaded; an empty key is no key. The address is one of
    TEST-NET's, never this machine's: were it not refused, nothing would be exposed."""
    env = serve_env() if key is None else serve_env(TRAVELBOT_SERVE_API_KEY=key)
    command = [str(TRAVELBOT), "serve", "--model", str(tiny_model_dir), "--host", "192.0.2.1"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "TRAVELBOT_SERVE_API_KEY" in result.stderr and "--insecure-no-auth" in result.stderr
    assert "model_ready" not in result.stdout + result.stderr


def test_loopback_addresses() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "127.3.2.1", "::1", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "", "10.0.0.7", "gpu-0", "192.0.2.1"]))


def test_no_key_on_loopback_serves_and_warns(tiny_model_dir: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [str(TRAVELBOT), "serve", "--model", str(tiny_model_dir), "--port", str(port),
               "--served-model-name", "tiny"]  # fmt: skip
    server = subprocess.Popen(
        command, env=serve_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        root = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"{root}/health", timeout=1)
                break
            except httpx.TransportError:
                assert server.poll() is None and time.monotonic() < deadline
                time.sleep(0.1)
        assert health.status_code == 200
        assert httpx.get(f"{root}/v1/models", timeout=5).status_code == 200  # no key asked
    finally:
        server.send_signal(signal.SIGTERM)
        output = server.communicate(timeout=30)[0].decode()
    assert server.returncode == 0, output
    warning = next(line for line in output.splitlines() if "auth_disabled" in line)
    assert "warning" in warning
