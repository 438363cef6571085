"""A content-addressed directory store for model artifacts, verified on every load.

An artifact is stored once under ``<root>/sha256/<h[:2]>/<h>`` (written to a temporary file and
renamed, so a reader never sees half a file; a shared directory works for several machines).
``get`` re-hashes the bytes and refuses them if they no longer match.

Only formats that cannot run code when loaded are accepted (see :data:`FORMATS`): XGBoost's own
UBJSON/JSON, PyTorch state_dicts (loaded with ``weights_only=True``) and scikit-learn through skops
(loaded with the server's trusted-types list). Pickle is refused, whatever the file is called.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from serving.errors import ArtifactIntegrityError, UnsafeArtifactError
from serving.schemas import ArtifactRef

__all__ = [
    "ArtifactStore",
    "FORMATS",
    "format_from_path",
    "check_format",
    "DEFAULT_ARTIFACT_DIR",
    "ARTIFACT_DIR_ENV",
]

ARTIFACT_DIR_ENV = "AUTOTUNE_MODEL_STORE"
# Beside the trainers' ./autotune-artifacts/<study>/<trial>/; a study name cannot start with '.'.
DEFAULT_ARTIFACT_DIR = "autotune-artifacts/.registry"

FORMATS: dict[str, str] = {
    "xgboost-ubj": "XGBoost Booster, UBJSON (Booster.save_raw('ubj') or save_model('*.ubj'))",
    "xgboost-json": "XGBoost Booster, JSON (save_model('*.json'))",
    "torch-state-dict": "PyTorch state_dict saved with torch.save, loaded with weights_only=True",
    "sklearn-skops": "scikit-learn estimator saved with skops.io.dump",
}
_SUFFIXES = {
    ".ubj": "xgboost-ubj",
    ".json": "xgboost-json",
    ".pt": "torch-state-dict",
    ".pth": "torch-state-dict",
    ".skops": "sklearn-skops",
}
_PICKLE_SUFFIXES = {".pkl", ".pickle", ".joblib", ".sav", ".dill", ".cloudpickle"}
_PICKLE_NAMES = {"pickle", "pkl", "joblib", "cloudpickle", "dill"}
_CHUNK = 1 << 20


def _pickle_refused(what: str) -> UnsafeArtifactError:
    return UnsafeArtifactError(
        f"{what} is a pickle, which runs arbitrary code when loaded and is refused; save the "
        "model in a safe format instead: XGBoost booster.save_model('model.ubj'), PyTorch "
        "torch.save(model.state_dict(), 'model.pt'), or scikit-learn skops.io.dump(est, "
        "'model.skops')",
        field="artifact",
        details={"allowed_formats": sorted(FORMATS)},
    )


def format_from_path(path: str | os.PathLike[str]) -> str:
    """The artifact format implied by a file name (``model.ubj`` -> ``xgboost-ubj``)."""
    suffix = Path(path).suffix.lower()
    if suffix in _PICKLE_SUFFIXES:
        raise _pickle_refused(f"{os.fspath(path)!r}")
    try:
        return _SUFFIXES[suffix]
    except KeyError:
        raise UnsafeArtifactError(
            f"cannot tell the format of {os.fspath(path)!r} from its suffix; use one of "
            f"{sorted(_SUFFIXES)} or pass format= one of {sorted(FORMATS)}",
            field="format",
            details={"allowed_formats": sorted(FORMATS)},
        ) from None


def _looks_like_pickle(data: bytes) -> bool:
    # Protocol 2+ starts with PROTO (0x80) and the protocol number; older ones are rarely used
    # for models but "(dp0" / "(lp0" / "ccopy_reg" are their usual openings.
    if len(data) >= 2 and data[0] == 0x80 and 2 <= data[1] <= 5:
        return True
    return data[:2] in (b"(d", b"(l", b"(i") or data[:10] == b"ccopy_reg\n"


def check_format(data: bytes, fmt: str) -> None:
    """Refuse pickles and bytes that are plainly not the declared format.

    This is a cheap sniff at registration; the real guarantee is the loader, which uses only
    loaders that cannot execute code (XGBoost's parser, ``weights_only=True``, skops' trusted
    types).
    """
    if fmt.lower() in _PICKLE_NAMES:
        raise _pickle_refused(f"format {fmt!r}")
    if fmt not in FORMATS:
        raise UnsafeArtifactError(
            f"unknown artifact format {fmt!r}; use one of {sorted(FORMATS)}",
            field="format",
            details={"allowed_formats": sorted(FORMATS)},
        )
    if not data:
        raise UnsafeArtifactError("the artifact is empty", field="artifact")
    if fmt == "torch-state-dict":
        # torch.save writes a zip archive whose data.pkl is read by the weights-only unpickler;
        # a bare (non-zip) pickle is the legacy format and is refused outright.
        if not data.startswith(b"PK"):
            raise _pickle_refused("this torch artifact (not a torch.save zip archive)")
        return
    if _looks_like_pickle(data):
        raise _pickle_refused("the artifact")
    if fmt == "sklearn-skops" and not data.startswith(b"PK"):
        raise UnsafeArtifactError(
            "a skops artifact is a zip archive; this is not", field="artifact"
        )
    if fmt == "xgboost-json" and data.lstrip()[:1] != b"{":
        raise UnsafeArtifactError("an XGBoost JSON model starts with '{'", field="artifact")
    if fmt == "xgboost-ubj" and data[:1] != b"{":
        raise UnsafeArtifactError("an XGBoost UBJSON model starts with '{'", field="artifact")


class ArtifactStore:
    """Directory store of artifacts addressed by their sha256.

    Args:
        root: the directory (created if missing); may be shared by several machines.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root or os.environ.get(ARTIFACT_DIR_ENV) or DEFAULT_ARTIFACT_DIR)
        self.root.mkdir(parents=True, exist_ok=True)

    def path_of(self, sha256: str) -> Path:
        if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
            raise ArtifactIntegrityError(f"{sha256!r} is not a sha256 hex digest")
        return self.root / "sha256" / sha256[:2] / sha256

    def put(self, data: bytes, *, format: str) -> ArtifactRef:
        """Store ``data`` (checked against ``format``); storing the same bytes twice is a no-op."""
        check_format(data, format)
        digest = hashlib.sha256(data).hexdigest()
        path = self.path_of(digest)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        return ArtifactRef(sha256=digest, format=format, size=len(data))

    def put_file(self, path: str | os.PathLike[str], *, format: str | None = None) -> ArtifactRef:
        """Store a file; its format comes from its suffix unless given."""
        fmt = format or format_from_path(path)
        if fmt in _PICKLE_NAMES or Path(path).suffix.lower() in _PICKLE_SUFFIXES:
            raise _pickle_refused(f"{os.fspath(path)!r}")
        return self.put(Path(path).read_bytes(), format=fmt)

    def get(self, ref: ArtifactRef | str) -> bytes:
        """The artifact's bytes, verified against its sha256.

        Raises:
            ArtifactIntegrityError: missing, or the bytes changed since they were stored.
        """
        digest = ref.sha256 if isinstance(ref, ArtifactRef) else ref
        path = self.path_of(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ArtifactIntegrityError(
                f"artifact {digest} is missing from {self.root}; is the server pointed at the "
                "same artifact directory as the registry?",
                details={"sha256": digest, "root": str(self.root)},
            ) from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise ArtifactIntegrityError(
                f"artifact {digest} is corrupt: its bytes hash to {actual}; re-register the model",
                details={"sha256": digest, "actual": actual},
            )
        return data

    def exists(self, sha256: str) -> bool:
        return self.path_of(sha256).exists()
