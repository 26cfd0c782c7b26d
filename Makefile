# Eco² — the two commands: `make run` (web + worker + beat) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PORT ?= 8000
export PORT
# One origin for the links in e-mails, for every process of `make run`: honcho gives each
# process a PORT of its own (web 8000, worker-ai 8100, …), so the workers must not derive the
# site's address from theirs. A SITE_URL in the environment or in .env wins.
SITE_URL ?= http://localhost:$(PORT)
export SITE_URL

# Real services for the second test pass (CI runs it against loopback services).
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/test
TEST_BROKER_URL ?= amqp://guest:guest@127.0.0.1:5672//
TEST_REDIS_URL ?= redis://127.0.0.1:6379/15
# The quorum-queue pass (CELERY_QUEUE_TYPE=quorum) needs a vhost of its own: a queue's type
# cannot change in a vhost, and the other pass declares classic queues.
TEST_QUORUM_VHOST ?= eco2-quorum-test
TEST_QUORUM_BROKER_URL ?= amqp://guest:guest@127.0.0.1:5672/$(TEST_QUORUM_VHOST)

.PHONY: run test test-embeddings test-embedded test-services test-real-services test-quorum lint check format install clean messages makemessages

# Dependencies come from the lock (README "Dependencies"): requirements/dev.txt pins every
# package of pyproject.toml's ranges, runtime and dev, with the hash of each file. The install
# ignores pip's configuration files, find-links, constraints and extra indexes (a local wheel
# may have another hash than the index's file); a mirror of PyPI goes in PIP_INDEX_URL.
LOCK := requirements/dev.txt
RUNTIME_LOCK := requirements/runtime.txt
LOCKED_PIP := env -u PIP_FIND_LINKS -u PIP_CONSTRAINT -u PIP_EXTRA_INDEX_URL -u PIP_NO_INDEX \
	PIP_CONFIG_FILE=/dev/null
DEPS_STAMP := $(VENV)/.locked

# The locked packages, reinstalled when the lock changes: the locked pip first (it installs the
# rest a third faster than Python 3.11's own), then everything. Then the project without
# dependencies; `pip check` fails when pyproject.toml asks for something the lock does not
# have: run `make lock`.
$(DEPS_STAMP): $(LOCK)
	$(PYTHON) -m venv $(VENV)
	awk '/^pip==/ {p=1; print; next} p && /^ +--hash=/ {print; next} {p=0}' $(LOCK) > $(VENV)/pip.lock
	$(LOCKED_PIP) $(BIN)/pip install --quiet --require-hashes --no-deps -r $(VENV)/pip.lock
	$(LOCKED_PIP) $(BIN)/pip install --quiet --require-hashes --no-deps -r $(LOCK)
	touch $@

$(STAMP): $(DEPS_STAMP) pyproject.toml
	$(LOCKED_PIP) $(BIN)/pip install --quiet --no-deps --no-build-isolation .
	@$(BIN)/pip check || { echo "pyproject.toml and $(LOCK) disagree: run 'make lock'" >&2; exit 1; }
	touch $(STAMP)

install: $(STAMP)

# Regenerate the lock after changing a dependency or its range in pyproject.toml (keeps every
# other pin); `make lock-upgrade` moves every package to its newest release within the ranges,
# `make lock LOCK_ARGS="-P celery"` one package. Commit requirements/ with pyproject.toml.
COMPILE := $(LOCKED_PIP) $(BIN)/pip-compile --quiet --generate-hashes --allow-unsafe \
	--strip-extras --no-emit-index-url --no-emit-find-links $(LOCK_ARGS)
.PHONY: lock lock-upgrade audit
lock: $(DEPS_STAMP)
	$(COMPILE) --output-file=$(RUNTIME_LOCK) pyproject.toml
	$(COMPILE) --extra=dev --constraint=$(RUNTIME_LOCK) --output-file=$(LOCK) pyproject.toml

lock-upgrade:
	$(MAKE) --no-print-directory lock LOCK_ARGS="--upgrade $(LOCK_ARGS)"

# pip-audit against the lock (requirements/audit.py): a known vulnerability fails, unless
# requirements/audit-accepted.txt accepts it; without a route to the advisory service it warns,
# or fails with AUDIT_REQUIRED=1 (set it where CI can reach PyPI).
audit: $(DEPS_STAMP)
	$(BIN)/python requirements/audit.py --lock $(LOCK) --accepted requirements/audit-accepted.txt

run: $(STAMP) messages
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py load_rulebase --if-empty
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0
	$(BIN)/python manage.py ensure_demo_user --banner
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/honcho start --procfile Procfile --port $(PORT)

