"""The registry: versions, aliases, history, rollback, promote_if_better, artifacts, schema."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import pytest
from serving_helpers import FEATURES, register

from autotune.errors import ValidationError
from serving.errors import (
    AliasConflictError,
    ArtifactIntegrityError,
    ModelLoadError,
    ModelNotFoundError,
    UnsafeArtifactError,
)
from serving.registry import ModelRegistry


def test_versions_count_up_per_name_and_keep_lineage(registry, models):
    v1 = register(registry, models, "bc")
    v2 = register(registry, models, "bc", which="large")
    other = register(registry, models, "other")
    assert (v1.version, v2.version, other.version) == (1, 2, 1)
    got = registry.get_version("bc", 2)
    assert got.lineage.study == "bc" and got.lineage.trial == 3
    assert got.lineage.code_version  # git sha of this checkout
    assert got.signature.names == FEATURES
    assert got.metrics == {"auc": 0.97}
    assert got.artifact.sha256 == hashlib.sha256(models.large).hexdigest()
    assert [m.name for m in registry.list_models()] == ["bc", "other"]
    assert registry.list_models()[0].versions == [1, 2]


def test_alias_moves_are_recorded_and_rollback_undoes_the_last(registry, models):
    for which in ("small", "large", "small"):
        register(registry, models, "bc", which=which)
    registry.promote("bc", 1, actor="alice", reason="first")
    registry.promote("bc", 2, actor="bob")
    registry.promote("bc", 3, "staging")
    assert registry.resolve("bc") == (2, "production")
    assert registry.resolve("bc", "staging") == (3, "staging")
    ev = registry.rollback("bc", actor="carol")
    assert (ev.from_version, ev.to_version, ev.actor) == (2, 1, "carol")
    assert registry.resolve("bc", "production") == (1, "production")
    hist = registry.history("bc", "production")
    assert [(e.from_version, e.to_version) for e in hist] == [(2, 1), (1, 2), (None, 1)]
    assert hist[-1].actor == "alice" and hist[-1].reason == "first"
    assert len(registry.history("bc")) == 4  # staging too
    registry.rollback("bc")  # undoes the rollback
    assert registry.resolve("bc") == (2, "production")
    detail = registry.get_model("bc")
    assert detail.aliases == {"production": 2, "staging": 3}
    assert {v.version: v.aliases for v in detail.model_versions}[2] == ["production"]


def test_alias_edge_cases(registry, models):
    register(registry, models, "bc")
    assert registry.resolve("bc") == (1, None)  # no production yet: the latest version
    with pytest.raises(ModelNotFoundError):
        registry.resolve("bc", "staging")
    with pytest.raises(ModelNotFoundError):
        registry.promote("bc", 9)
    with pytest.raises(ModelNotFoundError):
        registry.rollback("bc")  # never moved
    registry.promote("bc", 1)
    with pytest.raises(ValidationError):
        registry.rollback("bc")  # nothing before v1
    with pytest.raises(AliasConflictError):
        registry.promote("bc", 1, expected_version=None)
    registry.promote("bc", 1, expected_version=1)
    with pytest.raises(ValidationError):
        registry.promote("bc", 1, "123")  # digits are version numbers
    with pytest.raises(ValidationError):
        register(registry, models, "../bad")
    registry.remove_alias("bc", "production")
    assert registry.resolve("bc") == (1, None)


def test_promote_if_better_compares_and_stores_the_decision(registry, models):
    register(registry, models, "bc", metrics={"log_loss": 0.30})
    register(registry, models, "bc", metrics={"log_loss": 0.35})
    register(registry, models, "bc", metrics={"log_loss": 0.20})
    first = registry.promote_if_better("bc", 1, metric="log_loss", direction="minimize")
    assert first.promoted and first.comparison.incumbent_version is None
    worse = registry.promote_if_better("bc", 2, metric="log_loss", direction="minimize")
    assert not worse.promoted and worse.event is None
    assert worse.comparison.incumbent_value == pytest.approx(0.30)
    better = registry.promote_if_better("bc", 3, metric="log_loss", direction="minimize")
    assert better.promoted and better.event.from_version == 1 and better.event.to_version == 3
    assert "0.2 < 0.3" in better.comparison.reason
    stored = registry.get_model("bc").comparisons
    assert [c.promoted for c in stored] == [True, False, True]
    with pytest.raises(ValidationError, match="no metric 'auc'"):
        registry.promote_if_better("bc", 3, metric="auc", direction="maximize")


def test_pickles_are_refused_under_any_name(registry, models, tmp_path):
    data = pickle.dumps({"not": "a model"})
    for fmt in ("xgboost-ubj", "sklearn-skops", "pickle"):
        with pytest.raises(UnsafeArtifactError, match="pickle"):
            registry.register("bc", artifact=data, format=fmt, signature=FEATURES)
    path = tmp_path / "model.pkl"
    path.write_bytes(data)
    with pytest.raises(UnsafeArtifactError, match="pickle"):
        registry.register("bc", artifact=path, signature=FEATURES)
    with pytest.raises(UnsafeArtifactError, match="torch.save zip"):
        registry.register("bc", artifact=data, format="torch-state-dict", signature=FEATURES)
    assert registry.list_models() == []


def test_register_by_path_and_checks_the_model(registry, models, tmp_path):
    path = tmp_path / "model.ubj"
    path.write_bytes(models.small)
    assert register_path(registry, path).artifact.format == "xgboost-ubj"
    with pytest.raises(ModelLoadError, match="features"):  # signature does not fit the booster
        registry.register("bc", artifact=path, signature=FEATURES[:5])


def register_path(registry: ModelRegistry, path: Path):
    return registry.register("bc", artifact=path, signature=FEATURES)


def test_artifacts_are_verified_on_every_load(registry, models):
    v = register(registry, models, "bc")
    p = registry.store.path_of(v.artifact.sha256)
    assert registry.store.get(v.artifact) == models.small
    p.write_bytes(models.small.replace(b"learner", b"LEARNER", 1))
    with pytest.raises(ArtifactIntegrityError, match="corrupt"):
        registry.store.get(v.artifact)
    p.unlink()
    with pytest.raises(ArtifactIntegrityError, match="missing"):
        registry.store.get(v.artifact)


def test_skops_artifacts_load_only_trusted_types(registry, models):
    sio = pytest.importorskip("skops.io")
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    from serving.loaders import LoaderOptions, load_predictor

    lr = LogisticRegression(max_iter=50).fit(models.x[:, :3], models.y)
    ex = [{"a": 1.0, "b": 2.0, "c": 3.0}]
    v = registry.register(
        "lr", artifact=sio.dumps(lr), format="sklearn-skops", signature=["a", "b", "c"],
        input_example=ex,
    )  # fmt: skip
    assert v.version == 1
    tree = DecisionTreeClassifier(max_depth=2).fit(models.x[:, :3], models.y)
    data = sio.dumps(tree)  # needs sklearn.tree._tree.Tree, which the default list trusts
    registry.register("tree", artifact=data, format="sklearn-skops", signature=["a", "b", "c"])
    strict = LoaderOptions(skops_trusted_types=())
    with pytest.raises(UnsafeArtifactError, match="sklearn.tree._tree.Tree"):
        load_predictor(data, registry.get_version("tree", 1), strict)


def test_torch_state_dicts_load_with_weights_only(registry, tmp_path):
    torch = pytest.importorskip("torch")
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    path = tmp_path / "model.pt"
    torch.save(net.state_dict(), path)
    v = registry.register(
        "mlp", artifact=path, signature=["a", "b", "c"], output_schema={"task": "regression"},
        input_example=[{"a": 1.0, "b": 2.0, "c": 3.0}],
    )  # fmt: skip
    assert v.artifact.format == "torch-state-dict"
    torch.save(net, tmp_path / "whole.pt")  # a pickled module, not a state_dict
    with pytest.raises((UnsafeArtifactError, ModelLoadError)):
        registry.register("mlp", artifact=tmp_path / "whole.pt", signature=["a", "b", "c"])


def test_migration_matches_the_registry_tables(sqlite_url, store):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from serving.registry import metadata

    reg = ModelRegistry(sqlite_url, store=store)  # migrates to head
    try:
        mine = set(metadata.tables)
        opts = {
            "compare_type": True,
            "include_name": lambda name, type_, _parent: type_ != "table" or name in mine,
        }
        with reg.db.read_engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts=opts), metadata)
        assert diff == [], diff
    finally:
        reg.close()


def test_the_torch_trainers_payload_predicts_like_the_trainers_own_loader(registry):
    torch = pytest.importorskip("torch")
    import io

    import numpy as np

    torch_mlp = pytest.importorskip("trainers.torch_mlp")
    cfg = {"hidden_units": 8, "n_layers": 2, "dropout": 0.1, "activation": "tanh"}
    for task, n_out in (("classification", 2), ("classification", 3), ("regression", 1)):
        net = torch_mlp._build(torch, 4, n_out, cfg)
        buf = io.BytesIO()
        torch.save(
            {
                "state_dict": net.state_dict(),
                "config": {"n_in": 4, "n_out": n_out, "task": task, **cfg},
                "x_mean": torch.tensor([1.0, 2.0, 3.0, 4.0]),
                "x_std": torch.tensor([2.0, 2.0, 1.0, 0.5]),
                "y_mean": 10.0,
                "y_std": 3.0,
            },
            buf,
        )
        name = f"mlp-{task}-{n_out}"
        example = [{"a": 1.0, "b": 0.5, "c": -2.0, "d": 3.0}]
        v = registry.register(
            name, artifact=buf.getvalue(), format="torch-state-dict",
            signature=["a", "b", "c", "d"], input_example=example,
        )  # fmt: skip
        from serving.loaders import LoaderOptions, load_predictor

        got = load_predictor(registry.store.get(v.artifact), v, LoaderOptions()).predict(
            np.array([[1.0, 0.5, -2.0, 3.0]], dtype=np.float32)
        )
        ref_net, payload = torch_mlp.load_mlp(buf.getvalue())
        with torch.no_grad():
            x = (torch.tensor([[1.0, 0.5, -2.0, 3.0]]) - payload["x_mean"]) / payload["x_std"]
            out = ref_net(x)
        if task == "classification":
            want = torch.softmax(out, dim=1).numpy()
            want = want[:, 1] if n_out == 2 else want
        else:
            want = out.squeeze(1).numpy() * 3.0 + 10.0
        np.testing.assert_allclose(got, want, rtol=1e-5)
