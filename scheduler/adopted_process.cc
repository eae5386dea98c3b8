#include "scheduler/adopted_process.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <fstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "base/proc_stat.h"
#include "base/replace_file.h"
#include "nlohmann/json.hpp"
#include "boost/asio/posix/stream_descriptor.hpp"

namespace orrery::scheduler {

std::optional<uint64_t> ProcessStartTicks(int pid) {
  if (pid <= 0) return std::nullopt;
  const std::vector<std::string> fields = ProcStatFields(pid);
  // fields[0] is field 3 (state), so field 22 (starttime) is fields[19].
  if (fields.size() < 20) return std::nullopt;
  if (fields[0] == "Z" || fields[0] == "X") return std::nullopt;
  uint64_t ticks = 0;
  if (!absl::SimpleAtoi(fields[19], &ticks)) return std::nullopt;
  return ticks;
}

void RecordExitCode(const std::string& log_path, int pid, int code) {
  const std::string path = log_path + ".exit";
  ReplaceFile(path, absl::StrCat(path, ".", pid), absl::StrCat("{\"pid\":", pid, ",\"code\":", code, "}\n"))
      .IgnoreError();
}

std::optional<int> RecordedExitCode(const std::string& log_path, int pid) {
  std::ifstream in(log_path + ".exit");
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object() || !j.contains("pid") || !j.contains("code") || !j["pid"].is_number_integer() ||
      !j["code"].is_number_integer() || j["pid"].get<int64_t>() != pid) {
    return std::nullopt;
  }
  return j["code"].get<int>();
}

std::string BootId() {
  std::ifstream in("/proc/sys/kernel/random/boot_id");
  std::string id;
  std::getline(in, id);
  return std::string(absl::StripAsciiWhitespace(id));
}

struct AdoptedProcess::Watch {
  explicit Watch(boost::asio::io_context& context, int fd) : descriptor(context, fd) {}
  boost::asio::posix::stream_descriptor descriptor;  // owns the pidfd
};

absl::StatusOr<std::unique_ptr<AdoptedProcess>> AdoptedProcess::Adopt(EventLoop& loop, int pid,
                                                                       uint64_t start_ticks) {
  if (pid <= 0) return absl::NotFoundError(absl::StrCat("pid ", pid, ": not a process"));
  // (glibc 2.36's <sys/pidfd.h> is not C++-safe, so the raw system call.)
  const int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) {
    if (errno == ESRCH) return absl::NotFoundError(absl::StrCat("pid ", pid, " is gone"));
    return absl::InternalError(absl::StrCat("pidfd_open(", pid, "): ", strerror(errno)));
  }
  // The pidfd pins the process it was opened on; if that one started when recorded, it is ours.
  std::optional<uint64_t> ticks = ProcessStartTicks(pid);
  if (!ticks || *ticks != start_ticks) {
    ::close(fd);
    return absl::NotFoundError(ticks ? absl::StrCat("pid ", pid, " now names another process")
                                     : absl::StrCat("pid ", pid, " is gone"));
  }
  std::unique_ptr<AdoptedProcess> process(new AdoptedProcess(loop, pid, fd));
  process->Arm();
  return process;
}

AdoptedProcess::AdoptedProcess(EventLoop& loop, int pid, int pidfd)
    : loop_(loop), pid_(pid), watch_(std::make_unique<Watch>(loop.context(), pidfd)) {}

AdoptedProcess::~AdoptedProcess() {
  liveness_.Close();
  boost::system::error_code ignored;
  watch_->descriptor.cancel(ignored);
}

void AdoptedProcess::Arm() {
  // A pidfd becomes readable when its process terminates.
  watch_->descriptor.async_wait(boost::asio::posix::stream_descriptor::wait_read,
                                liveness_.Guard([this](const boost::system::error_code& ec) {
                                  if (ec == boost::asio::error::operation_aborted) return;
                                  exited_ = true;
                                  if (on_exit_) {
                                    auto fn = std::move(on_exit_);
                                    on_exit_ = nullptr;
                                    fn();
                                  }
                                }));
}

void AdoptedProcess::OnExit(std::function<void()> on_exit) {
  if (!exited_) {
    on_exit_ = std::move(on_exit);
    return;
  }
  loop_.Post(liveness_.Guard(std::move(on_exit)));
}

absl::Status AdoptedProcess::SignalGroup(int signal) {
  if (exited_) return absl::FailedPreconditionError(absl::StrCat("pid ", pid_, " has exited"));
  // Only while the leader lives is its pid sure to name its group.
  pollfd p{watch_->descriptor.native_handle(), POLLIN, 0};
  if (::poll(&p, 1, 0) > 0) return absl::FailedPreconditionError(absl::StrCat("pid ", pid_, " has exited"));
  if (::kill(-pid_, signal) != 0 && ::kill(pid_, signal) != 0) {
    return absl::InternalError(absl::StrCat("kill(", pid_, ", ", signal, "): ", strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace orrery::scheduler
