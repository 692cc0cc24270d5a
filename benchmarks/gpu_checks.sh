#!/usr/bin/env bash
# What a session lent a GPU runs (via the device tool), in one go, most needed first (a lease can end before
# the last step): the CUDA tests, the benchmarks on the GPU, and short real runs of scmrl-train on CUDA (single process, bf16) and under torchrun (NCCL).
# The GPU image has torch, Triton, typer, rich and OpenCV but not webdataset, PyAV, soundfile, librosa,
# tonic or torchcodec: `bash benchmarks/gpu_carry.sh <S-CMRL checkout>` puts their wheels in .whl/ (and the
# checkout in .ref/S-CMRL) first; carry both.
# SCMRL_REFERENCE=<checkout of Brain-Cog-Lab/S-CMRL> adds the training step against the authors' code at
# batch 128 (their code also needs einops: add its wheel to .whl/). Results go to $OUT (or ./gpu-results).
set -uo pipefail  # each step has its own timeout so one hang cannot spend the whole lease
OUT=${OUT:-gpu-results}; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then  # benchmarks/gpu_carry.sh fills .whl/
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
  if ls /tmp/site/av.libs/libavutil-*.so.* >/dev/null 2>&1; then
    # torchcodec (torchaudio's audio reader) opens FFmpeg by its plain sonames: those of the PyAV wheel, linked
    mkdir -p /tmp/ffmpeg-libs
    for f in /tmp/site/av.libs/lib{avcodec,avdevice,avfilter,avformat,avutil,swresample,swscale}-*.so.*; do
      b=$(basename "$f"); ln -sf "$f" "/tmp/ffmpeg-libs/${b%%-*}.so.$(echo "$b" | sed -E 's/.*\.so\.([0-9]+).*/\1/')"
    done
    export LD_LIBRARY_PATH=/tmp/ffmpeg-libs:/tmp/site/av.libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  fi
else
  export PYTHONPATH=$PWD
fi
export PYTHONUNBUFFERED=1 AVDATA_NO_PROGRESS=1 MPLBACKEND=Agg
step() { echo; echo "=== $* ==="; }
step environment
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
step "CUDA tests"
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_lif_triton.py tests/test_lif_pool_triton.py tests/test_triton_build.py tests/test_kernel_check.py tests/test_lif.py tests/test_models.py tests/test_attention.py 2>&1 | tee "$OUT/tests.txt" | tail -5
if [ -n "${SCMRL_REFERENCE:-}" ]; then  # a checkout of the authors' repository (and einops, e.g. in .whl/)
  step "training step against the authors' code, batch 128"
  timeout 150 python3 benchmarks/train_step_vs_reference.py --reference "$SCMRL_REFERENCE" --device cuda --batch 128 \
    --check --rounds 2 2>&1 | tee "$OUT/train_step_vs_reference.txt" | tail -8
  step "the same, their step under autocast as well"
  timeout 150 python3 benchmarks/train_step_vs_reference.py --reference "$SCMRL_REFERENCE" --device cuda --batch 128 \
    --theirs-amp --rounds 2 2>&1 | tee "$OUT/train_step_vs_reference_amp.txt" | tail -8
fi
step "a whole training epoch against the authors' (their loader + step), CREMA-D-sized"
# their side needs SCMRL_REFERENCE and an environment with torchvision, torchaudio, h5py, tonic and einops
# (SCMRL_REFERENCE_PYTHON); without them our side alone. EPOCH_CLIPS=7442 is CREMA-D's size. `avdata prepare`
# needs PyAV and soundfile: add their wheels to .whl/ where the image lacks them.
EPOCH_WORKERS=${EPOCH_WORKERS:-8}  # their get_CREMAD_data's fixed worker count
timeout 540 python3 benchmarks/epoch_vs_reference.py --device cuda --epoch --clips "${EPOCH_CLIPS:-7442}" \
  --jobs "$(nproc)" --batch 128 --workers "$EPOCH_WORKERS" --rounds 1 --json "$OUT/epoch_vs_reference.json" \
  2>&1 | tee "$OUT/epoch_vs_reference.txt" | tail -16
step "scmrl-train on CUDA (synthetic task)"
python3 -c "from scmrl.data.synthetic import make_synthetic_av_shards as m; m('/tmp/syn', n_train=512, n_val=128, n_test=128)"
timeout 120 python3 -m scmrl.cli.train_app --shards /tmp/syn --out /tmp/run1 --device cuda --epochs 6 --batch-size 32 \
  --embed-dim 64 --heads 4 --image-size 64 --lr 2e-3 --warmup-epochs 1 2>&1 | tee "$OUT/train_cuda.txt" | tail -25
step "torchrun, 1 process, NCCL"
timeout 90 torchrun --standalone --nproc_per_node 1 -m scmrl.cli.train_app --shards /tmp/syn --out /tmp/run2 --device cuda \
  --epochs 2 --batch-size 32 --embed-dim 64 --heads 4 --image-size 64 2>&1 | tee "$OUT/train_torchrun.txt" | tail -12
step "input pipeline benchmark"
timeout 120 python3 benchmarks/input_pipeline.py --device cuda --model-batch 128 --samples 2048 --epochs 3 ${PIPE_ARGS:-} 2>&1 | tee "$OUT/input_pipeline.txt"
step "LIF + training-step benchmark"
timeout 120 python3 benchmarks/lif_bench.py --device cuda ${LIF_BENCH_ARGS:-} 2>&1 | tee "$OUT/lif_bench.txt"
step "where the fused training step spends its time"
timeout 90 python3 benchmarks/profile_step.py --device cuda --rows 25 2>&1 | tee "$OUT/profile_step.txt" | tail -30
