# pubq — the two commands a fresh machine needs are `make demo` and `make test`.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
GO ?= go
TOOLS := $(CURDIR)/.tools
BIN := $(CURDIR)/bin
STATICCHECK_VERSION ?= v0.8.2
STATICCHECK := $(TOOLS)/staticcheck-$(STATICCHECK_VERSION)
# Every module of the workspace, as package patterns (go.work is the one list).
PACKAGES = $(shell $(GO) list -m -f '{{.Dir}}/...')
# Test flags; CI and developers run the same thing.
TESTFLAGS ?= -race -count=1 -timeout 15m

.PHONY: all test unit lint fmt-check vet staticcheck build demo bench bench-json stack-up stack-down tools clean

all: build test

## test: lint, then every test of every module with -race against the real emulator and PostgreSQL.
test: lint
	infra/with-stack.sh $(GO) test $(TESTFLAGS) $(PACKAGES)

## lint: gofmt, go vet and staticcheck over the workspace.
lint: fmt-check vet staticcheck

fmt-check:
	@bad=$$(git ls-files -co --exclude-standard '*.go' | xargs -r gofmt -l); \
	if [ -n "$$bad" ]; then echo "gofmt would change:"; echo "$$bad"; exit 1; fi

vet:
	$(GO) vet $(PACKAGES)

$(STATICCHECK):
	mkdir -p $(TOOLS)
	GOBIN=$(TOOLS) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)
	mv $(TOOLS)/staticcheck $@

staticcheck: $(STATICCHECK)
	$(STATICCHECK) $(PACKAGES)

## build: the binaries, into bin/ (git-ignored).
# One go build for every service module (in parallel); a compile error fails the target instead of
# leaving a stale binary behind.
SERVICES = $(patsubst %/go.mod,./%,$(wildcard services/*/go.mod))
build:
	mkdir -p $(BIN)
	$(GO) build -o $(BIN)/ $(SERVICES)

## demo: the whole local stack, a few thousand jobs with live progress, a summary; then teardown.
demo: build
	infra/demo.sh

## bench: end-to-end worker benchmark on the emulator (raw Pub/Sub loop vs pubq), table output.
bench: build
	infra/with-stack.sh $(BIN)/bench $(BENCHFLAGS)

bench-json: build
	infra/with-stack.sh $(BIN)/bench --json $(BENCHFLAGS)

stack-up:
	@infra/stack.sh up

stack-down:
	@infra/stack.sh down

clean:
	rm -rf $(BIN) .run

# --- edtech: the platform's jobs (pkg/edtech, docs/edtech.md) ---
EDTECH_BENCH_STUDENTS ?= 200000
.PHONY: bench-edtech bench-edtech-run

## bench-edtech: naive vs batched scan at 200k students (pkg/edtech bench-200k), then the nightly
## fan-out (students.scan -> 64 scan_range -> account.merge) with one and two workers, and the merge
## job's merges/s, on a seeded database of EDTECH_BENCH_STUDENTS (default 200000; more knobs:
## EDTECH_BENCH_* in pkg/edtech/jobs/bench_test.go), with the machine's load before and after.
bench-edtech:
	@echo "load before: $$(uptime)"
	infra/with-stack.sh $(MAKE) --no-print-directory bench-edtech-run
	@echo "load after: $$(uptime)"

# bench-edtech-run: both benchmarks on the stack bench-edtech started.
bench-edtech-run:
	$(MAKE) -C pkg/edtech bench-200k
	EDTECH_BENCH_STUDENTS=$(EDTECH_BENCH_STUDENTS) $(GO) test -run '^$$' -bench BenchmarkNightlyFanout -benchtime 1x -timeout 120m -v ./pkg/edtech/jobs/
