# one GPU session's work, run in the background on the lent machine (not part of the package)
J=/tmp/job; mkdir -p $J
source scripts/device_env.sh > $J/env.log 2>&1
python3 -m express4d_hf.cli benchmark --preset paper --models mdm --out runs/paper --no-multimodality --no-full-ddpm \
  --max-steps evaluator=1500 --max-steps mdm=6000 > $J/benchmark.log 2>&1
cp runs/paper/results.json $J/results.json
python3 bench/bench_mdm_samplers.py --run runs/paper ddpm:1000:0:2.5:0.7 --json $J/sweep.json > $J/sweep.log 2>&1
date > $J/done
