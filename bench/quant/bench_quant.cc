// bench_quant: quant/'s throughput against its peers, measured in the same run.
//   (a) float -> fixed16 stochastic conversion, GB/s of float input, vs memcpy of the same bytes;
//   (b) fixed16 GEMM (exact accumulation, one stochastic rounding per output) vs oneDNN's f32
//       matmul, GFLOP/s (2mnk per call), at 512^3 and the Fashion-MNIST MLP's layer shapes.
// Writes one JSON file per figure (DESIGN.md "Benchmarks and experiments") into --results_dir.
//
// Usage: bench_quant [--results_dir=DIR] [--threads=N] [--repetitions=N] [benchmark flags]
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "bench/machine_info.h"
#include "benchmark/benchmark.h"
#include "nlohmann/json.hpp"
#include "oneapi/dnnl/dnnl.hpp"
#include "quant/cpu_isa.h"
#include "quant/fixed_convert.h"
#include "quant/fixed_gemm.h"
#include "quant/gemm_kernels.h"
#include "quant/tensor_codec.h"

namespace orrery::quant {
namespace {

using ::orrery::bench::CpuModel;
using ::orrery::bench::Today;

struct Flags {
  std::string results_dir = "bench/results";
  int threads = 1;
  int repetitions = 9;
  std::string command;
};

constexpr size_t kConvertElements = size_t{1} << 24;  // 64 MiB of floats: beyond the caches

std::vector<float> NormalVector(size_t n, float sigma, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> d(0.0f, sigma);
  std::vector<float> v(n);
  for (float& x : v) x = d(gen);
  return v;
}

// ---- (a) conversion -------------------------------------------------------------------------

void BM_Memcpy(benchmark::State& state) {
  const std::vector<float> src = NormalVector(kConvertElements, 1.0f, 1);
  std::vector<float> dst(kConvertElements);
  for (auto _ : state) {
    std::memcpy(dst.data(), src.data(), src.size() * sizeof(float));
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  state.counters["rate"] = benchmark::Counter(static_cast<double>(src.size() * sizeof(float)),
                                              benchmark::Counter::kIsIterationInvariantRate);
}

void BM_Quantize(benchmark::State& state, Rounding rounding, Isa isa) {
  if (!IsaSupported(isa)) {
    state.SkipWithError("ISA not supported on this CPU");
    return;
  }
  const std::vector<float> src = NormalVector(kConvertElements, 1.0f, 1);
  const FixedFormat format = ChooseFormat(src);
  std::vector<int16_t> dst(kConvertElements);
  uint64_t step = 0;
  for (auto _ : state) {
    const absl::Status s = Quantize(src, format, rounding, RandomStream::For(0, step++), dst, isa);
    if (!s.ok()) state.SkipWithError(std::string(s.message()).c_str());
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  state.counters["rate"] = benchmark::Counter(static_cast<double>(src.size() * sizeof(float)),
                                              benchmark::Counter::kIsIterationInvariantRate);
}

// ---- (b) GEMM -------------------------------------------------------------------------------

struct GemmShape {
  int64_t m, k, n;
  std::string Name() const {
    std::ostringstream s;
    s << m << "x" << k << "x" << n;
    return s.str();
  }
};

// Activations ~ N(0, 1), weights ~ N(0, 1/sqrt(k)) as an MLP layer sees them.
struct GemmData {
  std::vector<float> a, b;
  explicit GemmData(const GemmShape& s)
      : a(NormalVector(static_cast<size_t>(s.m * s.k), 1.0f, 7)),
        b(NormalVector(static_cast<size_t>(s.k * s.n), 1.0f / std::sqrt(static_cast<float>(s.k)),
                       8)) {}
};

void BM_FixedGemm(benchmark::State& state, GemmShape shape, Rounding rounding, Isa isa,
                  int threads) {
  if (!IsaSupported(isa)) {
    state.SkipWithError("ISA not supported on this CPU");
    return;
  }
  const GemmData data(shape);
  const FixedFormat fa = ChooseFormat(data.a), fb = ChooseFormat(data.b);
  std::vector<int16_t> qa(data.a.size()), qb(data.b.size()), c(shape.m * shape.n);
  (void)Quantize(data.a, fa, Rounding::kNearest, {}, qa);
  (void)Quantize(data.b, fb, Rounding::kNearest, {}, qb);
  const FixedMatrixView a{qa.data(), shape.m, shape.k, shape.k, false, fa};
  const FixedMatrixView b{qb.data(), shape.k, shape.n, shape.n, false, fb};
  GemmOptions options;
  options.rounding = rounding;
  options.isa = isa;
  options.threads = threads;
  GemmWorkspace workspace;  // as a learner keeps one per thread
  options.workspace = &workspace;
  const FixedFormat out = FixedFormat::WithFractionalBits(11);  // outputs ~ N(0, 1): <5, 11>
  uint64_t step = 0;
  for (auto _ : state) {
    options.stream = RandomStream::For(0, step++);
    const absl::Status s = FixedGemm(a, b, out, options, c.data(), shape.n);
    if (!s.ok()) state.SkipWithError(std::string(s.message()).c_str());
    benchmark::DoNotOptimize(c.data());
    benchmark::ClobberMemory();
  }
  state.counters["rate"] = benchmark::Counter(2.0 * shape.m * shape.k * shape.n * 1e-9,
                                              benchmark::Counter::kIsIterationInvariantRate);
  state.counters["int32_blocks"] = static_cast<double>(internal::PlanKBlocks(a, b).size());
}

void BM_OnednnMatmul(benchmark::State& state, GemmShape shape) {
  const GemmData data(shape);
  std::vector<float> c(static_cast<size_t>(shape.m * shape.n));
  try {
    dnnl::engine engine(dnnl::engine::kind::cpu, 0);
    dnnl::stream stream(engine);
    using tag = dnnl::memory::format_tag;
    using dt = dnnl::memory::data_type;
    const dnnl::memory::desc a_md({shape.m, shape.k}, dt::f32, tag::ab);
    const dnnl::memory::desc b_md({shape.k, shape.n}, dt::f32, tag::ab);
    const dnnl::memory::desc c_md({shape.m, shape.n}, dt::f32, tag::ab);
    const dnnl::matmul::desc desc(a_md, b_md, c_md);
    const dnnl::matmul::primitive_desc pd(desc, engine);
    const dnnl::matmul matmul(pd);
    dnnl::memory a_mem(a_md, engine, const_cast<float*>(data.a.data()));
    dnnl::memory b_mem(b_md, engine, const_cast<float*>(data.b.data()));
    dnnl::memory c_mem(c_md, engine, c.data());
    const std::unordered_map<int, dnnl::memory> args = {
        {DNNL_ARG_SRC, a_mem}, {DNNL_ARG_WEIGHTS, b_mem}, {DNNL_ARG_DST, c_mem}};
    for (auto _ : state) {
      matmul.execute(stream, args);
      stream.wait();
      benchmark::DoNotOptimize(c.data());
      benchmark::ClobberMemory();
    }
    state.SetLabel(std::string("impl=") + pd.impl_info_str());
  } catch (const dnnl::error& e) {
    state.SkipWithError(e.what());
    return;
  }
  state.counters["rate"] = benchmark::Counter(2.0 * shape.m * shape.k * shape.n * 1e-9,
                                              benchmark::Counter::kIsIterationInvariantRate);
}

// ---- results --------------------------------------------------------------------------------

// Passes output to the console and keeps each benchmark's median "rate" and label.
class CollectingReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& run : runs) {
      if (run.error_occurred) continue;
      const bool median = run.run_type == Run::RT_Aggregate && run.aggregate_name == "median";
      const bool single = run.run_type == Run::RT_Iteration && run.repetitions <= 1;
      if (!median && !single) continue;
      auto it = run.counters.find("rate");
      if (it == run.counters.end()) continue;
      rates[run.run_name.function_name] = it->second.value;
      if (!run.report_label.empty()) labels[run.run_name.function_name] = run.report_label;
    }
    ConsoleReporter::ReportRuns(runs);
  }
  std::map<std::string, double> rates;
  std::map<std::string, std::string> labels;
};

double Get(const std::map<std::string, double>& m, const std::string& key) {
  auto it = m.find(key);
  return it == m.end() ? 0.0 : it->second;
}

void WriteResult(const Flags& flags, const nlohmann::json& j) {
  std::filesystem::create_directories(flags.results_dir);
  const std::string path = flags.results_dir + "/" + j["name"].get<std::string>() + ".json";
  std::ofstream out(path);
  out << j.dump(2) << "\n";
  std::cout << "wrote " << path << "\n";
}

nlohmann::json Ratio(double figure, double peer) {
  return peer > 0 ? nlohmann::json(figure / peer) : nlohmann::json(nullptr);
}

}  // namespace
}  // namespace orrery::quant

