"""How one recurrent layer runs: the dispatch policy and the implementations it chooses from.

* :mod:`~rnnkit.models.kernels.dispatch`: :func:`run_layer` (what encoders call),
  :func:`choose_kernel` (the policy, by measurement), :func:`prepare` (build ahead of training);
* :mod:`~rnnkit.models.kernels.cpp_loop`: rnnkit's compiled C++ time loop (``csrc/``);
* :mod:`~rnnkit.models.kernels.python_loop`: the same loop in Python, where no compiler exists.
"""

from rnnkit.models.kernels.dispatch import (
    INT8,
    KERNELS,
    choose_kernel,
    prepare,
    run_layer,
    run_recurrent,
)

__all__ = ["INT8", "KERNELS", "choose_kernel", "prepare", "run_layer", "run_recurrent"]
