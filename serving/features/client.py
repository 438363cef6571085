"""The feature store's Python client: embedded (a database URL) or over HTTP (a server URL).

    fs = FeatureStore(db="sqlite:///autotune.db")      # in-process, no server
    fs = FeatureStore("http://127.0.0.1:8000")          # the REST API

Both transports have the same methods and raise the same errors (HTTP errors come back as the
registered classes of :mod:`serving.features.errors`). The embedded one also joins label tables
point-in-time without storing them (:meth:`historical_features`) and reads several groups at
once (:meth:`online_features`), as the model server does.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from typing import Any

import pandas as pd

from autotune.errors import AutotuneError, UnavailableError, error_from_payload
from serving.features.definitions import FeatureGroup, FeatureGroupSpec
from serving.features.schemas import ApplyResult, IngestResult, OnlineRow, TrainingSet
from serving.features.validation import to_frame

__all__ = ["FeatureStore"]


class FeatureStore:
    """A feature store client.

    Args:
        target: ``http(s)://...`` for a server, or a database URL (same as ``db``).
        db: database URL for the embedded store (``None`` with no target: ``AUTOTUNE_DB``).
        online: embedded only: a Redis URL or store for online reads.
        timeout: HTTP timeout in seconds.
        api_key: HTTP only: the API key (``None``: ``AUTOTUNE_API_KEY`` if set).
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        db: str | None = None,
        online: Any = None,
        timeout: float = 60.0,
        api_key: str | None = None,
    ) -> None:
        self._http = None
        self._svc = None
        if target is not None and target.startswith(("http://", "https://")):
            import httpx

            self.url = target.rstrip("/")
            from autotune.client._auth import auth_headers

            self._http = httpx.Client(
                base_url=self.url + "/v1", timeout=timeout, headers=auth_headers(api_key)
            )
        else:
            from serving.features.store import FeatureStoreService

            self._svc = FeatureStoreService(db or target, online=online)

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
        if self._svc is not None:
            self._svc.close()

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def service(self) -> Any:
        """The embedded :class:`FeatureStoreService` (``None`` over HTTP)."""
        return self._svc

    # --------------------------------------------------------------------------- transport

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        import httpx

        assert self._http is not None
        try:
            r = self._http.request(method, path, **kw)
        except httpx.TransportError as e:
            raise UnavailableError(f"feature store at {self.url} unreachable: {e}") from e
        if r.status_code >= 400:
            try:
                payload = r.json()
            except ValueError:
                payload = r.text
            raise error_from_payload(r.status_code, payload)
        ctype = r.headers.get("content-type", "")
        return r.json() if ctype.startswith("application/json") else r.content

    # ---------------------------------------------------------------------------- methods

    def apply(self, spec: FeatureGroupSpec | dict[str, Any]) -> ApplyResult:
        """Create a feature group, update it in place, or make a new version."""
        if self._svc is not None:
            return self._svc.apply(spec)
        body = spec.model_dump(mode="json") if isinstance(spec, FeatureGroupSpec) else spec
        return ApplyResult.model_validate(self._call("POST", "/feature-groups", json=body))

    def list_groups(self, *, all_versions: bool = False) -> list[FeatureGroup]:
        if self._svc is not None:
            return self._svc.list_groups(all_versions=all_versions)
        data = self._call("GET", "/feature-groups", params={"all_versions": all_versions})
        return [FeatureGroup.model_validate(g) for g in data]

    def get_group(self, name: str, version: int | None = None) -> FeatureGroup:
        if self._svc is not None:
            return self._svc.get_group(name, version)
        params = {"version": version} if version is not None else {}
        return FeatureGroup.model_validate(
            self._call("GET", f"/feature-groups/{name}", params=params)
        )

    def ingest(
        self, name: str, data: Any, *, version: int | None = None, on_invalid: str = "reject"
    ) -> IngestResult:
        """Validate and store a batch: a DataFrame, a pyarrow Table or a list of row dicts."""
        if self._svc is not None:
            return self._svc.ingest(name, data, version=version, on_invalid=on_invalid)  # type: ignore[arg-type]
        params: dict[str, Any] = {"on_invalid": on_invalid}
        if version is not None:
            params["version"] = version
        if isinstance(data, list):
            content = json.dumps({"rows": data}, default=str).encode()
            ctype = "application/json"
        else:
            content, ctype = _parquet_or_csv(to_frame(data))
        r = self._call(
            "POST", f"/feature-groups/{name}/ingest", params=params, content=content,
            headers={"content-type": ctype},
        )  # fmt: skip
        return IngestResult.model_validate(r)

    def push(self, name: str, row: dict[str, Any], *, version: int | None = None) -> IngestResult:
        """Store one row (all or nothing: an invalid row raises)."""
        if self._svc is not None:
            return self._svc.ingest(name, [row], version=version, on_invalid="fail")
        params = {"version": version} if version is not None else {}
        body = json.loads(json.dumps(row, default=str))
        return IngestResult.model_validate(
            self._call("POST", f"/feature-groups/{name}/push", params=params, json=body)
        )

    def get_online(
        self,
        name: str,
        entities: Sequence[dict[str, Any]],
        *,
        features: Sequence[str] | None = None,
        version: int | None = None,
    ) -> list[OnlineRow]:
        """The latest values of each entity (expired values come back as ``expired``)."""
        if self._svc is not None:
            return self._svc.get_online(name, entities, version=version, features=features)
        params = {"version": version} if version is not None else {}
        body = {"entities": list(entities), "features": list(features) if features else None}
        data = self._call("POST", f"/feature-groups/{name}/online", params=params, json=body)
        return [OnlineRow.model_validate(r) for r in data["rows"]]

    def online_features(
        self, entities: Sequence[dict[str, Any]], features: Sequence[str] | str
    ) -> list[dict[str, Any]]:
        """Embedded only: one row per entity with the referenced features' online values."""
        return self._embedded("online_features").online_features(entities, features)

    def historical_features(
        self, labels: Any, features: Sequence[str] | str, *, timestamp: str = "timestamp"
    ) -> pd.DataFrame:
        """Embedded only: the label table joined point-in-time (see the store's method);
        over HTTP, create a training set and read its data."""
        return self._embedded("historical_features").historical_features(
            labels, features, timestamp=timestamp
        )

    def create_training_set(
        self,
        name: str,
        labels: Any,
        features: Sequence[str],
        *,
        timestamp: str = "timestamp",
        label: str | None = None,
        description: str = "",
    ) -> TrainingSet:
        spec = {"name": name, "features": list(features), "timestamp": timestamp,
                "label": label, "description": description}  # fmt: skip
        if self._svc is not None:
            return self._svc.create_training_set(spec, labels)
        frame = to_frame(labels)
        rows = json.loads(frame.to_json(orient="records", date_format="iso", double_precision=15))
        return TrainingSet.model_validate(
            self._call("POST", "/training-sets", json={**spec, "labels": rows})
        )

    def get_training_set(self, name: str, version: int | None = None) -> TrainingSet:
        if self._svc is not None:
            return self._svc.get_training_set(name, version)
        params = {"version": version} if version is not None else {}
        return TrainingSet.model_validate(
            self._call("GET", f"/training-sets/{name}", params=params)
        )

    def list_training_sets(self) -> list[TrainingSet]:
        if self._svc is not None:
            return self._svc.list_training_sets()
        return [TrainingSet.model_validate(t) for t in self._call("GET", "/training-sets")]

    def training_set_frame(self, name: str, version: int | None = None) -> pd.DataFrame:
        """The training set materialized (labels joined point-in-time with its features)."""
        if self._svc is not None:
            return self._svc.training_set_frame(name, version)
        params: dict[str, Any] = {"format": "parquet"}
        if version is not None:
            params["version"] = version
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            params["format"] = "json"
            return pd.DataFrame(
                self._call("GET", f"/training-sets/{name}/data", params=params)["rows"]
            )
        content = self._call("GET", f"/training-sets/{name}/data", params=params)
        return pd.read_parquet(io.BytesIO(content))

    def _embedded(self, what: str) -> Any:
        if self._svc is None:
            raise AutotuneError(
                f"{what} runs in-process only: open FeatureStore(db=...) on the same database"
            )
        return self._svc


def _parquet_or_csv(frame: pd.DataFrame) -> tuple[bytes, str]:
    try:
        buf = io.BytesIO()
        frame.to_parquet(buf, index=False)
        return buf.getvalue(), "application/vnd.apache.parquet"
    except ImportError:
        return frame.to_csv(index=False).encode(), "text/csv"
