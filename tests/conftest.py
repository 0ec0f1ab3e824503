"""Shared fixtures: the real offline model and data, loaded once per test session.

The machine has no model or dataset hub: hub look-ups are switched off so that a test of the
"unknown model" path fails fast instead of waiting on the network.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import pytest  # noqa: E402


_running: dict = {}  # the test being set up or run


def pytest_runtest_setup(item):
    _running["item"] = item  # before its fixtures, session-scoped ones included


def pytest_configure(config):
    """A test that loads a real model (an offline GGUF build), itself or through a fixture, must be
    marked `slow`: `make test-fast` loads none. Random twins and local folders of them stay allowed."""
    from freezelab.model import models

    load = models._load_offline

    def guarded(entry):
        loaded = load(entry)  # a missing package still raises its own error (tested without the mark)
        item = _running.get("item")
        if item is not None and item.get_closest_marker("slow") is None:
            pytest.fail(f"{item.nodeid} loads the real model '{entry.name}' but is not marked slow")
        return loaded

    models._load_offline = guarded


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
