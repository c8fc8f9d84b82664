"""Benchmarks: scripts that print tables of measured figures with the machine they ran on.

One BLAS thread per process, as in the workers, set before NumPy is imported.
"""

import os

for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")
