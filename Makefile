# The two front-door commands (README.md): `make demo` and `make test`.
# Both install what a fresh Debian/Ubuntu machine lacks (redis-server,
# redis-tools, redis-sentinel, and chromium for the dashboard's browser
# test) and need only Rust (cargo) besides.

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
CARGO ?= cargo
# The features tests, lints and release builds use: span export over OTLP
# (`otel`, docs/design.md §11). A plain `cargo build` stays without it.
FEATURES ?= --features streamkeeper-cli/otel

.PHONY: demo test deps bench check release screenshot cluster cluster-stop

deps:
	@if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null || ! command -v redis-sentinel >/dev/null || ! command -v openssl >/dev/null || ! command -v curl >/dev/null || ! { command -v chromium >/dev/null || command -v chromium-browser >/dev/null; }; then \
		if command -v apt-get >/dev/null; then \
			echo "installing redis-server redis-tools redis-sentinel openssl curl chromium with apt-get"; \
			$(SUDO) apt-get update -qq && $(SUDO) DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools redis-sentinel openssl curl chromium >/dev/null; \
		else \
			echo "redis-server or chromium is missing: install redis-server, redis-tools, redis-sentinel and chromium with your package manager"; exit 2; \
		fi; \
	fi
	@command -v cargo >/dev/null || { echo "cargo is missing: install Rust from https://rustup.rs"; exit 2; }

demo: deps
	$(CARGO) run --release --quiet -p streamkeeper-cli $(FEATURES) -- demo

# The release binary (with span export): target/release/streamkeeper.
release:
	$(CARGO) build --release -p streamkeeper-cli $(FEATURES)

check:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --quiet $(FEATURES) -- -D warnings
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps --quiet $(FEATURES)
	scripts/check-doc-paths.sh
	python3 scripts/import-cycles.py

test: deps check
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		$(CARGO) nextest run --workspace --no-fail-fast $(FEATURES); \
	else \
		$(CARGO) test --workspace --no-fail-fast $(FEATURES); \
	fi
	$(CARGO) test --workspace --doc --quiet $(FEATURES)

bench: deps
	$(CARGO) run --release --quiet -p streamkeeper-cli $(FEATURES) -- bench all --baseline

# Regenerates docs/dashboard.png and docs/dashboard-filtered.png (the README's
# screenshots, at 1,000 streams x 3 groups) from the browser test.
screenshot: deps
	STREAMKEEPER_UPDATE_SCREENSHOT=1 $(CARGO) test -p streamkeeper-web --test browser at_1000_streams -- --nocapture

# A local 3-primary Redis Cluster on 127.0.0.1:7101-7106; prints its URL.
cluster: deps
	@scripts/local-cluster.sh start

cluster-stop:
	@scripts/local-cluster.sh stop
