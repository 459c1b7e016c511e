#!/usr/bin/env bash
# The shop_zh LoRA job of the CPU run, on a GPU machine; prints tokens/s at the end.
#
#   ./bench/gpu_lora_run.sh                   # one GPU (device auto-detected)
#   GPUS=4 ./bench/gpu_lora_run.sh            # several GPUs through `accelerate launch`
#
# Defaults are the CPU run of the factory issue note, step for step (embedded SmolLM2-135M,
# shop_zh demo, label > 0.7, teach_handoff, seed 0, no context, 384 tokens, lr 1e-3, batch 2,
# 8 steps), so the tokens/s compare directly. A GPU-sized run of the same job:
#   STEPS=200 BATCH=16 SEQ=1024 CONTEXT=true ./bench/gpu_lora_run.sh
# Nothing is downloaded besides what ./setup.sh installs.
set -euo pipefail
cd "$(dirname "$0")/.."
./setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export CSFORGE_HOME=${CSFORGE_HOME:-$PWD/var}
export CSFORGE_REGISTRY=${CSFORGE_REGISTRY:-$CSFORGE_HOME/registry-gpu-bench.yaml}   # leave the tracked registry.yaml alone
STEPS=${STEPS:-8}
BATCH=${BATCH:-2}
SEQ=${SEQ:-384}
LR=${LR:-1e-3}
CONTEXT=${CONTEXT:-false}
GPUS=${GPUS:-1}
NAME=${NAME:-shop_zh-lora-gpu-$(date +%Y%m%d-%H%M%S)}

.venv/bin/python -c "import torch; print('cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '-')"
.venv/bin/python -m core.local_provider convert   # the embedded model, converted once

ARGS=(train --customer shop_zh --method lora --name "$NAME" --device auto --seed 0
      --max-steps "$STEPS" --eval-steps "$STEPS" --batch-size "$BATCH" --max-seq-len "$SEQ" --lr "$LR"
      --set include_context="$CONTEXT" --set val_fraction=0.06 --set lora.warmup_steps=1)
if [ "$GPUS" -gt 1 ]; then
  .venv/bin/accelerate launch --num_processes "$GPUS" -m core.factory "${ARGS[@]}"
else
  .venv/bin/python -m core.factory "${ARGS[@]}"
fi

.venv/bin/python - "$NAME" <<'EOF'
import sys
from core import registry
t = registry.get(sys.argv[1]).training
m = t["metrics"]
print(f"model {sys.argv[1]}: {t['hardware'].get('gpu', t['hardware']['device'])}")
print(f"steps {t['hyperparameters']['steps']}, train wall {m['train_wall_s']:.1f} s, "
      f"val loss {m['val_loss_before']:.4f} -> {m['val_loss_after']:.4f}")
print(f"tokens/s (non-padding, training): {m['tokens_per_s']:.0f}")
print(f"report: {t['report']}")
EOF
