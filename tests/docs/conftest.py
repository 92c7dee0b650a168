# The API tests' fixtures: these pages are checked against real API answers.
from tests.fleet.api.conftest import agent, licensed  # noqa: F401
