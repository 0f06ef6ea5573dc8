"""The model as the operator has it: a Hugging Face snapshot's files in a folder, or a repo
id found in the local Hugging Face cache; what is missing is named at start."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from inference import EngineConfig, Finished, GemmaEngine, Request, Sampling, normalize_image
from inference.model_files import REPO_ID, ModelNotFound, check_model_dir
from tools.tiny import TINY_IMAGE_SOFT_TOKENS, write_tiny_checkpoint

CHECKOUT = Path(__file__).resolve().parents[2]
TRAVELBOT = Path(sys.executable).with_name("travelbot")
COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny checkpoint in the layout of a google/gemma-4-26B-A4B-it snapshot."""
    return write_tiny_checkpoint(tmp_path_factory.mktemp("snapshot"), snapshot_layout=True)


def hf_cache(snapshot: Path, cache: Path) -> Path:
    """A Hugging Face cache holding `snapshot` as REPO_ID's main revision, laid out as
    huggingface_hub lays it out: files in blobs/, named by links in snapshots/<commit>/."""
    repo = cache / ("models--" + REPO_ID.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    (repo / "blobs").mkdir()
    (repo / "snapshots" / COMMIT).mkdir(parents=True)
    for file in snapshot.iterdir():
        blob = hashlib.sha256(file.read_bytes()).hexdigest()
        shutil.copyfile(file, repo / "blobs" / blob)
        (repo / "snapshots" / COMMIT / file.name).symlink_to(Path("../../blobs") / blob)
    return repo / "snapshots" / COMMIT


def shards(folder: Path) -> list[str]:
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    return sorted(set(index["weight_map"].values()))


def answer_a_photo(engine: GemmaEngine, photo: bytes) -> Finished:
    request = Request(language="de", images=(normalize_image(photo),), max_new_tokens=6,
                      sampling=Sampling(temperature=0.0))  # fmt: skip
    return engine.generate(request, lambda event: None, lambda: False)


def test_the_snapshot_layout_loads_and_answers_a_photo(snapshot: Path, sign_png: bytes) -> None:
    names = {file.name for file in snapshot.iterdir()}
    assert len(shards(snapshot)) >= 2 and set(shards(snapshot)) <= names
    assert "model.safetensors" not in names and "preprocessor_config.json" not in names
    assert {"generation_config.json", "tokenizer.json", "tokenizer_config.json"} <= names
    nested = json.loads((snapshot / "processor_config.json").read_text())["image_processor"]
    assert nested["max_soft_tokens"] == TINY_IMAGE_SOFT_TOKENS

    engine = GemmaEngine.load(EngineConfig(model_path=snapshot, device="cpu"))
    # the nested config was read: the processor's default is another budget
    assert engine.image_processor.max_soft_tokens == TINY_IMAGE_SOFT_TOKENS
    finished = answer_a_photo(engine, sign_png)
    assert finished.num_prompt_tokens > TINY_IMAGE_SOFT_TOKENS  # the photo's soft tokens
    assert finished.num_output_tokens > 0


def test_a_repo_id_loads_from_the_hugging_face_cache(
    snapshot: Path, sign_png: bytes, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = hf_cache(snapshot, tmp_path / "hub")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert check_model_dir(REPO_ID) == folder

    engine = GemmaEngine.load(EngineConfig(model_path=REPO_ID, device="cpu"))
    assert answer_a_photo(engine, sign_png).num_output_tokens > 0


def test_the_cache_is_found_under_hf_home(
    snapshot: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = hf_cache(snapshot, tmp_path / "home" / "hub")
    for name in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "home"))
    assert check_model_dir(REPO_ID) == folder


def test_a_repo_id_not_in_the_cache_says_where_it_looked_and_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelNotFound) as raised:
        check_model_dir(REPO_ID)
    message = str(raised.value)
    assert REPO_ID in message and str(tmp_path / "empty") in message
    assert f"hf download {REPO_ID}" in message and "TRAVELBOT_MODEL_PATH" in message


def test_a_folder_wins_over_a_repo_id_spelled_the_same(
    snapshot: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hf_cache(snapshot, tmp_path / "hub")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    shutil.copytree(snapshot, tmp_path / REPO_ID)
    monkeypatch.chdir(tmp_path)
    assert check_model_dir(REPO_ID).resolve() == (tmp_path / REPO_ID).resolve()


@pytest.mark.parametrize(
    ("remove", "named"),
    [
        ("config.json", "config.json"),
        ("tokenizer.json", "tokenizer.json"),
        ("tokenizer_config.json", "tokenizer_config.json"),
        ("processor_config.json", "image processor config"),
        ("model.safetensors.index.json", "model.safetensors"),
    ],
)
def test_a_folder_lacking_a_file_is_refused_naming_it(
    snapshot: Path, tmp_path: Path, remove: str, named: str
) -> None:
    folder = shutil.copytree(snapshot, tmp_path / "model")
    (folder / remove).unlink()
    with pytest.raises(ModelNotFound, match=named):
        check_model_dir(folder)


def test_missing_shards_are_named(snapshot: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(snapshot, tmp_path / "model")
    first, *others = shards(folder)
    (folder / first).unlink()
    with pytest.raises(ModelNotFound) as raised:
        check_model_dir(folder)
    assert first in str(raised.value) and not any(name in str(raised.value) for name in others)


def test_a_processor_config_without_the_image_processor_is_refused(
    snapshot: Path, tmp_path: Path
) -> None:
    folder = shutil.copytree(snapshot, tmp_path / "model")
    (folder / "processor_config.json").write_text('{"processor_class": "Gemma4Processor"}')
    with pytest.raises(ModelNotFound, match="image processor config"):
        check_model_dir(folder)


def test_an_interrupted_download_in_the_cache_is_refused_naming_the_shard(
    snapshot: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = hf_cache(snapshot, tmp_path / "hub")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    last = shards(folder)[-1]
    (folder / last).resolve().unlink()  # the blob never came: a dangling link
    with pytest.raises(ModelNotFound, match=f"{REPO_ID}.*lacks {last}"):
        check_model_dir(REPO_ID)


def ask(image: Path, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TRAVELBOT_")}
    environment |= {"TRAVELBOT_MODEL_PATH": REPO_ID, "PYTHONPATH": str(CHECKOUT), **env}
    command = [str(TRAVELBOT), "ask", str(image), "--max-new-tokens", "4", "--greedy"]
    return subprocess.run(command, capture_output=True, text=True, env=environment, cwd=cwd,
                          timeout=120)  # fmt: skip


def test_travelbot_ask_with_a_repo_id(snapshot: Path, sign_png: bytes, tmp_path: Path) -> None:
    image = tmp_path / "sign.png"
    image.write_bytes(sign_png)
    hf_cache(snapshot, tmp_path / "hub")
    answered = ask(image, tmp_path, HF_HUB_CACHE=str(tmp_path / "hub"))
    assert answered.returncode == 0, answered.stderr
    assert answered.stdout.strip()

    refused = ask(image, tmp_path, HF_HUB_CACHE=str(tmp_path / "empty"))
    assert refused.returncode == 2
    assert REPO_ID in refused.stderr and str(tmp_path / "empty") in refused.stderr
