"""REST resources of the feature store: ``/v1/feature-groups`` and ``/v1/training-sets``.

Thin handlers over :class:`~serving.features.store.FeatureStoreService` (``app.state.
feature_store``). Mount with :func:`install_features`; :func:`create_features_app` builds an app
with the feature store alone (tests, a feature-serving replica).

Ingestion takes the batch in the request body, by ``Content-Type``: ``application/json``
(``{"rows": [{column: value}, ...]}``), ``text/csv``, or ``application/vnd.apache.parquet``
(also ``application/octet-stream``). ``POST .../push`` takes one row (streaming sources).
"""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

import pandas as pd
from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response, status
from pydantic import BaseModel, Field

from autotune.api.errors import ERROR_RESPONSES, install_error_handlers
from serving.features.definitions import FeatureGroup, FeatureGroupSpec
from serving.features.errors import FeatureSchemaError
from serving.features.schemas import ApplyResult, IngestResult, OnlineRow, TrainingSet
from serving.features.store import FeatureStoreService, OnInvalid

__all__ = [
    "groups_router",
    "training_sets_router",
    "install_features",
    "create_features_app",
    "MAX_UPLOAD_BYTES",
]

# Bigger batches belong in several requests (or the Python client's embedded mode).
MAX_UPLOAD_BYTES = 512 * 1024 * 1024
# Online lookups of at most this many entities run on the event loop.
INLINE_ENTITIES = 100
PARQUET_TYPES = ("application/vnd.apache.parquet", "application/x-parquet",
                 "application/octet-stream")  # fmt: skip


def get_store(request: Request) -> FeatureStoreService:
    return request.app.state.feature_store


StoreDep = Annotated[FeatureStoreService, Depends(get_store)]
VersionQuery = Annotated[int | None, Query(ge=1, description="Group version; default latest.")]

groups_router = APIRouter(prefix="/feature-groups", tags=["features"], responses=ERROR_RESPONSES)
training_sets_router = APIRouter(
    prefix="/training-sets", tags=["features"], responses=ERROR_RESPONSES
)


class OnlineQuery(BaseModel):
    entities: list[dict[str, Any]] = Field(min_length=1, max_length=10_000)
    features: list[str] | None = None


class OnlineAnswer(BaseModel):
    rows: list[OnlineRow]


class TrainingSetBody(BaseModel):
    """A training set definition with its label table as rows."""

    name: str
    features: list[str] = Field(min_length=1)
    timestamp: str = "timestamp"
    label: str | None = None
    description: str = ""
    labels: list[dict[str, Any]] = Field(min_length=1)


@groups_router.post(
    "",
    response_model=ApplyResult,
    summary="Create a feature group, update it, or version it",
    responses={201: {"model": ApplyResult, "description": "Created, or a new version made."}},
)
def apply_group(spec: FeatureGroupSpec, store: StoreDep, response: Response) -> ApplyResult:
    result = store.apply(spec)
    if result.action in ("created", "new_version"):
        response.status_code = status.HTTP_201_CREATED
    return result


@groups_router.get("", response_model=list[FeatureGroup], summary="List feature groups")
def list_groups(store: StoreDep, all_versions: bool = False) -> list[FeatureGroup]:
    return store.list_groups(all_versions=all_versions)


@groups_router.get("/{name}", response_model=FeatureGroup, summary="Get a feature group")
def get_group(name: str, store: StoreDep, version: VersionQuery = None) -> FeatureGroup:
    return store.get_group(name, version)


async def _body(request: Request) -> bytes:
    size = request.headers.get("content-length")
    if size is not None and size.isdigit() and int(size) > MAX_UPLOAD_BYTES:
        raise FeatureSchemaError(
            f"the upload is {int(size)} bytes; at most {MAX_UPLOAD_BYTES} per request: split the "
            "batch",
            field="body",
        )
    return await request.body()


def _frame(body: bytes, content_type: str) -> Any:
    ctype = content_type.split(";")[0].strip().lower()
    try:
        if ctype in ("", "application/json"):
            payload = json.loads(body or b"null")
            rows = payload.get("rows") if isinstance(payload, dict) else None
            if not isinstance(rows, list):
                raise FeatureSchemaError(
                    'the JSON body must be {"rows": [{column: value}, ...]}', field="rows"
                )
            return rows
        if ctype in ("text/csv", "application/csv"):
            return pd.read_csv(io.BytesIO(body))
        if ctype in PARQUET_TYPES:
            return pd.read_parquet(io.BytesIO(body))
    except FeatureSchemaError:
        raise
    except Exception as e:  # malformed JSON / CSV / Parquet
        raise FeatureSchemaError(
            f"could not read the {ctype or 'JSON'} body: {type(e).__name__}: {e}", field="body"
        ) from None
    raise FeatureSchemaError(
        f"unsupported Content-Type {ctype!r}: send application/json, text/csv or "
        "application/vnd.apache.parquet",
        field="body",
    )


