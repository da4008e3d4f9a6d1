"""Sub-studies of the depth-scaling experiment (registered in ``testbed.experiments.depth_scaling.STUDIES``).

Each sub-study module defines its own settings ``Config`` (a field of the depth-scaling config of the same name),
``run(cfg, out)``, ``plot(out)`` and ``summary(rows)`` (``lr_transfer`` also ``run_with_summary(cfg, out)``, one
seed bootstrap for both): ``convergence``, ``lr_transfer`` (with its batched trainer
``lr_transfer_lanes`` and figures ``lr_transfer_plot``), ``features`` and ``weight_reuse`` (with the autograd
Function, network and estimators in ``reuse_net`` and the figure in ``weight_reuse_plot``).
"""
