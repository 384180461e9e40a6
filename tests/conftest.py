import os

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

# Under pytest-xdist (`make test` runs one worker per core) each worker, and every CLI subprocess it starts,
# gets an equal share of the cores, so that the workers' torch thread pools do not oversubscribe the machine.
if "PYTEST_XDIST_WORKER_COUNT" in os.environ:
    _share = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ["OMP_NUM_THREADS"] = str(_share)
    os.environ["MKL_NUM_THREADS"] = str(_share)
