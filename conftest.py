"""pytest configuration shared by the unit tests and the nbval notebook run."""

# nbval gives up when the kernel sends nothing for 5 seconds after a cell has finished. Drawing
# a notebook's figures after a cell (matplotlib's inline backend does this after every cell)
# can take longer than that on a busy 2-core machine, so we allow a minute.
NOTEBOOK_OUTPUT_TIMEOUT_S = 60


def pytest_collection_modifyitems(items):
    for item in items:
        if hasattr(item, "output_timeout"):  # an nbval notebook cell
            item.output_timeout = NOTEBOOK_OUTPUT_TIMEOUT_S