@groups_router.post(
    "/{name}/ingest",
    response_model=IngestResult,
    summary="Ingest a batch (JSON rows, CSV or Parquet body)",
)
async def ingest(
    name: str,
    request: Request,
    store: StoreDep,
    version: VersionQuery = None,
    on_invalid: OnInvalid = "reject",
) -> IngestResult:
    body = await _body(request)
    data = _frame(body, request.headers.get("content-type", ""))
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(store.ingest, name, data, version=version, on_invalid=on_invalid)


@groups_router.post("/{name}/push", response_model=IngestResult, summary="Push one row")
def push(
    name: str,
    row: dict[str, Any],
    store: StoreDep,
    version: VersionQuery = None,
    on_invalid: OnInvalid = "fail",
) -> IngestResult:
    return store.ingest(name, [row], version=version, on_invalid=on_invalid)


@groups_router.post(
    "/{name}/online", response_model=OnlineAnswer, summary="Latest values of entities"
)
async def online(
    name: str, query: OnlineQuery, store: StoreDep, version: VersionQuery = None
) -> Response:
    # Small lookups run on the event loop (a read of well under a millisecond: cheaper than a
    # hop to the thread pool); big ones in a worker thread so the loop keeps serving.
    if len(query.entities) <= INLINE_ENTITIES:
        rows = store.get_online(name, query.entities, version=version, features=query.features)
    else:
        from starlette.concurrency import run_in_threadpool

        rows = await run_in_threadpool(
            store.get_online, name, query.entities, version=version, features=query.features
        )
    # Serialized once, here: the rows are already checked, no second validation pass.
    return Response(OnlineAnswer.model_construct(rows=rows).model_dump_json(),
                    media_type="application/json")  # fmt: skip


@training_sets_router.post(
    "",
    response_model=TrainingSet,
    status_code=status.HTTP_201_CREATED,
    summary="Create a training set (labels joined point-in-time with features)",
)
def create_training_set(body: TrainingSetBody, store: StoreDep) -> TrainingSet:
    spec = body.model_dump(exclude={"labels"})
    return store.create_training_set(spec, body.labels)


@training_sets_router.get("", response_model=list[TrainingSet], summary="List training sets")
def list_training_sets(store: StoreDep) -> list[TrainingSet]:
    return store.list_training_sets()


@training_sets_router.get("/{name}", response_model=TrainingSet, summary="Get a training set")
def get_training_set(
    name: str, store: StoreDep, version: Annotated[int | None, Query(ge=1)] = None
) -> TrainingSet:
    return store.get_training_set(name, version)


@training_sets_router.get(
    "/{name}/data",
    summary="Materialize a training set as JSON rows or Parquet",
    response_class=Response,
)
def training_set_data(
    name: str,
    store: StoreDep,
    version: Annotated[int | None, Query(ge=1)] = None,
    format: Literal["json", "parquet"] = "json",
) -> Response:
    frame = store.training_set_frame(name, version)
    if format == "parquet":
        buf = io.BytesIO()
        frame.to_parquet(buf, index=False)
        return Response(buf.getvalue(), media_type="application/vnd.apache.parquet")
    body = frame.to_json(orient="records", date_format="iso", double_precision=15)
    return Response(f'{{"rows": {body}}}', media_type="application/json")


def install_features(app: FastAPI, store: FeatureStoreService, *, prefix: str = "/v1") -> None:
    """Mount the feature store's routers on ``app`` (whose error handlers and lifespan the
    caller owns; close ``store`` at shutdown)."""
    app.state.feature_store = store
    app.include_router(groups_router, prefix=prefix)
    app.include_router(training_sets_router, prefix=prefix)


def create_features_app(
    db_url: str | None = None, *, online: Any = None, store: FeatureStoreService | None = None
) -> FastAPI:
    """An app with the feature store alone (it closes the store on shutdown)."""
    fs = store or FeatureStoreService(db_url, online=online)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            fs.close()

    app = FastAPI(title="AutoTune feature store", lifespan=lifespan)
    install_error_handlers(app)
    from autotune.api.limits import install_limits

    install_limits(app)  # body size (413) and per-key rate (429), as on autotune serve
    install_features(app, fs)
    return app


def app_from_env() -> FastAPI:
    """uvicorn factory (``serving.features.api:app_from_env``): ``AUTOTUNE_DB`` and, for the
    Redis online store, ``AUTOTUNE_FEATURES_REDIS`` (+ ``AUTOTUNE_FEATURES_REDIS_PREFIX``)."""
    import os

    online = None
    url = os.environ.get("AUTOTUNE_FEATURES_REDIS")
    if url:
        from serving.features.online import DEFAULT_PREFIX, RedisOnlineStore

        prefix = os.environ.get("AUTOTUNE_FEATURES_REDIS_PREFIX", DEFAULT_PREFIX)
        online = RedisOnlineStore(url, prefix=prefix)
    return create_features_app(os.environ.get("AUTOTUNE_DB") or None, online=online)
