"""Shared fixtures: the real offline model and data, loaded once per test session.

The machine has no model or dataset hub: hub look-ups are switched off so that a test of the
"unknown model" path fails fast instead of waiting on the network.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _real_models_only_in_slow_tests(request, monkeypatch):
    """A test that loads a real model (an offline GGUF build) must be marked `slow`: `make test-fast`
    loads none. Random twins and local folders of them stay allowed everywhere."""
    if request.node.get_closest_marker("slow"):
        return
    from freezelab.model import models

    def refuse(entry):
        pytest.fail(f"{request.node.nodeid} loads the real model '{entry.name}' but is not marked slow")

    monkeypatch.setattr(models, "_load_offline", refuse)


@pytest.fixture(scope="session")
def smollm():
    from freezelab.model.models import load_model

    return load_model("smollm2-135m")


@pytest.fixture(scope="session")
def bbc():
    from freezelab.model.data import load_task

    return load_task("bbc-news")


@pytest.fixture(scope="session")
def bbc_split(bbc):
    from freezelab.model.data import split

    return split(bbc, seed=0, n_calib=32)


def load_script(path, name: str):
    """Import a script that is not part of the package (book/build.py, make_student.py) as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
