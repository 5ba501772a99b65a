#!/usr/bin/env bash
# Fine-tune the shipped network on the lent GPU machine in one call of the device tool:
#
#     run(command="bash scripts/gpu_train.sh", timeout_s=560)
#
# That machine's image has torch, timm, transformers, scikit-image, scipy and safetensors but not
# SimpleITK or pydicom (and nothing can be installed from the network there), so the training
# cases are generated in memory (`ctreport train --synthetic`, no file written or read) by
# WORKERS processes. The model folder comes back under $OUT (the device tool's folder; here
# OUT defaults to /tmp/ctreport_gpu_out). Evaluate it here afterwards, mixed back into the
# shipped model as 1.2.0 was (docs/MODEL_CARD.md, "Training on a lent GPU").
#
# Real backgrounds: REAL_FRACTION (0.15, as for the shipped model's training sets) of the cases
# are lesions inserted into the lesion-free real CTs saved beforehand, on this machine, by
# `scripts/save_backgrounds.py` (NumPy files in .cache/backgrounds, which travel with carry):
#
#     .venv/bin/python scripts/save_backgrounds.py
#     run(command="bash scripts/gpu_train.sh", carry=[".cache/backgrounds"], timeout_s=560)
#
# Without them (BACKGROUNDS empty or no such files) every case is a phantom.
#
# Environment: N cases (600); SEED, the dataset seed (20000: no earlier training set used it,
# and the evaluation sets use 900000 and up); MINUTES of training wall time, loading included
# (6); WORKERS (14), the processes that make the cases; PATCH_WORKERS (12), those that cut
# the training patches while the GPU steps; DEVICE (cuda); INIT (default); LR (3e-4); BATCH
# (32); ROTATE degrees (12); SUBSOLID_WEIGHT (2): lesion patches are centred on ground-glass and
# part-solid nodules this many times as often as on others (the kinds the shipped model finds
# least, docs/MODEL_CARD.md "Per kind"); VERSION (1.3.0-rc).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/ctreport_gpu_out}
MODEL=$(mktemp -d)/model
BG=()
for f in ${BACKGROUNDS-.cache/backgrounds/*.npz}; do
    if [ -f "$f" ]; then BG+=(--synthetic-background "$f"); fi
done
echo "real backgrounds: $(( ${#BG[@]} / 2 )) (fraction ${REAL_FRACTION:-0.15})"
python3 -c "import torch, timm, transformers; print('torch', torch.__version__, \
'cuda', torch.cuda.is_available(), 'timm', timm.__version__, 'transformers', transformers.__version__)"
python3 -m napari_ctreport.cli train --synthetic "${N:-600}" --synthetic-seed "${SEED:-20000}" \
    ${BG[@]+"${BG[@]}"} --synthetic-real-fraction "${REAL_FRACTION:-0.15}" \
    --workers "${WORKERS:-14}" --patch-workers "${PATCH_WORKERS:-12}" \
    --init "${INIT:-default}" --epochs 10000 \
    --max-minutes "${MINUTES:-6}" --device "${DEVICE:-cuda}" --lr "${LR:-3e-4}" \
    --batch-size "${BATCH:-32}" --rotate-deg "${ROTATE:-12}" --seed 28 \
    --kind-weight "ground-glass nodule=${SUBSOLID_WEIGHT:-2}" \
    --kind-weight "part-solid nodule=${SUBSOLID_WEIGHT:-2}" \
    --name ctreport-default --model-version "${VERSION:-1.3.0-rc}" --out "$MODEL" --overwrite
mkdir -p "$OUT"
# at most 8 files come back from the device tool: the model folder without its checkpoints
cp "$MODEL"/config.json "$MODEL"/model.safetensors "$MODEL"/tokenizer.json \
    "$MODEL"/tokenizer_config.json "$MODEL"/training_log.json "$MODEL"/MODEL_CARD.md "$OUT"/
ls -l "$OUT"
# steps done, and the share of the training time the GPU waited for patches (more PATCH_WORKERS
# if it is large)
python3 -c "import json, sys; t = json.load(open(sys.argv[1]))['training']; \
print('steps', t['steps'], 'patch workers', t['patch_workers'], 'waited', t['patch_wait_share'])" \
    "$OUT"/config.json
