# Ringfence: `make run` starts the product, `make test` runs every check.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
# Front-end packages from the npm registry, copied where settings serve static files from.
VENDOR := $(or $(RINGFENCE_VAR_DIR),var)/vendor
CHARTS_JS := $(VENDOR)/lightweight-charts/lightweight-charts.standalone.production.js

.PHONY: run test deps lint bench services chromium clean

$(VENV)/.installed: requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	touch $@

# npm ci installs exactly the versions pinned in package-lock.json (which records no URLs).
$(CHARTS_JS): package.json package-lock.json
	npm ci --omit-lockfile-registry-resolved --no-audit --no-fund --loglevel=error
	mkdir -p $(dir $@)
	cp node_modules/lightweight-charts/dist/lightweight-charts.standalone.production.js $@
	cp node_modules/lightweight-charts/LICENSE $(dir $@) 2>/dev/null || true

deps: $(VENV)/.installed $(CHARTS_JS)

run: deps
	mkdir -p $${RINGFENCE_VAR_DIR:-var}
	$(PY) manage.py migrate --noinput
	@if $(PY) manage.py help seed_demo >/dev/null 2>&1; then $(PY) manage.py seed_demo; fi
	PORT=$(PORT) bin/run

# Debian's Chromium drives the browser tests (Playwright cannot download browsers here).
chromium:
	@command -v chromium >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

services: deps
	$(PY) bin/check_services

lint: deps
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy .
# An embedded database, so the migration history check needs no server.
	DJANGO_SETTINGS_MODULE=config.settings_test DATABASE_URL=sqlite:///:memory: $(PY) manage.py makemigrations --check --dry-run

test: deps chromium services lint
	$(PY) -m pytest

bench: deps services
	$(PY) -m bench

clean:
	rm -rf $(VENV) var node_modules
