"""The nested settings: every setting keeps its flat `GRN_` variable, whichever section
holds it; flat keyword arguments land in their sections; a child process gets them all back."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from index.stores import StoreSettings
from service.settings import Settings, leaf_paths, variable_of

# The variables the README, docs/api.md and docker-compose.yml name: they must keep working.
DOCUMENTED = {
    "GRN_DATABASE_URL", "GRN_MODEL_PATH", "GRN_INDEX_ROOT", "GRN_THUMBNAIL_DIR",
    "GRN_ARCHIVE_DIR", "GRN_VECTOR_STORE", "GRN_MILVUS_URI", "GRN_MILVUS_TOKEN", "GRN_NPROBE",
    "GRN_API_KEY", "GRN_WRITE_KEY", "GRN_READ_ACCESS", "GRN_CORS_ORIGINS", "GRN_ENVIRONMENT",
    "GRN_EMBEDDED_WORKER", "GRN_MAX_UPLOAD_BYTES", "GRN_MAX_MODEL_REQUESTS", "GRN_DEVICE",
    "GRN_BACKBONE_RERANK", "GRN_INDEX_POLL_SECONDS", "GRN_STORE_DIR", "GRN_MAP_TILES",
    "GRN_RENDER_CACHE_MAX_BYTES", "GRN_RENDER_CACHE_MAX_FILES", "GRN_RAY_ADDRESS",
}  # fmt: skip


ROOT = Path(__file__).parents[2]


def _without_grn() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.upper().startswith("GRN_")}


@pytest.fixture(autouse=True)
def no_grn_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.upper().startswith("GRN_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no .env file but the test's own


def test_each_setting_has_one_flat_name_in_one_section() -> None:
    paths = leaf_paths()
    assert len(paths) == 51  # the flat Settings' 48, the render cache's two, ray_address
    assert {f"GRN_{name.upper()}" for name in paths} >= DOCUMENTED
    assert paths["database_url"] == ("database", "database_url")
    assert paths["nprobe"] == ("store", "faiss", "nprobe")
    assert paths["milvus_token"] == ("store", "milvus", "milvus_token")
    assert paths["ray_address"] == ("jobs", "ray_address")
    assert all(len(path) >= 2 for path in paths.values())  # nothing left at the top


def test_the_environment_and_the_dotenv_file_reach_their_sections(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("GRN_NPROBE=9\nGRN_PORT=9000\ngrn_log_level=DEBUG\n")
    monkeypatch.setenv("GRN_PORT", "8123")  # the environment wins over .env
    monkeypatch.setenv("grn_database_url", "sqlite:///lower.db")  # any case, as before
    monkeypatch.setenv("GRN_CORS_ORIGINS", '["http://a.example"]')
    monkeypatch.setenv("GRN_MILVUS_TOKEN", "user:secret")
    monkeypatch.setenv("GRN_MAX_MODEL_REQUESTS", "3")
    settings = Settings()
    assert settings.store.faiss.nprobe == 9
    assert settings.server.port == 8123
    assert settings.server.log_level == "DEBUG"
    assert settings.database.database_url == "sqlite:///lower.db"
    assert settings.access.cors_origins == ["http://a.example"]
    assert settings.store.milvus.milvus_token.get_secret_value() == "user:secret"
    assert settings.limits.max_model_requests == 3
    assert settings.store.faiss.ef_search == 128  # untouched: its default


def test_flat_keywords_go_into_sections_over_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GRN_INDEX_ROOT", "/from/env")
    monkeypatch.setenv("GRN_NPROBE", "5")
    settings = Settings(index_root="/given", device="cpu")
    assert settings.store.index_root == Path("/given")
    assert settings.store.faiss.nprobe == 5  # the same section's other settings: environment
    assert settings.model.device == "cpu"
    nested = Settings(store=StoreSettings(vector_store="faiss", index_root=Path("/s")))
    assert nested.store.index_root == Path("/s")


def test_bad_values_name_their_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError) as caught:
        Settings(nprobe=0)
    assert variable_of(caught.value.errors()[0]["loc"]) == "GRN_NPROBE"
    monkeypatch.setenv("GRN_CORS_ORIGINS", "not json")
    with pytest.raises(ValidationError) as caught:
        Settings()
    assert variable_of(caught.value.errors()[0]["loc"]) == "GRN_CORS_ORIGINS"
    with pytest.raises(ValidationError, match="unknown vector store 'qdrant'"):
        Settings(vector_store="qdrant")


def test_with_store_puts_command_line_options_over_the_settings() -> None:
    settings = Settings(nprobe=7, api_key="k")
    moved = settings.with_store(index_root=Path("/x"), milvus_uri="http://127.0.0.1:9")
    assert moved.store.vector_store == "milvus"
    assert moved.store.milvus.milvus_uri == "http://127.0.0.1:9"
    assert moved.store.index_root == Path("/x")
    assert moved.store.faiss.nprobe == 7 and moved.access.api_key.get_secret_value() == "k"
    assert settings.store.vector_store == "faiss"  # the original is unchanged


def test_a_child_process_reads_the_same_settings(tmp_path: Path) -> None:
    settings = Settings(
        nprobe=11, api_key="secret", cors_origins=["http://b.example"], archive_dir=tmp_path
    )
    env = settings.as_environment()
    assert env["GRN_NPROBE"] == "11" and env["GRN_API_KEY"] == "secret"
    assert "GRN_MAX_MODEL_REQUESTS" not in env  # unset stays unset
    code = (
        "from service.settings import Settings; import json; "
        "s = Settings(); print(json.dumps([s.store.faiss.nprobe, "
        "s.access.api_key.get_secret_value(), s.access.cors_origins, str(s.jobs.archive_dir)]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=_without_grn() | env, capture_output=True,
        text=True, check=True, cwd=ROOT,
    ).stdout  # fmt: skip
    assert out.strip() == f'[11, "secret", ["http://b.example"], "{tmp_path}"]'


def test_a_bad_setting_is_one_line_from_the_cli() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "service.cli", "status"], env=_without_grn() | {"GRN_NPROBE": "0"},
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip() == "error: GRN_NPROBE: Input should be greater than or equal to 1"
