// A process started by the scheduler daemon writes its stdout and stderr to pipes the daemon reads
// (and copies into the process's log file). The daemon may die while its jobs run on (it is
// restarted and re-attaches to them), and with it the pipes' read ends: what the process printed
// after that, its warnings and the one line saying why it failed, went nowhere.
//
// With ORRERY_LOG_FILE (the process's log file) and ORRERY_LOG_ROLE (its role) in its environment,
// which the daemon's local backend sets, the process watches its stderr pipe; once no one reads
// it, it starts `orrery log-relay`, a process of its own (its own session, deaf to the stop
// signals, so that it outlives the process and drains every last line), and points stdout and
// stderr at it; the relay appends each line to the log file as the daemon would have
// ("TIME ROLE out| TEXT", "err|"), until the process and everything it started have closed them.
#pragma once

#include <string>

namespace orrery::cli {

// Reads and clears ORRERY_LOG_FILE and ORRERY_LOG_ROLE; when both are set and stderr is a pipe,
// starts the watcher thread. Call once, early in main.
void RelayOutputIfItsReaderDies();

// In a process started with ORRERY_LOG_FILE (by the scheduler daemon), writes its exit code to
// LOG_FILE.exit ({"pid":P,"code":C}): a restarted daemon, whose child it is not, reads it there
// (scheduler::RecordedExitCode). Nothing otherwise. Call once, as main returns.
void RecordExitCode(int code);

// `orrery log-relay`: copies the lines read from fd 3 (stdout) and fd 4 (stderr) into `file`,
// formatted as the local backend's log records; returns the exit code once both reach EOF.
int RunLogRelay(const std::string& file, const std::string& role);

}  // namespace orrery::cli
