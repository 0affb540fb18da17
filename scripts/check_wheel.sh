#!/usr/bin/env bash
# What a user of the wheel gets: build it, install it with its dependencies in a fresh venv, and
# from an unrelated directory run the README's main job and an MLLM dry run (which must find the
# packaged prompts). Part of the README's test command (and so of CI).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m pip wheel -q --no-deps --no-build-isolation -w "$work/dist" "$repo"
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install -q "$(ls "$work"/dist/mmad-*.whl)[conventional]"
mkdir "$work/elsewhere" && cd "$work/elsewhere"
export PATH="$work/venv/bin:$PATH"
mmad data synth && mmad score --provider patchcore --dataset synth -q && mmad eval results/patchcore-3shot
env -u OPENAI_API_KEY mmad score --provider openai --dataset synth --dry-run > dry-run.txt
grep -q '"Normal Image 1:"' dry-run.txt && grep -q "non-defect category of brick" dry-run.txt
python -c "import importlib.util as u; assert u.find_spec('mmad_conventional') and not u.find_spec('conventional')"
python -c "import mmad; [m] = mmad.dataset_means(mmad.evaluate('results/patchcore-3shot')); assert m.dataset == 'synth'"
echo "wheel check: the installed wheel scored, evaluated and built a request from $work/elsewhere"
