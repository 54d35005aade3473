"""The CPU inference engine: the graph a model file carries, its checks at load, and the
commands that run it (real UCM images throughout)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from extraction import extract_two_views
from safetensors import safe_open
from safetensors.torch import save_file
from typer.testing import CliRunner

import model.features as features_module
from model.archive import iter_images, load_archive
from model.backbones import backbone_spec, create_backbone
from model.card import (
    GRAPH_DIGEST_KEY,
    GRAPH_KEY,
    GRAPH_VERSION_KEY,
    ModelCard,
    ModelFileError,
    add_graph,
    build_network,
    has_graph,
    load_model,
    save_model,
)
from model.engine import TOLERANCE, OrtEngine, attached_engine, engine_name
from model.features import FeatureKey
from model.graph_export import export_onnx
from model.inference import normalize, predict, prepare_batch
from service.cli import app


def _card(backbone: str = "tiny", input_size: int = 64) -> ModelCard:
    spec = backbone_spec(backbone)
    return ModelCard(
        backbone=backbone,
        weights="random",
        input_size=input_size,
        mean=spec.mean,
        std=spec.std,
        num_features=spec.num_features,
        embedding_dim=16,
        hidden_dim=32,
        label_names=[f"l{i}" for i in range(17)],
        thresholds=[0.5] * 17,
        loss="sndl_bce",
    )


def _ucm_images(root: Path, count: int) -> list[np.ndarray]:
    archive = load_archive(root)
    positions = list(range(0, len(archive), len(archive) // count))[:count]
    return [image for _, image in iter_images(archive, positions)]


def _tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(str(path), framework="pt") as handle:
        return {k: handle.get_tensor(k) for k in handle.keys()}, handle.metadata()  # noqa: SIM118


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    card = _card()
    path = tmp_path_factory.mktemp("engine") / "model.safetensors"
    save_model(path, build_network(card).eval(), card)
    return path


def test_served_network_on_onnxruntime_matches_torch_on_ucm_scenes(
    ucm_root: Path, tmp_path: Path
) -> None:
    """The served architecture (ImageNet EfficientNet-Lite0, 256 x 256, a hidden layer) on
    real scenes: ONNX Runtime's embeddings and probabilities within 1e-4 of torch's."""
    torch.manual_seed(0)
    card = _card("efficientnet_lite0", 256)
    card.hidden_dim, card.embedding_dim = 512, 128
    net = build_network(card)
    net.backbone, _ = create_backbone("efficientnet_lite0", pretrained=True)
    path = tmp_path / "model.safetensors"
    save_model(path, net.eval(), card)
    assert has_graph(path)
    on_ort, card = load_model(path, engine="onnxruntime")
    on_torch, _ = load_model(path, engine="torch")
    assert on_ort.engine is not None and on_ort.engine.name == "onnxruntime"
    assert on_torch.engine is None
    batch = prepare_batch(_ucm_images(ucm_root, 12), card.input_size)
    cpu = torch.device("cpu")
    ours, theirs = predict(on_ort, card, batch, cpu), predict(on_torch, card, batch, cpu)
    assert np.abs(ours.embeddings - theirs.embeddings).max() <= TOLERANCE
    assert np.abs(ours.probabilities - theirs.probabilities).max() <= TOLERANCE
    assert np.abs(ours.descriptors - theirs.descriptors).max() <= TOLERANCE
    assert not np.array_equal(ours.embeddings, theirs.embeddings)  # really another engine
    np.testing.assert_allclose(np.linalg.norm(ours.embeddings, axis=1), 1, atol=1e-5)
    # the descriptors are the ImageNet backbone's pooled features, on the unit sphere
    with torch.inference_mode():
        features = on_torch.backbone(normalize(batch, card.mean, card.std))
    expected = torch.nn.functional.normalize(features, dim=1).numpy()
    assert ours.descriptors.shape == (12, 1280)
    assert np.abs(ours.descriptors - expected).max() <= TOLERANCE


def test_auto_is_onnxruntime_and_bad_names_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GRN_ENGINE", raising=False)
    assert engine_name() == "onnxruntime"
    monkeypatch.setenv("GRN_ENGINE", "torch")
    assert engine_name() == "torch"
    monkeypatch.setenv("GRN_ENGINE", "tensorrt")
    with pytest.raises(ValueError, match="must be one of"):
        engine_name()


def test_a_tampered_graph_is_refused(tiny_model: Path, tmp_path: Path) -> None:
    tensors, metadata = _tensors(tiny_model)
    graph = tensors[GRAPH_KEY].clone()
    graph[len(graph) // 2] ^= 0xFF
    save_file({**tensors, GRAPH_KEY: graph}, str(tmp_path / "m.safetensors"), metadata=metadata)
    with pytest.raises(ModelFileError, match="SHA-256"):
        load_model(tmp_path / "m.safetensors")
    # the torch engine does not read the graph, but the file is refused all the same
    with pytest.raises(ModelFileError, match="SHA-256"):
        load_model(tmp_path / "m.safetensors", engine="torch")


def test_a_graph_of_other_weights_is_refused(tiny_model: Path, tmp_path: Path) -> None:
    tensors, metadata = _tensors(tiny_model)
    torch.manual_seed(1)
    card = _card()
    other = build_network(card).eval()
    graph = export_onnx(other, card.mean, card.std, card.input_size)
    import hashlib

    forged = {
        **metadata,
        GRAPH_DIGEST_KEY: hashlib.sha256(graph).hexdigest(),
    }
    blob = torch.frombuffer(bytearray(graph), dtype=torch.uint8)
    save_file({**tensors, GRAPH_KEY: blob}, str(tmp_path / "m.safetensors"), metadata=forged)
    # digest consistent, version recorded as these weights': only the outputs tell
    with pytest.raises(ModelFileError, match="differ from torch's"):
        load_model(tmp_path / "m.safetensors")
    forged[GRAPH_VERSION_KEY] = "grn-0000000000000000"
    save_file({**tensors, GRAPH_KEY: blob}, str(tmp_path / "v.safetensors"), metadata=forged)
    with pytest.raises(ModelFileError, match="not from these weights"):
        load_model(tmp_path / "v.safetensors")


def test_a_file_without_a_graph_still_loads_and_can_get_one(
    tiny_model: Path, tmp_path: Path
) -> None:
    tensors, metadata = _tensors(tiny_model)
    old = tmp_path / "old.safetensors"
    del tensors[GRAPH_KEY]
    save_file(tensors, str(old), metadata={"grn_model_card": metadata["grn_model_card"]})
    assert not has_graph(old)
    net, card = load_model(old)  # exported in memory and checked
    assert net.engine is not None and net.engine.name == "onnxruntime"
    assert add_graph(old).version == card.version
    assert has_graph(old)
    again, _ = load_model(old)
    assert again.engine is not None


def test_a_graph_from_an_earlier_release_is_replaced(
    tiny_model: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A model file whose graph gives embeddings and probabilities only (before descriptors)
    loads with the current graph exported in memory, and `add_graph` stores that graph."""
    import hashlib
    import io

    from model.engine import GRN_OUTPUTS, graph_outputs
    from model.graph_export import Preprocessed

    class Earlier(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            embedding, probabilities, _ = self.inner(images)
            return embedding, probabilities

    net, card = load_model(tiny_model, engine="torch")
    buffer = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(
            Earlier(Preprocessed(net, card.mean, card.std)).eval(),
            (torch.zeros(2, 3, 64, 64, dtype=torch.uint8),), buffer, dynamo=False,
            input_names=["images"], output_names=["embedding", "probabilities"],
            dynamic_axes={n: {0: "batch"} for n in ("images", "embedding", "probabilities")},
        )  # fmt: skip
    graph = buffer.getvalue()
    assert graph_outputs(graph) == ["embedding", "probabilities"]
    tensors, metadata = _tensors(tiny_model)
    metadata[GRAPH_DIGEST_KEY] = hashlib.sha256(graph).hexdigest()
    blob = torch.frombuffer(bytearray(graph), dtype=torch.uint8)
    old = tmp_path / "old.safetensors"
    save_file({**tensors, GRAPH_KEY: blob}, str(old), metadata=metadata)
    loaded, _ = load_model(old)
    assert "from an earlier release" in caplog.text
    out = predict(loaded, card, torch.zeros(2, 3, 64, 64, dtype=torch.uint8), torch.device("cpu"))
    assert out.descriptors.shape == (2, card.num_features)
    add_graph(old)
    stored = _tensors(old)[0][GRAPH_KEY].numpy().tobytes()
    assert graph_outputs(stored) == GRN_OUTPUTS


def test_the_engine_is_skipped_on_cuda_and_with_torch(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GRN_ENGINE", "torch")
    net, _ = load_model(tiny_model)
    assert net.engine is None
    monkeypatch.delenv("GRN_ENGINE")
    net, card = load_model(tiny_model)
    calls: list[int] = []
    real = net.engine.engine

    class Spy:
        name = "spy"

        def run(self, images: np.ndarray) -> tuple[np.ndarray, ...]:
            calls.append(len(images))
            return real.run(images)  # type: ignore[no-any-return]

    net.engine.engine = Spy()
    images = [np.zeros((64, 64, 3), np.uint8)] * 3
    predict(net, card, images, torch.device("cpu"))
    assert calls == [3]
    assert attached_engine(net, card.version, torch.device("cuda")) is None  # a GPU keeps torch
    # a network whose version differs from the card's (weights swapped) goes back to torch
    card.version = "grn-other"
    predict(net, card, images, torch.device("cpu"))
    assert calls == [3]


def test_grn_embed_runs_the_engine(
    tiny_model: Path, ucm_root: Path, ucm_subset: Path, tmp_path: Path
) -> None:
    out = tmp_path / "e.npz"
    common = ["embed", "--model", str(tiny_model), "--archive", str(ucm_root), "--labels",
              str(ucm_subset), "--split", "test", "--device", "cpu", "--quiet"]  # fmt: skip
    result = CliRunner().invoke(app, [*common, "--out", str(out)], env={"GRN_ENGINE": "auto"})
    assert result.exit_code == 0, result.output
    assert "onnxruntime" in result.output
    result = CliRunner().invoke(
        app, [*common, "--out", str(tmp_path / "t.npz")], env={"GRN_ENGINE": "torch"}
    )
    assert result.exit_code == 0 and ", torch)" in result.output, result.output
    ours, theirs = np.load(out), np.load(tmp_path / "t.npz")
    assert len(ours["names"]) == 21
    assert list(ours["names"]) == list(theirs["names"])
    assert np.abs(ours["embeddings"] - theirs["embeddings"]).max() <= TOLERANCE
    assert np.abs(ours["probabilities"] - theirs["probabilities"]).max() <= TOLERANCE


def test_head_mode_features_run_the_engine_and_match_torch(
    ucm_root: Path, ucm_subset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = load_archive(ucm_root, ucm_subset)
    backbone, weights = create_backbone("efficientnet_lite0", pretrained=True)
    spec = backbone_spec("efficientnet_lite0")
    key = FeatureKey("efficientnet_lite0", weights, 256)
    positions = archive.indices("test")[:6]
    used: list[str] = []
    real_run_engine = features_module.run_engine

    def spy(engine, *args, **kwargs):  # type: ignore[no-untyped-def]
        used.append(engine.name)
        return real_run_engine(engine, *args, **kwargs)

    monkeypatch.setattr(features_module, "run_engine", spy)

    on_engine = extract_two_views(backbone, key, archive, positions)
    monkeypatch.setenv("GRN_ENGINE", "torch")
    on_torch = extract_two_views(backbone, key, archive, positions)
    assert used == ["onnxruntime"]
    assert on_engine.shape == (2, 6, spec.num_features)
    assert np.abs(on_engine - on_torch).max() <= TOLERANCE


def test_ort_threads_follow_omp_num_threads(
    tiny_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tensors, _ = _tensors(tiny_model)
    graph = tensors[GRAPH_KEY].numpy().tobytes()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    engine = OrtEngine(graph)
    assert engine.session.get_session_options().intra_op_num_threads == 1
