#include "server/memory_reuse.h"

#include <malloc.h>

#include <mutex>

namespace orrery::server {

void KeepFreedMemoryForReuse() {
#ifdef __GLIBC__
  static std::once_flag once;
  std::call_once(once, [] {
    mallopt(M_MMAP_THRESHOLD, 32 << 20);  // glibc's maximum on 64-bit hosts
    mallopt(M_TRIM_THRESHOLD, 512 << 20);
    // gRPC runs callbacks on many threads, each of which would otherwise get an arena of its own
    // to grow (and retain) separately.
    mallopt(M_ARENA_MAX, 4);
  });
#endif
}

}  // namespace orrery::server
