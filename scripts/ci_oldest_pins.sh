#!/usr/bin/env bash
# The TRL adapter's tests and example on the oldest trl and transformers that pyproject.toml allows.
#
# Why: the adapter hooks into Trainer internals whose order changed between transformers 4.x and 5.x
# (resume once broke on 4.x only), so the floors are tested, not just the newest releases.
# How: the floors are read from pyproject.toml and installed with the releases they need that the main
# environment has too new (tokenizers, huggingface-hub, datasets, fsspec, transformer-lens) into an
# overlay folder in front of the active environment; torch and the rest are shared, so this costs one
# small download. `pip check` then proves the overlaid environment is one pip could install.
# Run inside the activated test environment (the README's test command chains it).
set -euo pipefail
cd "$(dirname "$0")/.."

floor() {  # the version in the first "NAME>=VERSION" of pyproject.toml
  sed -n "s/.*\"$1>=\([0-9][0-9.]*\)\".*/\1/p" pyproject.toml | head -n 1
}
transformers_floor=$(floor transformers)
trl_floor=$(floor trl)
[[ -n $transformers_floor && -n $trl_floor ]] || { echo "ci_oldest_pins: no transformers/trl floor in pyproject.toml" >&2; exit 1; }

overlay=$PWD/build/oldest-pins
rm -rf "$overlay"
python -m pip install --quiet --no-deps --target "$overlay" \
  "transformers==$transformers_floor" "trl==$trl_floor" \
  tokenizers==0.22.1 huggingface-hub==0.36.0 datasets==4.8.5 fsspec==2026.2.0 transformer-lens==3.2.1
export PYTHONPATH="$overlay${PYTHONPATH:+:$PYTHONPATH}"
python -m pip check
python - "$overlay" "$transformers_floor" "$trl_floor" <<'PY'
import importlib, importlib.metadata, sys
from packaging.version import Version
overlay, *floors = sys.argv[1:]
for name, floor in zip(("transformers", "trl"), floors):
    module, version = importlib.import_module(name), importlib.metadata.version(name)
    ok = Version(version) == Version(floor) and module.__file__.startswith(overlay)
    assert ok, f"overlay not in effect: {name} {version} from {module.__file__}, want {floor} from {overlay}"
    print(f"oldest pins: {name} {version}")
PY
python -m pytest -q tests/test_adapter_trl.py "tests/test_adapter_examples.py::test_trl_example_builds_its_curriculum_trains_in_saerl_order_and_resumes"
