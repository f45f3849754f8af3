"""Tests for prunekit.zoo: every shipped checkpoint loads and reaches its recorded accuracy."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from prunekit import train, zoo
from prunekit.metrics import count_params as count_parameters


EXPECTED = {"mlp-digits": 0.95, "cnn-digits": 0.95, "cnn-shapes": 0.90, "resnet-shapes": 0.90}


@pytest.fixture(autouse=True)
def empty_cache(tmp_path, monkeypatch):
    """Each test sees an empty cache of its own (not the user's ~/.cache/prunekit)."""
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "checkpoints"


def test_available_lists_the_shipped_checkpoints():
    names = zoo.available()
    assert names == sorted(names)
    assert set(EXPECTED) <= set(names)
    assert set(names) <= set(zoo.RECIPES)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_checkpoint_loads_and_reaches_its_accuracy(name):
    entry = zoo.info(name)
    model = zoo.load(name)
    assert not model.training
    assert type(model).__name__ == entry["model"]
    assert count_parameters(model) == entry["num_parameters"]
    _, test_loader = zoo.loaders(name)
    acc = train.evaluate(model, test_loader)
    assert acc == pytest.approx(entry["test_accuracy"], abs=0.005)
    assert entry["test_accuracy"] >= EXPECTED[name]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_metadata_matches_recipe_and_file(name):
    entry = zoo.info(name)
    recipe = zoo.RECIPES[name]
    for key in ("model", "model_kwargs", "dataset", "dataset_kwargs", "recipe"):
        assert entry[key] == recipe[key], key  # zoo.json is not stale w.r.t. the code
    path = zoo.CHECKPOINT_DIR / entry["file"]
    raw = path.read_bytes()
    assert len(raw) == entry["file_bytes"] < 1_000_000
    assert hashlib.sha256(raw).hexdigest() == entry["sha256"]
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key, tensor in state.items():
        expected = torch.int64 if key.endswith("num_batches_tracked") else torch.float32
        assert tensor.dtype == expected, key
    assert len(entry["train_history"]) == entry["recipe"]["epochs"]


def test_total_size_is_small():
    total = sum(p.stat().st_size for p in zoo.CHECKPOINT_DIR.iterdir())
    assert total < 5_000_000


def test_unknown_name_lists_available():
    for call in (zoo.load, zoo.info, zoo.build, zoo.loaders):
        with pytest.raises(ValueError, match="mlp-digits"):
            call("no-such-model")
        with pytest.raises(TypeError, match="name must be a string"):
            call(3)


def test_build_checks_types_before_training(monkeypatch):
    monkeypatch.setattr(zoo, "_build", lambda *a: pytest.fail("built before checking"))
    for kwargs, exc, word in (({"threads": 1.5}, TypeError, "threads"), ({"threads": 0}, ValueError, "threads"),
                              ({"progress": "no"}, TypeError, "progress"), ({"directory": 3}, TypeError, "directory")):
        with pytest.raises(exc, match=word):
            zoo.build("mlp-digits", **kwargs)


def test_cache_dir_from_the_environment(monkeypatch, tmp_path):
    assert zoo.cache_dir() == tmp_path / "cache" / "checkpoints"
    monkeypatch.delenv("PRUNEKIT_CACHE")
    assert zoo.cache_dir() == zoo.Path.home() / ".cache" / "prunekit" / "checkpoints"


def test_build_writes_to_the_cache_and_load_prefers_it(monkeypatch, empty_cache):
    """Without directory=, build writes into the cache, not the package; load/info then read the
    cache's checkpoint (here an untrained one: train is stubbed to keep the test fast)."""
    shipped = {p.name: p.read_bytes() for p in zoo.CHECKPOINT_DIR.iterdir()}
    monkeypatch.setattr(zoo, "train", lambda *a, **k: [])
    acc = zoo.build("mlp-digits", progress=False)
    assert (empty_cache / "mlp-digits.pt").is_file() and (empty_cache / "zoo.json").is_file()
    assert {p.name: p.read_bytes() for p in zoo.CHECKPOINT_DIR.iterdir()} == shipped   # package untouched
    entry = zoo.info("mlp-digits")
    assert entry["test_accuracy"] == acc < 0.5 and entry["train_history"] == []
    cached = torch.load(empty_cache / "mlp-digits.pt", weights_only=True)
    loaded = zoo.load("mlp-digits").state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in cached.items())
    shipped_state = torch.load(zoo.CHECKPOINT_DIR / "mlp-digits.pt", weights_only=True)
    assert not torch.equal(loaded["fc1.weight"], shipped_state["fc1.weight"])
    assert zoo.info("cnn-digits")["sha256"] == hashlib.sha256(
        (zoo.CHECKPOINT_DIR / "cnn-digits.pt").read_bytes()).hexdigest()          # not built: the shipped one
    assert zoo.available() == sorted(set(EXPECTED) | set(zoo.available()))


def test_info_returns_a_copy():
    entry = zoo.info("mlp-digits")
    entry["test_accuracy"] = -1.0
    entry["model_kwargs"]["hidden"].append(3)
    assert zoo.info("mlp-digits")["test_accuracy"] > 0.9
    assert zoo.info("mlp-digits")["model_kwargs"]["hidden"] == [128, 64]


def test_loaders_overrides():
    train_loader, _ = zoo.loaders("mlp-digits", batch_size=100)
    assert next(iter(train_loader))[0].shape[0] == 100


def test_cli_list_and_errors(capsys):
    assert zoo.main(["list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in EXPECTED)
    assert zoo.main(["info", "nope"]) == 2
    assert "available" in capsys.readouterr().err
    assert zoo.main(["info", "cnn-shapes"]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == "SmallCNN"


@pytest.mark.slow
def test_build_reproduces_the_smallest_checkpoint(tmp_path):
    name = "mlp-digits"
    acc = zoo.build(name, progress=False, directory=tmp_path)
    assert acc == pytest.approx(zoo.info(name)["test_accuracy"], abs=0.005)
    index = json.loads((tmp_path / "zoo.json").read_text())
    assert index[name]["test_accuracy"] == acc
    state = torch.load(tmp_path / f"{name}.pt", weights_only=True)
    assert state.keys() == zoo.load(name).state_dict().keys()
    # package files untouched
    assert zoo.info(name)["sha256"] == hashlib.sha256(
        (zoo.CHECKPOINT_DIR / f"{name}.pt").read_bytes()).hexdigest()


def test_retrain_rebuilds_the_checkpoint_and_checks_arguments():
    torch.set_num_threads(1)
    model = zoo.retrain("cnn-digits", 0)
    shipped = zoo.load("cnn-digits")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), shipped.state_dict().values()))
    with pytest.raises(ValueError, match="seed"):
        zoo.retrain("cnn-digits", -1)
    with pytest.raises(ValueError, match="name"):
        zoo.retrain("nope", 0)
