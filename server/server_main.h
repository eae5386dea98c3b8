// The `orrery server` role: run one parameter-server shard until SIGINT or SIGTERM.
#pragma once

#include "server/server_options.h"

namespace orrery::server {

// Starts the shard described by `options`, prints exactly one line
// `ORRERY_SERVER_READY <host:port>` to stdout (flushed) once it serves, and blocks until SIGINT or
// SIGTERM, then shuts down cleanly. Returns the process exit code: 0 after a clean stop, 1 when
// the shard could not start (the reason goes to stderr). Call it from the main thread before
// starting other threads: it blocks SIGINT/SIGTERM in the calling thread (so threads started
// later inherit the mask) and waits for them with sigwait; no work runs in a signal handler.
int RunServer(const ServerOptions& options);

}  // namespace orrery::server
