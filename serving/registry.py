"""The model registry: tables, flat data-access functions, and the :class:`ModelRegistry` service.

Versions (1, 2, 3... per model name) are immutable. Aliases are the only thing that moves; every
move is one transaction that updates ``model_aliases`` and appends to ``model_alias_events`` (who,
when, from, to, why), so the history is complete and a rollback is one more move. The tables live
in the studies' database; their schema comes from the one Alembic chain
(``autotune/storage/migrations/versions/0002_registry.py``), ``create_all`` only for tests.
"""

from __future__ import annotations

import getpass
import math
import os
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from autotune.errors import ValidationError
from autotune.projects import (
    DEFAULT_PROJECT,
    PROJECT_PATTERN,
    current_project,
    qualify,
    split_qualified,
)
from autotune.storage.engine import Database
from autotune.storage.schema import PROJECT_LENGTH, BigIntPK, JSONType, UTCDateTime
from serving.artifacts import ArtifactStore, format_from_path
from serving.errors import AliasConflictError, ModelNotFoundError
from serving.schemas import (
    ALIAS_PATTERN,
    MODEL_NAME_PATTERN,
    AliasEvent,
    ArtifactRef,
    Comparison,
    Lineage,
    ModelDetail,
    ModelSummary,
    ModelVersion,
    OutputSchema,
    PromotionResult,
    Signature,
)

__all__ = [
    "metadata",
    "model_names",
    "model_versions",
    "model_aliases",
    "model_alias_events",
    "model_comparisons",
    "ModelRegistry",
    "DEFAULT_ALIAS",
    "MAX_INPUT_EXAMPLE_ROWS",
    "parse_ref",
]

DEFAULT_ALIAS = "production"
MAX_INPUT_EXAMPLE_ROWS = 16
metadata = MetaData()

