"""The Python client: ``autotune.Client()`` in-process, ``autotune.Client(url)`` over HTTP.

    import autotune

    client = autotune.Client()  # or autotune.Client("http://127.0.0.1:8000")
    study = client.create_study(
        name="demo",
        space={"x": autotune.Float(-5, 5), "kind": autotune.Categorical(["a", "b"])},
        objectives={"loss": "minimize"},
    )
    for _ in range(20):
        with study.trial() as t:
            t.observe({"loss": (t["x"] - 1) ** 2})
    print(study.best_trial)

Both transports behave the same and raise the same :mod:`autotune.errors` classes.
"""

from autotune.client._base import Listing, QueuedConfig, Transport
from autotune.client._client import Client, StudyClient
from autotune.client._trial import ActiveTrial, TrialPruned

__all__ = [
    "ActiveTrial",
    "Client",
    "Listing",
    "QueuedConfig",
    "StudyClient",
    "Transport",
    "TrialPruned",
]
