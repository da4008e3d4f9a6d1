#!/usr/bin/env bash
# Depth-scaling full runs with statistical power (issue 22): four `testbed run depth-scaling` jobs, each a set of
# sub-studies whose fits need all their seeds in one process (the seed bootstrap resamples whole seeds), so they
# run as whole jobs — two at a time on 2 cores (JOBS=2) — rather than as per-seed sweep cells.
#   bash benchmarks/depth_scaling_power.sh OUT_ROOT [JOBS]  # → OUT_ROOT/{reuse,features,block2,sp}; JOBS e.g. reuse,sp
# Publish each as figures/depth-scaling/full-<name>/ (summary.csv, results.json, figures; testbed report).
set -euo pipefail
root=${1:?usage: depth_scaling_power.sh OUT_ROOT}
mkdir -p "$root"
run() { local name=$1; shift; python -m testbed run depth-scaling --out "$root/$name" --no-progress --threads 1 "$@" \
          > "$root/$name.log" 2>&1; echo "$name done: $(date -u +%FT%TZ)"; }

# (1) Wᵀ reuse: O(1/n) coupling at init at three depths, and the 1/L² effect on training at widths 64/256/512,
#     5 seeds, paired true/decoupled/other-init twins (100 Adam steps each).
reuse() { run reuse --study weight_reuse --seed 0 1 2 3 4 \
  --set 'weight_reuse.widths=[16,32,64,128,256]' 'weight_reuse.depths=[4,8,16,32,64]' \
        'weight_reuse.coupling_depths=[4,16,64]' 'weight_reuse.dynamics_widths=[64,256,512]' \
        'weight_reuse.dynamics_variants=["tracking","reinit"]' weight_reuse.steps=100; }

# (2) which layers stop learning: Depth-μP × block depth 1 / 2 (+ first-layer correction), Adam and SGD,
#     L = 4 … 256, 3 seeds (SP left out for time: the earlier one-seed full run has its exponents).
features() { run features --study features --seed 0 1 2 --set 'optimizers=["adam","sgd"]' sgd_lr=0.1 \
  'parameterizations=["depth_mup"]' 'features.depths=[4,16,64,256]'; }

# (3) block depth 2 and the correction: Depth-μP b=1 / b=2 / b=2 + L^0.5 correction, Adam and SGD, L = 4 … 256,
#     3 seeds, √2 learning-rate grids (11 points each), 300 steps, teacher-flow regression.
block2() { run block2 --study lr_transfer --seed 0 1 2 --set 'optimizers=["adam","sgd"]' \
  'parameterizations=["depth_mup"]' steps=300 'lr_transfer.tasks=["flow"]' 'lr_transfer.depths=[4,16,64,256]' \
  'lr_transfer.lr_grid=[0.007812,0.011049,0.015625,0.022097,0.03125,0.044194,0.0625,0.088388,0.125,0.176777,0.25]' \
  'lr_transfer.sgd_lr_grid=[0.015625,0.022097,0.03125,0.044194,0.0625,0.088388,0.125,0.176777,0.25,0.353553,0.5]'; }

# (4) μP vs SP transfer: SP and Depth-μP at block depth 1, Adam, L = 4 … 64, 5 seeds, a 12-octave grid wide enough
#     for SP's drifting optimum, teacher-flow regression (digits left out for time; the earlier one-grid run has it).
sp() { run sp --study lr_transfer --seed 0 1 2 3 4 --set 'block_depths=[1]' 'lr_transfer.tasks=["flow"]' \
  'lr_transfer.lr_grid=[0.000125,0.00025,0.0005,0.001,0.002,0.004,0.008,0.016,0.032,0.064,0.128,0.256]'; }

case "${2:-all}" in
  all) (reuse; sp) & (block2; features) & wait ;;
  *) for job in ${2//,/ }; do "$job"; done ;;   # e.g. `… OUT reuse,sp`: these jobs, one after another
esac
