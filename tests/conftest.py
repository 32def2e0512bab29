"""Shared fixtures. Reference data is read from ../shared/data (or $HIL_SHARED_DATA), never copied."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("HIL_SHARED_DATA", ROOT.parent / "shared" / "data"))

# Paper Tables 2 and 3 (FLOPs = multiply-adds, in millions).
PAPER_MFLOPS = {
    "SEQnet@vnni-A0": 163, "SEQnet@vnni-A1": 358, "SEQnet@vnni-A2": 638, "SEQnet@vnni-A3": 981,
    "SEQnet@vnni-A4": 1267, "SEQnet@pixel4-A0": 107, "SEQnet@pixel4-A1": 274, "SEQnet@pixel4-A2": 402,
    "SEQnet@pixel4-A3": 591, "SEQnet@pixel4-A4": 738,
}


@pytest.fixture(scope="session")
def published() -> dict:
    path = SHARED_DATA / "spaceevo_search_result.yaml"
    if not path.exists():
        pytest.fail(f"reference data not found at {path}; set HIL_SHARED_DATA to the shared/data folder")
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="session")
def seqnets(published) -> dict[str, tuple[str, str]]:
    """name -> (search-space string, subnet string) for the 10 published SEQnets."""
    spaces = published["specific_supernet_encoding_dict"]
    return {name: (spaces[sp], arch) for name, (sp, arch) in published["specific_subnet_encoding_dict"].items()}


@pytest.fixture(scope="session")
def all_type_predictor(tmp_path_factory):
    """One synthetic predictor knowing every kernel type of both hyperspaces, trained once per test session
    (~19 s): tests only read it (derived predictors are copies, `meta.model_copy(...)`)."""
    from .test_predictors import _all_type_predictor

    return _all_type_predictor(tmp_path_factory.mktemp("all-type-predictor"))


# --- service fixtures: every database test runs on SQLite and on PostgreSQL ------------------------------
PG_ADMIN_URL = os.environ.get("HIL_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> str:
    """A fresh, empty database. PostgreSQL must be reachable (.ci/run starts it); set HIL_SKIP_POSTGRES=1 to
    skip those runs on a machine without it (they are never skipped silently otherwise)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'hil.db'}"
        return
    if os.environ.get("HIL_SKIP_POSTGRES") == "1":
        pytest.skip("HIL_SKIP_POSTGRES=1")
    import uuid

    from sqlalchemy import create_engine, text

    name = f"hil_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as e:  # noqa: BLE001
        pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is not reachable ({e}); start it (.ci/run does) or set "
                    "HIL_SKIP_POSTGRES=1")
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()