int main(int argc, char** argv) {
  using namespace orrery::quant;
  Flags flags;
  std::vector<char*> rest = {argv[0]};
  std::ostringstream command;
  command << argv[0];
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    command << " " << arg;
    if (arg.rfind("--results_dir=", 0) == 0) {
      flags.results_dir = arg.substr(14);
    } else if (arg.rfind("--threads=", 0) == 0) {
      flags.threads = std::max(1, std::atoi(arg.c_str() + 10));
    } else if (arg.rfind("--repetitions=", 0) == 0) {
      flags.repetitions = std::max(1, std::atoi(arg.c_str() + 14));
    } else {
      rest.push_back(argv[i]);
    }
  }
  flags.command = command.str();
  // Repetitions of every benchmark run interleaved in random order, so that a slow stretch of a
  // shared machine falls on ours and on the peer alike instead of on whichever ran then.
  std::string interleave = "--benchmark_enable_random_interleaving=true";
  bool interleave_given = false;
  for (const char* arg : rest) {
    interleave_given |= std::string(arg).rfind("--benchmark_enable_random_interleaving", 0) == 0;
  }
  if (!interleave_given) rest.insert(rest.begin() + 1, interleave.data());
  // oneDNN runs on OpenMP; give both sides the same thread count.
  omp_set_num_threads(flags.threads);
  int rest_argc = static_cast<int>(rest.size());
  benchmark::Initialize(&rest_argc, rest.data());
  if (benchmark::ReportUnrecognizedArguments(rest_argc, rest.data())) return 1;

  const Isa best = ResolveIsa(Isa::kAuto);
  auto configure = [&](benchmark::internal::Benchmark* b) {
    b->UseRealTime()->Repetitions(flags.repetitions)->ReportAggregatesOnly(true)->MinTime(0.2);
  };
  configure(benchmark::RegisterBenchmark("memcpy", BM_Memcpy));
  configure(benchmark::RegisterBenchmark("quantize_stochastic", BM_Quantize,
                                         Rounding::kStochastic, best));
  configure(benchmark::RegisterBenchmark("quantize_stochastic_avx2", BM_Quantize,
                                         Rounding::kStochastic, Isa::kAvx2));
  configure(benchmark::RegisterBenchmark("quantize_stochastic_portable", BM_Quantize,
                                         Rounding::kStochastic, Isa::kPortable));
  configure(benchmark::RegisterBenchmark("quantize_nearest_avx2", BM_Quantize, Rounding::kNearest,
                                         Isa::kAvx2));
  const std::vector<GemmShape> shapes = {
      {512, 512, 512}, {64, 784, 256}, {64, 256, 128}, {64, 128, 10}};
  for (const GemmShape& s : shapes) {
    configure(benchmark::RegisterBenchmark(("onednn_f32/" + s.Name()).c_str(), BM_OnednnMatmul, s));
    configure(benchmark::RegisterBenchmark(("fixed16_stochastic/" + s.Name()).c_str(), BM_FixedGemm,
                                           s, Rounding::kStochastic, best, flags.threads));
    configure(benchmark::RegisterBenchmark(("fixed16_nearest/" + s.Name()).c_str(), BM_FixedGemm, s,
                                           Rounding::kNearest, best, flags.threads));
    configure(benchmark::RegisterBenchmark(("fixed16_stochastic_avx2/" + s.Name()).c_str(),
                                           BM_FixedGemm, s, Rounding::kStochastic, Isa::kAvx2,
                                           flags.threads));
  }
  CollectingReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();

  const auto& r = reporter.rates;
  const std::string cpu = CpuModel(), date = Today();
  const double memcpy_rate = Get(r, "memcpy") * 1e-9;
  const double stochastic = Get(r, "quantize_stochastic") * 1e-9;  // the best ISA
  if (memcpy_rate > 0 && stochastic > 0) {
    WriteResult(flags,
                {{"name", "quant_convert_f32_to_fixed16_stochastic"},
                 {"figure", stochastic},
                 {"unit", "GB/s of float input"},
                 {"peer", "memcpy (glibc) of the same bytes"},
                 {"peer_figure", memcpy_rate},
                 {"ratio", Ratio(stochastic, memcpy_rate)},
                 {"target_ratio", 0.5},
                 {"command", flags.command},
                 {"date", date},
                 {"cpu", cpu},
                 {"details",
                  {{"elements", kConvertElements},
                   {"isa", IsaName(best)},
                   {"avx2_stochastic_gbps", Get(r, "quantize_stochastic_avx2") * 1e-9},
                   {"portable_stochastic_gbps", Get(r, "quantize_stochastic_portable") * 1e-9},
                   {"avx2_nearest_gbps", Get(r, "quantize_nearest_avx2") * 1e-9},
                   {"statistic", "median of repetitions"}}}});
  }
  for (const GemmShape& s : shapes) {
    const double fixed = Get(r, "fixed16_stochastic/" + s.Name());
    const double peer = Get(r, "onednn_f32/" + s.Name());
    if (fixed <= 0 || peer <= 0) continue;
    const bool headline = s.m == 512 && s.k == 512 && s.n == 512;
    auto label = reporter.labels.find("onednn_f32/" + s.Name());
    WriteResult(
        flags, {{"name", "quant_gemm_fixed16_" + s.Name() + "_t" + std::to_string(flags.threads)},
                {"figure", fixed},
                {"unit", "GFLOP/s"},
                {"peer", std::string("oneDNN ") + std::to_string(DNNL_VERSION_MAJOR) + "." +
                             std::to_string(DNNL_VERSION_MINOR) + "." +
                             std::to_string(DNNL_VERSION_PATCH) + " f32 matmul (Debian)"},
                {"peer_figure", peer},
                {"ratio", Ratio(fixed, peer)},
                {"target_ratio", headline ? nlohmann::json(1.3) : nlohmann::json(nullptr)},
                {"command", flags.command},
                {"date", date},
                {"cpu", cpu},
                {"details",
                 {{"m", s.m},
                  {"k", s.k},
                  {"n", s.n},
                  {"threads", flags.threads},
                  {"isa", IsaName(best)},
                  {"rounding", "stochastic, one rounding per output to <5,11>"},
                  {"fixed16_nearest_gflops", Get(r, "fixed16_nearest/" + s.Name())},
                  {"fixed16_stochastic_avx2_gflops", Get(r, "fixed16_stochastic_avx2/" + s.Name())},
                  {"onednn_impl", label == reporter.labels.end() ? "" : label->second},
                  {"includes",
                   "fixed16 time includes packing both operands and rounding; "
                   "oneDNN primitive created once outside the timed loop"},
                  {"statistic", "median of repetitions"}}}});
  }
  return 0;
}
