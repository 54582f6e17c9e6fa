#!/usr/bin/env bash
set -eu
# Runs on a GPU machine that has CUDA (nvcc, cmake, ninja) but no Rust toolchain and no network.
# Prepare next to it (see ai-server/README.md, "GPU"), all built here with LLAMA_BUILD_SHARED_LIBS=1
# (so llama.cpp is linked dynamically): the release `throughput` bench binary, and the `analysis`
# test binary (`cargo test -p mutr-ai-server --test analysis --no-run`; it holds the determinism
# test); the llama-cpp-sys-2 .crate (the same llama.cpp source); and models/ with the tiny files and,
# for the small profile, gemma-3-270m-q4_k_m.gguf. It builds llama.cpp there with CUDA as shared
# libraries, runs the analysis tests on the GPU, then the bench (both model pairs, p1 and p8
# against the llama.cpp ceiling of the same work) on the GPU (n_gpu_layers=999), again with
# embedding texts packed eight to a decode, and on that machine's CPU. Each step has a time
# limit so that the whole script ends within one device call (10 minutes): the CUDA build took
# about 180 s on 16 cores (the llama target only), each test and bench well under its limit on the H200.
cd "$(dirname "$0")"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
nvcc --version | tail -1; nproc
tar xzf llama-cpp-sys-2-0.1.161.crate
s=$(date +%s)
cmake -S llama-cpp-sys-2-0.1.161/llama.cpp -B b -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
  -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_CUDA_FA=OFF -DGGML_CUDA_NCCL=OFF -DGGML_NATIVE=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_APP=OFF -DLLAMA_OPENSSL=OFF \
  -DLLAMA_CURL=OFF >"$OUT/cmake.log" 2>&1 || { tail -30 "$OUT/cmake.log"; exit 1; }
timeout 300 cmake --build b -j16 --target llama >"$OUT/build.log" 2>&1 || { tail -40 "$OUT/build.log"; exit 1; }
echo "llama.cpp CUDA build: $(( $(date +%s) - s )) s"
export LD_LIBRARY_PATH=$(find "$PWD/b" -name '*.so*' -printf '%h\n' | sort -u | paste -sd:)
ldd ./throughput | grep -E 'ggml|llama'
export MUTR_MODEL_DIR=$PWD/models OMP_WAIT_POLICY=PASSIVE MUTR_BENCH_REQUESTS=48
if [ -x ./analysis ]; then
    # Every analysis test but the Redis one (no Redis there), the determinism test among them,
    # with the server's defaults for a GPU; then the determinism test with texts packed eight to
    # an embedding decode, the CPU default, which CUDA's kernels make depend on the batch.
    echo "== analysis tests on the GPU: n_gpu_layers=999"
    n_gpu_layers=999 timeout 150 ./analysis --skip results_are_cached_in_redis >"$OUT/analysis.out" 2>&1 \
        && echo "analysis tests: passed" || { echo "analysis tests: FAILED"; grep -E '^test |panicked|left:|right:' "$OUT/analysis.out"; }
    grep -E '^test result' "$OUT/analysis.out" || true
    echo "== determinism on the GPU with MUTR_EMBED_PARALLEL=8 (texts packed as on the CPU)"
    MUTR_EMBED_PARALLEL=8 n_gpu_layers=999 timeout 60 ./analysis greedy_output_does_not_depend_on_the_batch --exact \
        >"$OUT/determinism-packed.out" 2>&1 && echo "packed: same" \
        || grep -E 'panicked|left:|right:' "$OUT/determinism-packed.out" || true
fi
echo "== GPU: n_gpu_layers=999"
RUST_LOG=info,mutr_ai_server=warn n_gpu_layers=999 timeout 150 ./throughput >"$OUT/gpu.out" 2>&1 || echo "gpu bench rc=$?"
grep -E '^(\||ai-server)' "$OUT/gpu.out" || true
grep -iE 'offloaded|CUDA0 model buffer|using device' "$OUT/gpu.out" | cut -c1-200 | head -6 || true
echo "== GPU with MUTR_EMBED_PARALLEL=8 (texts packed as on the CPU)"
MUTR_EMBED_PARALLEL=8 RUST_LOG=warn n_gpu_layers=999 timeout 150 ./throughput 2>/dev/null | grep -E '^(\||ai-server)' || echo "gpu packed bench failed"
echo "== CPU on the same machine: n_gpu_layers=0"
MUTR_BENCH_LEVELS=1,8 n_gpu_layers=0 timeout 100 ./throughput 2>"$OUT/cpu.err" | tee "$OUT/bench-cpu.txt" || echo "cpu bench rc=$?"
