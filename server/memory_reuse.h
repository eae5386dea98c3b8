// Process-wide allocator setting for moving multi-megabyte messages. glibc returns freed memory
// to the OS (trim) and serves big blocks with fresh mmaps; every fresh page then costs a page
// fault on first touch, which on a VM dominates the cost of a multi-megabyte pull or push
// (10x slower transfers in bench/transport). Shards and learners keep freed memory instead.
#pragma once

namespace orrery::server {

// Makes glibc's malloc keep up to 512 MiB of freed memory per arena for reuse, use at most 4
// arenas, and serve blocks of up to 32 MiB from its heaps rather than fresh mmaps. Idempotent and
// thread-safe; a no-op on other C libraries. Called by RunServer and PsClient::Connect (unless
// the client opts out). Call it before the process starts threads (an arena limit set later
// does not merge arenas already created).
void KeepFreedMemoryForReuse();

}  // namespace orrery::server
