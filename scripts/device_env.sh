# Source on a lent GPU machine (see docs/BENCHMARKS.md): installs the carried wheels and points the
# default text encoder at the carried fp16 copy of all-MiniLM-L6-v2 (the PyPI wheel is over the carry limit).
# Both are copied out of the checkout first: a later call that does not carry them removes them there,
# under any background job still using them.
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || return 1
rm -rf /tmp/express4d-gpu && cp -r .gpu /tmp/express4d-gpu || return 1
export PYTHONPATH=/tmp/site:/tmp/express4d-gpu/shim:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
export EXPRESS4D_CACHE=$PWD/runs/cache TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
