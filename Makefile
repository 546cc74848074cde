# Two commands: `make run` (set up and run the studio) and `make test` (the whole suite).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
ADDRPORT ?= 127.0.0.1:8000
ENV_FILE := .env

.PHONY: run test install lint benchmark soak clean

run: $(STAMP) $(ENV_FILE)
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py seed_demo
	@echo "Open http://$(ADDRPORT)/"
	$(BIN)/python manage.py runstudio --addrport $(ADDRPORT)

# Three sessions side by side (pytest-xdist): most tests wait on a worker cluster, a web
# server or a browser, so even on this 2-core machine three finish in 0.76 of the time two
# take (and two in about half of one). Each session has its own database, queue, media and
# cache (tests/settings.py).
PYTEST_WORKERS ?= 3
test: $(STAMP)
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

install: $(STAMP)

# The randomized model test (tests/test_model.py) for longer: fresh seeds, round after
# round, until SOAK_MINUTES are up; prints the examples run and the first failure found.
SOAK_MINUTES ?= 10
soak: $(STAMP)
	STUDIO_MODEL_SOAK_MINUTES=$(SOAK_MINUTES) STUDIO_MODEL_EXAMPLES=$${STUDIO_MODEL_EXAMPLES:-50} \
		$(BIN)/pytest tests/test_model.py -p no:cacheprovider -s --show-capture=no

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# A database of its own (unless DATABASE_URL names one): any worker takes any project's next
# job, so the benchmark's workers would draw the studio's queued pages with a fake service.
BENCHMARK_DATABASE_URL ?= sqlite:///$(CURDIR)/var/benchmark.sqlite3
benchmark: $(STAMP) $(ENV_FILE)
	mkdir -p var
	DATABASE_URL=$${DATABASE_URL:-$(BENCHMARK_DATABASE_URL)} $(BIN)/python manage.py migrate --noinput
	DATABASE_URL=$${DATABASE_URL:-$(BENCHMARK_DATABASE_URL)} $(BIN)/python manage.py benchmark

# This checkout's development settings, written once and never overwritten (settings read
# it; the environment wins over it). Delete it to start over; production has none.
$(ENV_FILE):
	@echo "Writing $@: development mode and a fresh secret key (git-ignored)"
	@$(PYTHON) -c 'import secrets; print("DJANGO_DEBUG=true"); print("DJANGO_SECRET_KEY=" + secrets.token_urlsafe(50))' > $@.tmp
	@mv $@.tmp $@

# Style, formatting and the layering (the import contracts in pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) var test-artifacts
