"""Gaussian-process numerics for the GP designer, on tensors and arrays only.

Nothing here knows about studies or trials (Optuna's ``_gp`` package is the model): ``search_space``
turns a :class:`~autotune.space.SearchSpace` into the tensor encoding the model works on, ``gp``
fits an exact GP, ``acqf`` holds the LogEI-family acquisitions and ``optim_mixed`` maximizes
them over mixed (continuous, integer, categorical, conditional) domains. The bridge to the
designer interface is :mod:`autotune.designers.gp`.
"""
