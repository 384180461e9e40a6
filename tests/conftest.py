import os

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

# Under pytest-xdist (`make test` runs one worker per core) each worker, and every CLI subprocess it starts,
# gets an equal share of the cores, so that the workers' torch thread pools do not oversubscribe the machine.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    _share = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ["OMP_NUM_THREADS"] = str(_share)
    os.environ["MKL_NUM_THREADS"] = str(_share)


def pytest_collection_modifyitems(config, items):
    """The tests marked `interpreter` and not `gpu` (the kernels run by Triton's interpreter on CPU tensors) skip, saying
    why, where the installed triton's interpreter cannot run the kernels (tests.helpers.triton_interpreter_problem)."""
    import pytest

    interpreted = [item for item in items
                   if item.get_closest_marker("interpreter") is not None and item.get_closest_marker("gpu") is None]
    if not interpreted:
        return
    from tests.helpers import triton_interpreter_problem

    problem = triton_interpreter_problem()
    if problem:
        for item in interpreted:
            item.add_marker(pytest.mark.skip(reason=problem))
