// `orrery server`, `orrery learner`, `orrery run`: the distributed roles.
#include "cli/commands.h"

namespace orrery::cli {

void AddDistributedCommands(CLI::App&, Commands&) {}

}  // namespace orrery::cli
