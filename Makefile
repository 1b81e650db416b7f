# Thin wrapper over CMake. The two commands a new user needs: `make demo` and `make check`.
BUILD      ?= build
BUILD_TYPE ?= RelWithDebInfo
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE_ARGS ?=

# cmake --build runs make again; the nested "Entering directory" lines only bury what matters.
MAKEFLAGS += --no-print-directory

.PHONY: all deps test-deps build check demo asan tsan clean

all: build

deps:
	@scripts/install-deps

test-deps:
	@scripts/install-deps --tests

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(CMAKE_ARGS)

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

# Runs every test; ctest prints the closing "N tests passed" summary.
check: test-deps build
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS) $(CTEST_ARGS)

demo: build
	@scripts/demo $(BUILD)

# The suite under AddressSanitizer + UndefinedBehaviorSanitizer.
asan:
	$(MAKE) check BUILD=build-asan BUILD_TYPE=Debug CMAKE_ARGS="-DPIREC_ASAN=ON -DPIREC_UBSAN=ON -DPIREC_WERROR=ON"

# The concurrency tests under ThreadSanitizer.
tsan:
	$(MAKE) check BUILD=build-tsan BUILD_TYPE=Debug CMAKE_ARGS="-DPIREC_TSAN=ON -DPIREC_WERROR=ON" CTEST_ARGS="-L concurrency"

clean:
	rm -rf build build-asan build-tsan
