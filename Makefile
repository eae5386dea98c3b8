# Orrery: the steps a user and CI run. Every target that needs packages installs them first.
BUILD ?= build
JOBS ?= $(shell nproc)
CTEST_ARGS ?=

.PHONY: all deps deps-bench build demo test bench fuzz soak clean

all: build

deps:
	@scripts/install-deps.sh base

deps-bench:
	@scripts/install-deps.sh bench

$(BUILD)/build.ninja:
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=Release

build: deps $(BUILD)/build.ninja
	cmake --build $(BUILD) -j $(JOBS)

demo: build
	scripts/demo.sh $(BUILD)

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) $(CTEST_ARGS)

bench: deps-bench build
	scripts/bench.sh $(BUILD) $(BENCH)

FUZZ_SECONDS ?= 60
fuzz:
	scripts/fuzz.sh $(FUZZ_SECONDS)

# 32 learner clients against 2 shards for SOAK_SECONDS (make test runs it for 8 s).
SOAK_SECONDS ?= 300
soak: build
	cd $(BUILD) && ORRERY_SOAK_SECONDS=$(SOAK_SECONDS) ctest --output-on-failure -R '^SoakTest\.' --timeout $$(( $(SOAK_SECONDS) + 300 ))

clean:
	rm -rf $(BUILD)