model_names = Table(
    "model_names",
    metadata,
    Column("id", BigIntPK, primary_key=True, autoincrement=True),
    # The tenant (autotune.projects); names are unique within a project.
    Column("project", String(PROJECT_LENGTH), nullable=False, server_default=DEFAULT_PROJECT),
    Column("name", String(128), nullable=False),
    Column("description", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("project", "name", name="uq_model_names_project_name"),
)
model_versions = Table(
    "model_versions",
    metadata,
    Column("id", BigIntPK, primary_key=True, autoincrement=True),
    Column("model_id", BigIntPK, ForeignKey("model_names.id", ondelete="CASCADE"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("artifact_sha256", String(64), nullable=False),
    Column("artifact_format", String(32), nullable=False),
    Column("artifact_size", BigIntPK, nullable=False),
    Column("signature", JSONType, nullable=False),
    Column("output_schema", JSONType, nullable=False),
    Column("params", JSONType, nullable=False),
    Column("metrics", JSONType, nullable=False),
    Column("lineage", JSONType, nullable=False),
    Column("input_example", JSONType, nullable=False),
    Column("description", Text, nullable=True),
    Column("created_by", String(256), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("model_id", "version", name="uq_model_versions_model_version"),
)
model_aliases = Table(
    "model_aliases",
    metadata,
    Column(
        "model_id", BigIntPK, ForeignKey("model_names.id", ondelete="CASCADE"), primary_key=True
    ),
    Column("alias", String(64), primary_key=True),
    Column("version", Integer, nullable=False),
    Column("updated_by", String(256), nullable=True),
    Column("updated_at", UTCDateTime, nullable=False),
)
model_alias_events = Table(
    "model_alias_events",
    metadata,
    Column("id", BigIntPK, primary_key=True, autoincrement=True),
    Column("model_id", BigIntPK, ForeignKey("model_names.id", ondelete="CASCADE"), nullable=False),
    Column("alias", String(64), nullable=False),
    Column("from_version", Integer, nullable=True),
    Column("to_version", Integer, nullable=True),
    Column("actor", String(256), nullable=True),
    Column("reason", Text, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_model_alias_events_model_alias", "model_id", "alias", "id"),
)
model_comparisons = Table(
    "model_comparisons",
    metadata,
    Column("id", BigIntPK, primary_key=True, autoincrement=True),
    Column("model_id", BigIntPK, ForeignKey("model_names.id", ondelete="CASCADE"), nullable=False),
    Column("alias", String(64), nullable=False),
    Column("candidate_version", Integer, nullable=False),
    Column("incumbent_version", Integer, nullable=True),
    Column("metric", String(128), nullable=False),
    Column("direction", String(8), nullable=False),
    Column("candidate_value", Float, nullable=False),
    Column("incumbent_value", Float, nullable=True),
    Column("promoted", Boolean, nullable=False),
    Column("reason", Text, nullable=False),
    Column("actor", String(256), nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
    Index("ix_model_comparisons_model", "model_id", "id"),
)


# ---------------------------------------------------------------- data access (flat, keyword-only)


def get_model_row(session: Session, *, name: str, for_update: bool = False) -> Any:
    """The model's row; ``name`` may be qualified with its project (``project~name``)."""
    project, bare = split_qualified(name)
    q = select(model_names).where(model_names.c.project == project, model_names.c.name == bare)
    if for_update:
        q = q.with_for_update()
    return session.execute(q).first()


def insert_model(session: Session, *, name: str, description: str | None, now: datetime) -> int:
    project, bare = split_qualified(name)
    res = session.execute(
        insert(model_names).values(
            project=project, name=bare, description=description, created_at=now
        )
    )
    return int(res.inserted_primary_key[0])


def max_version(session: Session, *, model_id: int) -> int:
    q = select(func.max(model_versions.c.version)).where(model_versions.c.model_id == model_id)
    return int(session.execute(q).scalar() or 0)


def insert_version(session: Session, *, model_id: int, values: Mapping[str, Any]) -> None:
    session.execute(insert(model_versions).values(model_id=model_id, **values))


def get_version_row(session: Session, *, model_id: int, version: int) -> Any:
    q = select(model_versions).where(
        model_versions.c.model_id == model_id, model_versions.c.version == version
    )
    return session.execute(q).first()


def list_version_rows(session: Session, *, model_id: int) -> list[Any]:
    q = (
        select(model_versions)
        .where(model_versions.c.model_id == model_id)
        .order_by(model_versions.c.version.desc())
    )
    return list(session.execute(q))


def get_alias_version(
    session: Session, *, model_id: int, alias: str, for_update: bool = False
) -> int | None:
    q = select(model_aliases.c.version).where(
        model_aliases.c.model_id == model_id, model_aliases.c.alias == alias
    )
    if for_update:
        q = q.with_for_update()
    v = session.execute(q).scalar()
    return None if v is None else int(v)


def aliases_of(session: Session, *, model_id: int) -> dict[str, int]:
    q = select(model_aliases.c.alias, model_aliases.c.version).where(
        model_aliases.c.model_id == model_id
    )
    return {a: int(v) for a, v in session.execute(q)}


def write_alias(
    session: Session,
    *,
    model_id: int,
    alias: str,
    version: int | None,
    existed: bool,
    actor: str | None,
    now: datetime,
) -> None:
    """Point ``alias`` at ``version`` (``None`` removes it)."""
    where = (model_aliases.c.model_id == model_id, model_aliases.c.alias == alias)
    if version is None:
        session.execute(delete(model_aliases).where(*where))
    elif existed:
        session.execute(
            update(model_aliases)
            .where(*where)
            .values(version=version, updated_by=actor, updated_at=now)
        )
    else:
        session.execute(
            insert(model_aliases).values(
                model_id=model_id, alias=alias, version=version, updated_by=actor, updated_at=now
            )
        )


def insert_alias_event(session: Session, *, model_id: int, values: Mapping[str, Any]) -> int:
    res = session.execute(insert(model_alias_events).values(model_id=model_id, **values))
    return int(res.inserted_primary_key[0])


def list_alias_event_rows(
    session: Session, *, model_id: int, alias: str | None = None, limit: int = 100
) -> list[Any]:
    q = select(model_alias_events).where(model_alias_events.c.model_id == model_id)
    if alias is not None:
        q = q.where(model_alias_events.c.alias == alias)
    return list(session.execute(q.order_by(model_alias_events.c.id.desc()).limit(limit)))


def insert_comparison(session: Session, *, model_id: int, values: Mapping[str, Any]) -> int:
    res = session.execute(insert(model_comparisons).values(model_id=model_id, **values))
    return int(res.inserted_primary_key[0])


def list_comparison_rows(session: Session, *, model_id: int, limit: int = 100) -> list[Any]:
    q = (
        select(model_comparisons)
        .where(model_comparisons.c.model_id == model_id)
        .order_by(model_comparisons.c.id.desc())
        .limit(limit)
    )
    return list(session.execute(q))


def alias_table(session: Session) -> dict[tuple[str, str], int]:
    """Every (model name, alias) -> version of every project, names qualified (see
    :mod:`autotune.projects`): the server polls this (it is small)."""
    q = select(
        model_names.c.project, model_names.c.name, model_aliases.c.alias, model_aliases.c.version
    ).join(model_names, model_names.c.id == model_aliases.c.model_id)
    return {(qualify(p, n), a): int(v) for p, n, a, v in session.execute(q)}


def latest_versions(session: Session) -> dict[str, int]:
    q = (
        select(model_names.c.project, model_names.c.name, func.max(model_versions.c.version))
        .join(model_names, model_names.c.id == model_versions.c.model_id)
        .group_by(model_names.c.project, model_names.c.name)
    )
    return {qualify(p, n): int(v) for p, n, v in session.execute(q)}


# ---------------------------------------------------------------------------------- the service


def parse_ref(ref: int | str) -> int | str:
    """A version number (``3``, ``"3"``, ``"v3"``) or an alias name."""
    if isinstance(ref, int):
        return ref
    s = ref[1:] if ref[:1] in ("v", "V") and ref[1:].isdigit() else ref
    return int(s) if s.isdigit() else ref


def _valid_name(name: Any) -> bool:
    """A model name, or one qualified with a valid project."""
    if not isinstance(name, str):
        return False
    project, bare = split_qualified(name)
    return bool(MODEL_NAME_PATTERN.match(bare) and PROJECT_PATTERN.match(project))


def _check_name(name: str) -> None:
    if not _valid_name(name):
        raise ValidationError(
            f"model name {name!r} is not allowed: use 1-128 letters, digits, '_', '.' or '-', "
            "not starting with '.' or '-'",
            field="name",
        )


def _check_alias(alias: str) -> None:
    if not isinstance(alias, str) or not ALIAS_PATTERN.match(alias):
        raise ValidationError(
            f"alias {alias!r} is not allowed: use 1-64 letters, digits, '_', '.' or '-', and not "
            "only digits (those are version numbers)",
            field="alias",
        )


def _default_actor() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user database entry (containers)
        return os.environ.get("USER") or "unknown"


def _bare(name: str) -> str:
    """The name users see: without the project (a request only ever sees its own project)."""
    return split_qualified(name)[1]


def _version_from_row(name: str, row: Any, aliases: Sequence[str] = ()) -> ModelVersion:
    return ModelVersion(
        name=_bare(name),
        version=row.version,
        artifact=ArtifactRef(
            sha256=row.artifact_sha256, format=row.artifact_format, size=row.artifact_size
        ),
        signature=Signature.model_validate(row.signature),
        output_schema=OutputSchema.model_validate(row.output_schema),
        params=row.params,
        metrics=row.metrics,
        lineage=Lineage.model_validate(row.lineage),
        input_example=row.input_example,
        description=row.description,
        created_by=row.created_by,
        created_at=row.created_at,
        aliases=sorted(aliases),
    )


def _event_from_row(name: str, row: Any) -> AliasEvent:
    return AliasEvent(
        id=row.id,
        name=_bare(name),
        alias=row.alias,
        from_version=row.from_version,
        to_version=row.to_version,
        actor=row.actor,
        reason=row.reason,
        created_at=row.created_at,
    )


def _comparison_from_row(name: str, row: Any) -> Comparison:
    return Comparison(
        id=row.id,
        name=_bare(name),
        alias=row.alias,
        candidate_version=row.candidate_version,
        incumbent_version=row.incumbent_version,
        metric=row.metric,
        direction=row.direction,
        candidate_value=row.candidate_value,
        incumbent_value=row.incumbent_value,
        promoted=row.promoted,
        reason=row.reason,
        actor=row.actor,
        created_at=row.created_at,
    )


class ModelRegistry:
    """Register model versions and move their aliases. Thread-safe; stateless between calls.

    Args:
        db: a :class:`autotune.storage.Database`, or a URL to open one (the studies' database;
            ``None``: ``AUTOTUNE_DB`` or the default SQLite file).
        store: where artifacts live (default: ``AUTOTUNE_MODEL_STORE`` or
            ``./autotune-artifacts/.registry``).
        migrate: bring the schema to the head of the Alembic chain on start.
        clock: the current UTC time (tests may pin it).
    """

    def __init__(
        self,
        db: Database | str | None = None,
        *,
        store: ArtifactStore | str | os.PathLike[str] | None = None,
        migrate: bool = True,
        clock: Any = None,
    ) -> None:
        self._owns_db = not isinstance(db, Database)
        self.db = db if isinstance(db, Database) else Database(db)
        self.store = store if isinstance(store, ArtifactStore) else ArtifactStore(store)
        self._clock = clock or (lambda: datetime.now(UTC))
        if migrate:
            from autotune.storage.migrate import upgrade

            upgrade(self.db)

    def close(self) -> None:
        if self._owns_db:
            self.db.dispose()

    # ------------------------------------------------------------------------------ register

    def register(
        self,
        name: str,
        *,
        artifact: bytes | str | os.PathLike[str],
        signature: Signature | Sequence[str] | Mapping[str, Any],
        format: str | None = None,
        output_schema: OutputSchema | Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        metrics: Mapping[str, float] | None = None,
        lineage: Lineage | Mapping[str, Any] | None = None,
        input_example: Sequence[Mapping[str, Any]] | None = None,
        description: str | None = None,
        actor: str | None = None,
        check: bool = True,
    ) -> ModelVersion:
        """Store the artifact and create the next version of ``name`` (the model is created on
        its first version).

        Args:
            name: model name.
            artifact: the artifact bytes, or a path (its suffix gives the format).
            signature: the input features, in the model's column order (a :class:`Signature`,
                its JSON, or a list of float feature names).
            format: one of :data:`serving.artifacts.FORMATS`; required for bytes.
            output_schema: what the model returns.
            params, metrics: the trial's parameters and the model's (test) metrics.
            lineage: study, trial, dataset or feature set and version, code version.
            input_example: a few rows; the server checks a model on them before serving it.
            description: free text.
            actor: who registers (default: the OS user).
            check: load the model and predict on ``input_example`` before registering.

        Raises:
            UnsafeArtifactError: a pickle or an unknown format.
            ModelLoadError: ``check`` and the model does not load or predict.
        """
        _check_name(name)
        if isinstance(signature, Signature):
            sig = signature
        elif isinstance(signature, Mapping):
            sig = Signature.model_validate(signature)
        else:
            sig = Signature.from_names(list(signature))
        out = (
            output_schema
            if isinstance(output_schema, OutputSchema)
            else OutputSchema.model_validate(output_schema or {})
        )
        lin = lineage if isinstance(lineage, Lineage) else Lineage.model_validate(lineage or {})
        if lin.code_version is None:
            lin = lin.model_copy(update={"code_version": _git_sha()})
        mets = {str(k): float(v) for k, v in (metrics or {}).items()}
        bad = [k for k, v in mets.items() if not math.isfinite(v)]
        if bad:
            raise ValidationError(f"metric(s) {bad} are not finite numbers", field="metrics")
        example = [dict(r) for r in (input_example or [])][:MAX_INPUT_EXAMPLE_ROWS]
        if example:
            sig.to_matrix(example, field="input_example")
        if isinstance(artifact, bytes | bytearray):
            if format is None:
                raise ValidationError("format= is required with artifact bytes", field="format")
            ref = self.store.put(bytes(artifact), format=format)
        else:
            ref = self.store.put(
                Path(artifact).read_bytes(), format=format or format_from_path(artifact)
            )
        actor = actor or _default_actor()
        now = self._clock()
        draft = ModelVersion(
            name=_bare(name),
            version=0,
            artifact=ref,
            signature=sig,
            output_schema=out,
            params=dict(params or {}),
            metrics=mets,
            lineage=lin,
            input_example=example,
            description=description,
            created_by=actor,
            created_at=now,
        )
        if check:
            from serving.loaders import LoaderOptions, load_predictor

            predictor = load_predictor(self.store.get(ref), draft, LoaderOptions())
            if example:
                check_prediction(predictor, draft)
        values = {
            "artifact_sha256": ref.sha256,
            "artifact_format": ref.format,
            "artifact_size": ref.size,
            "signature": sig.model_dump(mode="json"),
            "output_schema": out.model_dump(mode="json"),
            "params": _jsonable(draft.params),
            "metrics": mets,
            "lineage": lin.model_dump(mode="json"),
            "input_example": example,
            "description": description,
            "created_by": actor,
            "created_at": now,
        }

        def tx(session: Session, attempt: int) -> int:
            row = get_model_row(session, name=name, for_update=True)
            if row is None:
                try:
                    with session.begin_nested():
                        model_id = insert_model(session, name=name, description=None, now=now)
                except IntegrityError:  # created concurrently: lock the winner's row
                    row = get_model_row(session, name=name, for_update=True)
                    model_id = row.id
            else:
                model_id = row.id
            version = max_version(session, model_id=model_id) + 1
            insert_version(session, model_id=model_id, values={**values, "version": version})
            return version

        version = self.db.run(tx, write=True)
        return draft.model_copy(update={"version": version})

    # --------------------------------------------------------------------------------- reads

    def _model(self, session: Session, name: str, *, for_update: bool = False) -> Any:
        # A name no model can have is simply not found, and odd bytes never reach the database.
        valid = _valid_name(name)
        row = get_model_row(session, name=name, for_update=for_update) if valid else None
        if row is None:
            raise ModelNotFoundError(
                f"model {name!r} not found; register a version first",
                details={"model": name},
            )
        return row

    def _resolve(
        self, session: Session, model: Any, ref: int | str | None
    ) -> tuple[int, str | None]:
        ref = parse_ref(ref) if ref is not None else None
        if isinstance(ref, int):
            return ref, None
        alias = ref or DEFAULT_ALIAS
        valid = ALIAS_PATTERN.match(alias)
        v = get_alias_version(session, model_id=model.id, alias=alias) if valid else None
        if v is not None:
            return v, alias
        if ref is None:  # no "production" yet: the latest version
            latest = max_version(session, model_id=model.id)
            if latest:
                return latest, None
        raise ModelNotFoundError(
            f"model {model.name!r} has no alias {alias!r}; set it with promote, or name a version",
            details={"model": model.name, "alias": alias},
        )

    def resolve(self, name: str, ref: int | str | None = None) -> tuple[int, str | None]:
        """(version, alias) that ``ref`` names: a version, an alias, or ``None`` for the
        ``production`` alias (the latest version while there is none)."""

        def tx(session: Session, attempt: int) -> tuple[int, str | None]:
            return self._resolve(session, self._model(session, name), ref)

        return self.db.run(tx, write=False)

    def get_version(self, name: str, ref: int | str | None = None) -> ModelVersion:
        """One version, by number or alias (see :meth:`resolve`)."""

        def tx(session: Session, attempt: int) -> ModelVersion:
            model = self._model(session, name)
            version, _ = self._resolve(session, model, ref)
            row = get_version_row(session, model_id=model.id, version=version)
            if row is None:
                raise ModelNotFoundError(
                    f"model {name!r} has no version {version}",
                    details={"model": name, "version": version},
                )
            aliases = [a for a, v in aliases_of(session, model_id=model.id).items() if v == version]
            return _version_from_row(name, row, aliases)

        return self.db.run(tx, write=False)

    def list_models(self, *, project: str | None = None) -> list[ModelSummary]:
        """Every model of a project with its version numbers and aliases, by name.

        Args:
            project: the project (``None``: the request's, :data:`current_project`).
        """
        proj = project if project is not None else current_project.get()

        def tx(session: Session, attempt: int) -> list[ModelSummary]:
            models = list(
                session.execute(
                    select(model_names)
                    .where(model_names.c.project == proj)
                    .order_by(model_names.c.name)
                )
            )
            mine = select(model_names.c.id).where(model_names.c.project == proj)
            versions: dict[int, list[int]] = {}
            for mid, v in session.execute(
                select(model_versions.c.model_id, model_versions.c.version)
                .where(model_versions.c.model_id.in_(mine))
                .order_by(model_versions.c.version)
            ):
                versions.setdefault(mid, []).append(int(v))
            aliases: dict[int, dict[str, int]] = {}
            for mid, a, v in session.execute(
                select(
                    model_aliases.c.model_id, model_aliases.c.alias, model_aliases.c.version
                ).where(model_aliases.c.model_id.in_(mine))
            ):
                aliases.setdefault(mid, {})[a] = int(v)
            return [
                ModelSummary(
                    name=m.name,
                    description=m.description,
                    versions=versions.get(m.id, []),
                    aliases=dict(sorted(aliases.get(m.id, {}).items())),
                    latest_version=max(versions[m.id]) if versions.get(m.id) else None,
                    created_at=m.created_at,
                )
                for m in models
            ]

        return self.db.run(tx, write=False)

    def get_model(self, name: str, *, history_limit: int = 100) -> ModelDetail:
        """A model with every version, its alias history and promotion decisions."""

        def tx(session: Session, attempt: int) -> ModelDetail:
            m = self._model(session, name)
            aliases = aliases_of(session, model_id=m.id)
            by_version: dict[int, list[str]] = {}
            for a, v in aliases.items():
                by_version.setdefault(v, []).append(a)
            rows = list_version_rows(session, model_id=m.id)
            return ModelDetail(
                name=m.name,
                description=m.description,
                versions=sorted(r.version for r in rows),
                aliases=dict(sorted(aliases.items())),
                latest_version=rows[0].version if rows else None,
                created_at=m.created_at,
                model_versions=[
                    _version_from_row(name, r, by_version.get(r.version, [])) for r in rows
                ],
                history=[
                    _event_from_row(name, r)
                    for r in list_alias_event_rows(session, model_id=m.id, limit=history_limit)
                ],
                comparisons=[
                    _comparison_from_row(name, r)
                    for r in list_comparison_rows(session, model_id=m.id, limit=history_limit)
                ],
            )

        return self.db.run(tx, write=False)

    def history(self, name: str, alias: str | None = None, *, limit: int = 100) -> list[AliasEvent]:
        """Alias moves of ``name`` (one alias or all), newest first."""

        def tx(session: Session, attempt: int) -> list[AliasEvent]:
            m = self._model(session, name)
            if alias is not None and not ALIAS_PATTERN.match(alias):
                return []
            rows = list_alias_event_rows(session, model_id=m.id, alias=alias, limit=limit)
            return [_event_from_row(name, r) for r in rows]

        return self.db.run(tx, write=False)

    def alias_table(self) -> dict[tuple[str, str], int]:
        """(model, alias) -> version for every alias."""
        return self.db.run(lambda session, attempt: alias_table(session), write=False)

    def serving_snapshot(self) -> tuple[dict[tuple[str, str], int], dict[str, int]]:
        """What the server polls, in one read: every alias, and each model's latest version."""

        def tx(session: Session, attempt: int) -> tuple[dict[tuple[str, str], int], dict[str, int]]:
            return alias_table(session), latest_versions(session)

        return self.db.run(tx, write=False)

    # ----------------------------------------------------------------------------- alias moves

    def _move(
        self,
        session: Session,
        model: Any,
        alias: str,
        to_version: int | None,
        *,
        actor: str | None,
        reason: str | None,
        expected_version: int | None | Literal["any"] = "any",
    ) -> AliasEvent:
        current = get_alias_version(session, model_id=model.id, alias=alias, for_update=True)
        if expected_version != "any" and current != expected_version:
            raise AliasConflictError(
                f"alias {alias!r} of {model.name!r} is on version {current}, not "
                f"{expected_version}; read it again and retry",
                details={"alias": alias, "current": current, "expected": expected_version},
            )
        if (
            to_version is not None
            and get_version_row(session, model_id=model.id, version=to_version) is None
        ):
            raise ModelNotFoundError(
                f"model {model.name!r} has no version {to_version}",
                details={"model": model.name, "version": to_version},
            )
        now = self._clock()
        actor = actor or _default_actor()
        write_alias(
            session,
            model_id=model.id,
            alias=alias,
            version=to_version,
            existed=current is not None,
            actor=actor,
            now=now,
        )
        values = {
            "alias": alias,
            "from_version": current,
            "to_version": to_version,
            "actor": actor,
            "reason": reason,
            "created_at": now,
        }
        event_id = insert_alias_event(session, model_id=model.id, values=values)
        return AliasEvent(id=event_id, name=model.name, **values)

    def promote(
        self,
        name: str,
        version: int,
        alias: str = DEFAULT_ALIAS,
        *,
        actor: str | None = None,
        reason: str | None = None,
        expected_version: int | None | Literal["any"] = "any",
    ) -> AliasEvent:
        """Point ``alias`` at ``version`` atomically and record the move.

        Args:
            expected_version: refuse (:class:`AliasConflictError`) unless the alias is on this
                version now (``None``: unset); ``"any"`` moves it regardless.
        """
        _check_alias(alias)
        version = int(parse_ref(version))  # type: ignore[arg-type]

        def tx(session: Session, attempt: int) -> AliasEvent:
            model = self._model(session, name, for_update=True)
            return self._move(
                session,
                model,
                alias,
                version,
                actor=actor,
                reason=reason or "promote",
                expected_version=expected_version,
            )

        return self.db.run(tx, write=True)

    def remove_alias(self, name: str, alias: str, *, actor: str | None = None) -> AliasEvent:
        """Take ``alias`` off its version (recorded like any move)."""
        _check_alias(alias)

        def tx(session: Session, attempt: int) -> AliasEvent:
            model = self._model(session, name, for_update=True)
            if get_alias_version(session, model_id=model.id, alias=alias) is None:
                raise ModelNotFoundError(
                    f"model {name!r} has no alias {alias!r}", details={"alias": alias}
                )
            return self._move(session, model, alias, None, actor=actor, reason="remove")

        return self.db.run(tx, write=True)

    def rollback(
        self, name: str, alias: str = DEFAULT_ALIAS, *, actor: str | None = None
    ) -> AliasEvent:
        """Undo the last move of ``alias``: it goes back to the version it held before (a
        second rollback undoes the first). Recorded as a move with reason ``rollback``."""
        _check_alias(alias)

        def tx(session: Session, attempt: int) -> AliasEvent:
            model = self._model(session, name, for_update=True)
            last = list_alias_event_rows(session, model_id=model.id, alias=alias, limit=1)
            if not last:
                raise ModelNotFoundError(
                    f"alias {alias!r} of {name!r} has never moved: nothing to roll back",
                    details={"alias": alias},
                )
            ev = last[0]
            if ev.from_version is None:
                raise ValidationError(
                    f"alias {alias!r} of {name!r} had no version before v{ev.to_version}: "
                    "nothing to roll back to (remove the alias instead)",
                    field="alias",
                )
            return self._move(
                session,
                model,
                alias,
                ev.from_version,
                actor=actor,
                reason=f"rollback of event {ev.id}",
                expected_version=ev.to_version,
            )

        return self.db.run(tx, write=True)

    def promote_if_better(
        self,
        name: str,
        version: int,
        alias: str = DEFAULT_ALIAS,
        *,
        metric: str,
        direction: Literal["minimize", "maximize"],
        actor: str | None = None,
    ) -> PromotionResult:
        """Promote ``version`` to ``alias`` only if it beats the alias's current holder on
        ``metric`` (a test metric recorded at registration); the comparison is stored either way.

        A missing holder, or a holder without the metric, loses. Ties keep the holder.
        """
        _check_alias(alias)
        if direction not in ("minimize", "maximize"):
            raise ValidationError(
                f"direction must be 'minimize' or 'maximize', not {direction!r}",
                field="direction",
            )

        def tx(session: Session, attempt: int) -> PromotionResult:
            model = self._model(session, name, for_update=True)
            cand = get_version_row(session, model_id=model.id, version=version)
            if cand is None:
                raise ModelNotFoundError(
                    f"model {name!r} has no version {version}", details={"version": version}
                )
            if metric not in cand.metrics:
                raise ValidationError(
                    f"version {version} of {name!r} has no metric {metric!r} (it has "
                    f"{sorted(cand.metrics)}); register it with that test metric",
                    field="metric",
                )
            cv = float(cand.metrics[metric])
            holder = get_alias_version(session, model_id=model.id, alias=alias, for_update=True)
            hv: float | None = None
            if holder is None:
                better, why = True, f"alias {alias!r} had no version"
            elif holder == version:
                better, why = False, f"version {version} already holds {alias!r}"
            else:
                hrow = get_version_row(session, model_id=model.id, version=holder)
                if metric not in hrow.metrics:
                    better, why = True, f"v{holder} has no {metric!r} to compare"
                else:
                    hv = float(hrow.metrics[metric])
                    better = cv < hv if direction == "minimize" else cv > hv
                    op = (
                        ("<" if better else ">=")
                        if direction == "minimize"
                        else (">" if better else "<=")
                    )
                    why = f"{metric} {cv:.6g} {op} {hv:.6g} of v{holder} ({direction})"
            now = self._clock()
            actor_ = actor or _default_actor()
            values = {
                "alias": alias,
                "candidate_version": version,
                "incumbent_version": holder,
                "metric": metric,
                "direction": direction,
                "candidate_value": cv,
                "incumbent_value": hv,
                "promoted": better,
                "reason": why,
                "actor": actor_,
                "created_at": now,
            }
            cid = insert_comparison(session, model_id=model.id, values=values)
            event = None
            if better:
                event = self._move(
                    session,
                    model,
                    alias,
                    version,
                    actor=actor_,
                    reason=f"promote_if_better: {why}",
                    expected_version=holder,
                )
            return PromotionResult(
                promoted=better,
                comparison=Comparison(id=cid, name=_bare(name), **values),
                event=event,
            )

        return self.db.run(tx, write=True)


def check_prediction(predictor: Any, version: ModelVersion) -> Any:
    """Predict on the version's input example; refuse a model whose output is not one finite
    value (or row) per input row."""
    import numpy as np

    from serving.errors import ModelLoadError

    x = version.signature.to_matrix(version.input_example, field="input_example")
    y = np.asarray(predictor.predict(x))
    if y.shape[:1] != (x.shape[0],) or not np.all(np.isfinite(y)):
        raise ModelLoadError(
            f"{version.name} v{version.version} failed its check on the input example: "
            f"expected {x.shape[0]} finite predictions, got shape {y.shape}",
            details={"shape": list(y.shape)},
        )
    return y


def _jsonable(obj: Any) -> Any:
    import json

    return json.loads(json.dumps(obj, default=str))


def _git_sha() -> str | None:
    """The git commit of the working directory, read from .git without running git."""
    for d in (Path.cwd(), *Path.cwd().parents):
        head = d / ".git" / "HEAD"
        if head.is_file():
            try:
                ref = head.read_text().strip()
                if ref.startswith("ref: "):
                    p = d / ".git" / ref[5:]
                    if p.is_file():
                        return p.read_text().strip()
                    packed = d / ".git" / "packed-refs"
                    if packed.is_file():
                        for line in packed.read_text().splitlines():
                            if line.endswith(" " + ref[5:]):
                                return line.split()[0]
                    return None
                return ref
            except OSError:
                return None
    return None
