"""Forest arrays reproduce scikit-learn exactly and load without pickle."""
from __future__ import annotations

import io
import zipfile

import numpy as np
from sklearn.ensemble import RandomForestRegressor

from predictors.forest import ArrayForest


def test_array_forest_matches_sklearn_exactly_and_round_trips():
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 300, (2000, 7))
    y = X[:, 0] * X[:, 1] / 100 + np.sin(X[:, 2]) + rng.normal(0, 0.1, 2000)
    rf = RandomForestRegressor(n_estimators=25, max_depth=14, random_state=0).fit(X, y)
    forest = ArrayForest.from_sklearn(rf)
    Xt = rng.uniform(0, 300, (500, 7))
    assert np.array_equal(forest.predict(Xt), rf.predict(Xt))
    buf = io.BytesIO()
    np.savez_compressed(buf, **forest.to_arrays("conv."))
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as z:  # plain .npy members, nothing pickled
        assert all(name.endswith(".npy") for name in z.namelist())
    loaded = ArrayForest.from_arrays(np.load(io.BytesIO(buf.getvalue()), allow_pickle=False), "conv.")
    assert np.array_equal(loaded.predict(Xt), rf.predict(Xt))


def test_shape_errors_name_the_problem():
    rf = RandomForestRegressor(n_estimators=2, random_state=0).fit(np.ones((5, 3)), np.arange(5.0))
    f = ArrayForest.from_sklearn(rf)
    try:
        f.predict(np.ones((2, 4)))
    except ValueError as e:
        assert "(n, 3)" in str(e)
    else:
        raise AssertionError("no error")
