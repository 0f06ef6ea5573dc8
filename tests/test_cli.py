"""The `travelbot` console script, run as a user would."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

TRAVELBOT = Path(sys.executable).with_name("travelbot")


def run(*args: str, model: Path | None = None, **settings: str) -> subprocess.CompletedProcess:
    """`travelbot ARGS`; `settings` are TRAVELBOT_* variables (without the prefix)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAVELBOT_")}
    if model is not None:
        env["TRAVELBOT_MODEL_PATH"] = str(model)
    env.update({f"TRAVELBOT_{name.upper()}": value for name, value in settings.items()})
    return subprocess.run(
        [str(TRAVELBOT), *args], capture_output=True, text=True, env=env, timeout=120
    )


def test_ask_prints_an_answer_from_the_tiny_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    image = tmp_path / "sign.png"
    made = run("sample-image", str(image), "--kind", "sign")
    assert made.returncode == 0 and image.stat().st_size > 10_000
    result = run("ask", str(image), "--lang", "de", "--max-new-tokens", "12", "--greedy",
                 model=tiny_model_dir, log_format="json")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert "12 generated" in result.stderr or "stop" in result.stderr
    # While the model loads (minutes at full size) stderr says so, part by part
    lines = result.stderr.splitlines()
    events = [json.loads(line)["event"] for line in lines if line.startswith("{")]
    loading = [name for name in events if name.startswith(("model_", "batch_engine_"))]
    assert loading[:2] == ["model_loading", "model_weights_progress"]
    assert loading[-4:] == ["model_loaded", "batch_engine_starting", "batch_engine_ready",
                            "model_ready"]  # fmt: skip


def test_ask_and_run_without_a_model_say_how_to_get_one(tmp_path: Path) -> None:
    image = tmp_path / "menu.png"
    run("sample-image", str(image), "--kind", "menu")
    asked = run("ask", str(image))
    assert asked.returncode == 2
    assert "TRAVELBOT_MODEL_PATH" in asked.stderr and "tiny-checkpoint" in asked.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAVELBOT_")}
    env |= {"TRAVELBOT_TELEGRAM_TOKEN": "1:x", "TRAVELBOT_DATABASE_PATH": str(tmp_path / "d")}
    ran = subprocess.run([str(TRAVELBOT), "run"], capture_output=True, text=True, env=env,
                         timeout=120)  # fmt: skip
    assert ran.returncode != 0 and "tiny-checkpoint" in ran.stderr


def test_run_without_token_says_where_to_get_one(tiny_model_dir: Path) -> None:
    ran = run("run", model=tiny_model_dir)
    assert ran.returncode != 0 and "@BotFather" in ran.stderr


def test_tiny_checkpoint_command_writes_a_loadable_directory(tmp_path: Path) -> None:
    made = run("tiny-checkpoint", str(tmp_path / "tiny"))
    assert made.returncode == 0
    names = {p.name for p in (tmp_path / "tiny").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= names
    assert any(name.startswith(("preprocessor_config", "processor_config")) for name in names)


def test_serve_answers_openai_clients_until_terminated(tiny_model_dir: Path) -> None:
    import signal
    import socket

    import httpx
    import openai

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAVELBOT_")}
    env |= {"TRAVELBOT_SERVE_API_KEY": "s3cret", "TRAVELBOT_DEVICE": "cpu"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)  # this checkout's code
    command = [str(TRAVELBOT), "serve", "--model", str(tiny_model_dir), "--port", str(port),
               "--served-model-name", "tiny"]  # fmt: skip
    server = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        base_url = f"http://127.0.0.1:{port}/v1"
        for _ in range(600):
            try:
                httpx.get(f"{base_url}/models", timeout=1)
                break
            except httpx.TransportError:
                assert server.poll() is None, server.stdout.read().decode()
                time.sleep(0.1)
        api = openai.OpenAI(base_url=base_url, api_key="s3cret", max_retries=0)
        assert [m.id for m in api.models.list().data] == ["tiny"]
        answer = api.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "Exit?"}], max_tokens=3
        )
        assert answer.usage.completion_tokens <= 3 and answer.choices[0].finish_reason
    finally:
        server.send_signal(signal.SIGTERM)
        output = server.communicate(timeout=30)[0].decode()
    assert server.returncode == 0, output
    assert "server_started" in output and "s3cret" not in output


def test_version_is_the_installed_package_version() -> None:
    from importlib.metadata import version

    shown = run("--version")
    assert shown.returncode == 0 and shown.stdout == f"travelbot {version('travelbot')}\n"


def test_a_wrong_variable_stops_only_the_commands_that_read_settings(tmp_path: Path) -> None:
    made = run("tiny-checkpoint", str(tmp_path / "tiny"), max_queue="lots")
    assert made.returncode == 0, made.stderr
    drawn = run("sample-image", str(tmp_path / "sign.png"), max_queue="lots")
    assert drawn.returncode == 0, drawn.stderr
    # One line: the variable and what it takes, before anything loads
    ran = run("run", model=tmp_path / "tiny", max_queue="lots", telegram_token="1:x")
    assert ran.returncode == 2 and ran.stdout == ""
    assert ran.stderr == (
        "Invalid setting TRAVELBOT_MAX_QUEUE: "
        "Input should be a valid integer, unable to parse string as an integer\n"
    )
