#!/usr/bin/env bash
# Session 6, device call A (nvidia-h200: the H100 kind was not lent this session): where the
# forward's time goes. Host vs device time of the default forward and forward+backward, forward
# tile variants, an ncu look at the bf16 and fp32 forward kernels (first issue shape), then the
# issue-4 table and the op-level scan2d bench, both host-inclusive and device-only, as the H200
# baseline of the session-5 kernels.
set -u
source "$(dirname "$0")/gpu_env.sh"
nvidia-smi --query-gpu=name,clocks.max.sm,driver_version --format=csv,noheader
timeout 200 python3 scripts/gpu_fwd_probe.py --shapes 0,1 --dtypes bf16,fp32 --bwd --profile-host \
  --variants '[{}, {"spw_fwd": 128}, {"T_fwd": 4}, {"warps": 2, "spw_fwd": 128}, {"pf": 0}]' \
  > "$OUT/probe.txt" 2>&1; echo "probe rc=$?"
for dt in bf16 fp32; do
  timeout 90 ncu --clock-control none -k regex:_scan_fwd_kernel --launch-skip 2 --launch-count 1 \
    --section SpeedOfLight --section Occupancy --section WarpStateStats --section SchedulerStats \
    --section LaunchStats --section ComputeWorkloadAnalysis \
    python3 scripts/gpu_scan_profile.py --shape 0 --dtype $dt > "$OUT/ncu_fwd_$dt.txt" 2>&1; echo "ncu $dt rc=$?"
done
issue4_table table
issue4_table table_dev --device-only
scan2d_table scan2d --level op
scan2d_table scan2d_dev --level op --device-only
grep -E "Duration|Registers Per|Achieved Occupancy|Issue Slots Busy|Eligible Warps|Active Warps Per|No Eligible|Warp Cycles Per Issued|Stall" "$OUT"/ncu_fwd_*.txt | cut -c1-150 | head -40
grep -v "^ " "$OUT/probe.txt" | head -30
tail -8 "$OUT/table.txt"; tail -7 "$OUT/table_dev.txt"
tail -12 "$OUT/scan2d.txt"; tail -12 "$OUT/scan2d_dev.txt"
