#!/usr/bin/env bash
# Fill .whl/ (and .ref/S-CMRL) here, before a device visit, with what benchmarks/gpu_checks.sh needs on the GPU
# image that the image lacks (its python3 is 3.12 with torch, torchaudio and torchvision 2.11, h5py, einops, timm and
# OpenCV): our prepare and loader (webdataset, PyAV, soundfile, librosa and their small dependencies), and for the
# authors' side tonic and torchcodec (torchaudio 2.11 reads audio through torchcodec 0.11, which needs FFmpeg's
# shared libraries: gpu_checks.sh links those of the PyAV wheel, FFmpeg 8, under their plain names). The device
# tool carries at most 64 MiB a call: this comes to about 55 MB with the repository.
#   bash benchmarks/gpu_carry.sh /path/to/S-CMRL-checkout
#   run: carry [".whl", ".ref"], command: SCMRL_REFERENCE=.ref/S-CMRL SCMRL_REFERENCE_PYTHON=python3 bash benchmarks/gpu_checks.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ref=${1:-}
rm -rf .whl && mkdir -p .whl
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
           --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" \
  -d .whl webdataset braceexpand "av==18.1.0" soundfile librosa soxr audioread pooch decorator platformdirs \
  tonic importRosbag pbr "torchcodec==0.11.1"
if [ -n "$ref" ]; then
  rm -rf .ref && mkdir -p .ref/S-CMRL
  if git -C "$ref" rev-parse --git-dir >/dev/null 2>&1; then  # a clone or a bare mirror; .ref/ is ignored
    git -C "$ref" archive HEAD | tar -x -C .ref/S-CMRL
  else
    cp -r "$ref"/. .ref/S-CMRL/
  fi
fi
du -sh .whl ${ref:+.ref}