# Translations: locale/{ko,en}/LC_MESSAGES/django.po are committed, the compiled .mo files are
# not (gitignored): run and test compile them. After changing user-facing strings, run
# `make makemessages`, translate the new entries in locale/ko, then commit the .po files.
# A catalogue is compiled only when its .po changed: the test passes run side by side and each
# runs `make run` in a test, and a .mo rewritten while another process reads it reads cut short.
MO_FILES := $(patsubst %.po,%.mo,$(wildcard locale/*/LC_MESSAGES/django.po))
messages: $(MO_FILES)

locale/%/LC_MESSAGES/django.mo: locale/%/LC_MESSAGES/django.po | $(STAMP)
	$(BIN)/python manage.py compilemessages --locale $* --ignore=.venv --ignore=var --ignore=build --verbosity 0

makemessages: $(STAMP)
	$(BIN)/python manage.py makemessages -l ko -l en --no-obsolete \
		--ignore=.venv --ignore=var --ignore=build --ignore=tests --ignore=bench

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Guards: the models and their migrations agree; the OpenAPI schema builds without a warning.
check: $(STAMP)
	$(BIN)/python manage.py makemigrations --check --dry-run --verbosity 1
	$(BIN)/python manage.py spectacular --validate --fail-on-warn --file /dev/null
	$(BIN)/lint-imports --no-cache
	$(MAKE) --no-print-directory typecheck

# mypy over the whole project; the errors of mypy-baseline.txt are known and tolerated, a new
# one fails, and a fixed one must leave the file too (`make typecheck-baseline` rewrites it).
MYPY_PATHS := eco2 scans notifications bench tests docker requirements manage.py flowerconfig.py
.PHONY: typecheck typecheck-baseline
typecheck: $(STAMP)
	$(BIN)/mypy $(MYPY_PATHS) | $(BIN)/mypy-baseline filter --hide-stats

typecheck-baseline: $(STAMP)
	$(BIN)/mypy $(MYPY_PATHS) | $(BIN)/mypy-baseline sync

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The two passes share nothing (embedded: SQLite and a broker in folders; real services:
# PostgreSQL, RabbitMQ, Redis), so they run side by side, each printing its report when it
# ends: most of a pass is spent waiting for workers, and one after the other took over 30 min.
test: lint check audit test-embeddings
	$(MAKE) --no-print-directory -j2 --output-sync=target test-embedded test-real-services

# The rule base's alias embeddings, computed once before the passes start (a fresh checkout).
test-embeddings: $(STAMP)
	$(BIN)/python -m tests.support.embeddings

# The quorum run after the real-services pass, not beside it: that pass's chaos tests stop
# RabbitMQ and Redis.
test-real-services: test-services
	$(MAKE) --no-print-directory test-quorum

test-embedded: $(STAMP) messages
	$(BIN)/pytest

# Skips with a message when the services are not running locally; fails in CI (CI=true).
test-services: $(STAMP) messages
	DATABASE_URL=$(TEST_DATABASE_URL) CELERY_BROKER_URL=$(TEST_BROKER_URL) REDIS_URL=$(TEST_REDIS_URL) \
		ECO2_TEST_SERVICES=1 $(BIN)/pytest

# The pipeline and the poison messages again on quorum queues (tests/integration/quorum/), in
# their own vhost, created here when rabbitmqctl is at hand (CI runs as root beside RabbitMQ).
test-quorum: $(STAMP) messages
	@if command -v rabbitmqctl >/dev/null 2>&1; then \
		rabbitmqctl -q list_vhosts | grep -qx '$(TEST_QUORUM_VHOST)' \
			|| rabbitmqctl -q add_vhost '$(TEST_QUORUM_VHOST)'; \
		rabbitmqctl -q set_permissions -p '$(TEST_QUORUM_VHOST)' guest '.*' '.*' '.*'; \
	fi
	DATABASE_URL=$(TEST_DATABASE_URL) CELERY_BROKER_URL=$(TEST_QUORUM_BROKER_URL) \
		REDIS_URL=$(TEST_REDIS_URL) ECO2_TEST_SERVICES=1 \
		CELERY_QUEUE_TYPE=quorum CELERY_DELIVERY_LIMIT=2 $(BIN)/pytest tests/integration/quorum/

# Flower (task monitor): needs FLOWER_BASIC_AUTH=user:password (see flowerconfig.py)
.PHONY: flower
flower: $(STAMP)
	$(BIN)/celery -A eco2 flower --port=$${FLOWER_PORT:-5555}

clean:
	rm -rf $(VENV) var .pytest_cache .ruff_cache .mypy_cache

# The deployment files (docker/, .dockerignore) checked without a Docker engine.
.PHONY: check-deploy
check-deploy: $(STAMP)
	$(BIN)/pytest -q tests/deploy/
