"""API keys of the caller's project, over HTTP (mounted only with authentication on; every
route needs an admin key, which the middleware checks): create, list, revoke.

The first key of a server comes from ``autotune keys create --db ...`` on the database itself.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, status
from pydantic import BaseModel, Field

from autotune.api.deps import ProjectDep
from autotune.api.errors import ERROR_RESPONSES
from autotune.auth import ApiKey, KeyStore, Scope
from autotune.errors import NotFoundError

router = APIRouter(prefix="/keys", tags=["keys"], responses=ERROR_RESPONSES)


def get_keys(request: Request) -> KeyStore:
    return request.app.state.keys


KeysDep = Annotated[KeyStore, Depends(get_keys)]


class CreateKeyRequest(BaseModel):
    scope: Scope = Field(description="read, write or admin.")
    name: str | None = Field(default=None, max_length=128, description="A label for people.")


class CreatedKey(BaseModel):
    """The new key; ``key`` is the secret, shown this once."""

    key: str
    info: ApiKey


class KeyList(BaseModel):
    items: list[ApiKey]


@router.post(
    "",
    response_model=CreatedKey,
    status_code=status.HTTP_201_CREATED,
    summary="Create an API key in the caller's project (the secret is shown once)",
)
def create_key(body: CreateKeyRequest, project: ProjectDep, keys: KeysDep) -> CreatedKey:
    info, secret = keys.create(project=project, scope=body.scope, name=body.name)
    return CreatedKey(key=secret, info=info)


@router.get("", response_model=KeyList, summary="The caller's project's API keys")
def list_keys(project: ProjectDep, keys: KeysDep) -> KeyList:
    return KeyList(items=keys.list(project=project))


@router.delete("/{key_id}", response_model=ApiKey, summary="Revoke an API key of the project")
def revoke_key(key_id: str, project: ProjectDep, keys: KeysDep) -> ApiKey:
    found = next((k for k in keys.list(project=project) if k.id == key_id), None)
    if found is None:  # another project's key is simply not found
        raise NotFoundError(
            f"no API key with id {key_id!r} in this project",
            details={"field": "key_id", "key_id": key_id},
        )
    return keys.revoke(key_id)
