// Finding and killing a process's descendants on this machine through /proc, for launchers whose
// children leave the launcher's process group (mpirun puts every rank in a group of its own), so
// that a forced stop leaves nothing behind.
#pragma once

#include <sys/types.h>

#include <vector>

namespace orrery::scheduler {

// Every live descendant of `root` (children, their children, ...), parents before children.
// A snapshot: processes may come and go while it is read.
std::vector<pid_t> Descendants(pid_t root);

// Sends `signal` to `root`'s descendants and their process groups, then to `root`. Never signals
// this process's own group.
void SignalTree(pid_t root, int signal);

}  // namespace orrery::scheduler
