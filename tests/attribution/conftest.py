from tests.helpers import one_thread  # noqa: F401 (an autouse fixture)
