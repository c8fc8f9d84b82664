"""RQ workers that classify batches of scanned-digit images with the current theta version.

One BLAS thread per worker process: scale with processes, not threads. Two BLAS threads in
one process collapse when the other core is busy, so this is set before NumPy is imported.
"""

import os

for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")
