// Instruction-set selection for quant/'s kernels. The library is compiled for baseline x86-64
// (or any other target); AVX2 and AVX-512 kernels are compiled with per-function target
// attributes and chosen at run time, so one binary runs everywhere. Every path gives results
// bit-identical to kPortable.
#ifndef ORRERY_QUANT_CPU_ISA_H_
#define ORRERY_QUANT_CPU_ISA_H_

namespace orrery::quant {

enum class Isa {
  kAuto,      // the best this CPU supports
  kPortable,  // plain C++
  kAvx2,      // AVX2 (conversions, GEMM with vpmaddwd)
  kAvx512,    // AVX-512F/BW + AVX512-VNNI (GEMM with vpdpwssd, stochastic quantisation);
              // the other conversions use AVX2
};

// True when the running CPU can execute `isa` (kAuto and kPortable are always supported).
bool IsaSupported(Isa isa);
// kAuto resolved to the best supported ISA; any other supported value returned as is; an
// unsupported one falls back to the best supported ISA below it.
Isa ResolveIsa(Isa isa);
const char* IsaName(Isa isa);

}  // namespace orrery::quant

#endif  // ORRERY_QUANT_CPU_ISA_H_
