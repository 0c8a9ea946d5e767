# Everything a newcomer needs: `make run` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Real npm peers for the protocol tests: Node 22 (from the npm registry), the official conformance
# suite (0.1.16 for the session era, 0.2.0-alpha.12 under another name for 2026-07-28), the
# reference server-everything and server-filesystem, and the MCP Inspector CLI. Pinned; installed once.
NODE_DIR := .cache/node
NODE_MODULES := $(NODE_DIR)/node_modules
NODE_STAMP := $(NODE_DIR)/.installed-3
NPM_PEERS := node@22 @modelcontextprotocol/conformance@0.1.16 \
	conformance-2026@npm:@modelcontextprotocol/conformance@0.2.0-alpha.12 \
	@modelcontextprotocol/server-everything@2026.8.31 @modelcontextprotocol/server-filesystem@2026.8.31 \
	@modelcontextprotocol/inspector@2.12.0

.PHONY: run test lint conformance bench clean system

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

## run: start the two demo upstreams and the hub on examples/config.json (Ctrl-C stops all)
run: $(STAMP)
	$(BIN)/python -m examples.demo_upstreams & demo=$$!; \
	trap 'kill $$demo 2>/dev/null' EXIT INT TERM; \
	$(BIN)/python -m examples.demo_upstreams --wait && \
	$(BIN)/manifold serve --config examples/config.json

## lint: ruff and mypy (strict)
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

$(NODE_STAMP):
	mkdir -p $(NODE_DIR)
	cd $(NODE_DIR) && { [ -f package.json ] || npm init -y >/dev/null; } && \
		npm install --no-audit --no-fund --loglevel=error $(NPM_PEERS)
	touch $@

## conformance: the official MCP conformance suite against the fixture, directly and through the hub
conformance: $(STAMP) $(NODE_STAMP)
	$(BIN)/python -m tests.conformance.run --node-modules $(NODE_MODULES)

## system: the Debian packages the suite needs: bubblewrap (the sandbox of local servers), util-linux's
## setpriv (a hub run as root), chromium (the admin page's test), redis-server (the Redis store's and
## the replicas' tests) and haproxy (the load balancer of the replicas' benchmark, which the suite
## runs briefly); installed with apt-get when missing and possible, or named exactly when not
SYSTEM_NEEDS := bwrap:bubblewrap setpriv:util-linux chromium:chromium redis-server:redis-server haproxy:haproxy
system:
	@missing=""; for need in $(SYSTEM_NEEDS); do \
		command -v $${need%%:*} >/dev/null || missing="$$missing $${need##*:}"; \
	done; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
			echo "installing Debian packages:$$missing"; \
			DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null || \
			{ apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$missing >/dev/null; } || \
			{ echo "could not install:$$missing (run: sudo apt-get install$$missing)"; exit 1; }; \
		else \
			echo "missing Debian packages:$$missing (run: sudo apt-get install$$missing)"; exit 1; \
		fi; \
	fi; \
	bwrap --unshare-all --ro-bind /usr /usr --symlink usr/lib /lib --symlink usr/lib64 /lib64 -- /usr/bin/true || \
		{ echo "bubblewrap is installed but cannot make namespaces here (user namespaces disabled?)"; exit 1; }

## test: lint, the conformance comparison, then the whole pytest suite (with the npm peers and system packages)
test: lint conformance system
	MANIFOLD_NODE_MODULES=$(CURDIR)/$(NODE_MODULES) $(BIN)/pytest

## bench: the hub against the direct call, same run (prints a table, writes bench/results/latest.json)
bench: $(STAMP) system
	$(BIN)/python -m bench.run

clean:
	rm -rf $(VENV) .cache .mypy_cache .ruff_cache .pytest_cache *.egg-info
