// ORRERY_MULTIVERSION: compiles a hot loop for x86-64-v4 (AVX-512), AVX2 and the baseline, and
// picks one when the program loads (GCC function multiversioning), so it vectorizes wide without
// raising the build's baseline. Floating-point contraction stays off in every clone: a clone
// with FMA must round exactly as the baseline does. Empty on other compilers and CPUs.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define ORRERY_MULTIVERSION                                                   \
  __attribute__((target_clones("arch=x86-64-v4", "avx2", "default"),         \
                 optimize("fp-contract=off")))
#else
#define ORRERY_MULTIVERSION
#endif
