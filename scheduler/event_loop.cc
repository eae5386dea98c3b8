#include "scheduler/event_loop.h"

#include <signal.h>

#include <chrono>
#include <optional>
#include <utility>

#include "boost/asio/post.hpp"

namespace orrery::scheduler {

struct EventLoop::Timer {
  explicit Timer(boost::asio::io_context& context) : timer(context) {}
  boost::asio::steady_timer timer;
  std::function<void()> fn;
  std::optional<std::chrono::nanoseconds> period;
};

namespace {

std::chrono::nanoseconds ToChrono(absl::Duration d) {
  if (d < absl::ZeroDuration()) d = absl::ZeroDuration();
  if (d > absl::Hours(24 * 365)) d = absl::Hours(24 * 365);
  return absl::ToChronoNanoseconds(d);
}

}  // namespace

void RestartSyscallsAfter(int signal) {
  struct sigaction action;
  if (::sigaction(signal, nullptr, &action) != 0) return;
  action.sa_flags |= SA_RESTART;
  ::sigaction(signal, &action, nullptr);
}

EventLoop::EventLoop()
    : work_(std::make_unique<boost::asio::executor_work_guard<boost::asio::io_context::executor_type>>(
          context_.get_executor())) {}

EventLoop::~EventLoop() {
  liveness_.Close();
  for (auto& watch : signal_sets_) {
    boost::system::error_code ignored;
    watch.set->cancel(ignored);
  }
  timers_.clear();
  work_.reset();
}

void EventLoop::Post(std::function<void()> fn) { boost::asio::post(context_, std::move(fn)); }

TimerId EventLoop::RunAfter(absl::Duration delay, std::function<void()> fn) {
  TimerId id = next_timer_++;
  auto timer = std::make_shared<Timer>(context_);
  timer->fn = std::move(fn);
  timer->timer.expires_after(ToChrono(delay));
  timers_.emplace(id, std::move(timer));
  Arm(id);
  return id;
}

TimerId EventLoop::RunEvery(absl::Duration period, std::function<void()> fn) {
  TimerId id = next_timer_++;
  auto timer = std::make_shared<Timer>(context_);
  timer->fn = std::move(fn);
  timer->period = std::max(ToChrono(period), std::chrono::nanoseconds(std::chrono::milliseconds(1)));
  timer->timer.expires_after(*timer->period);
  timers_.emplace(id, std::move(timer));
  Arm(id);
  return id;
}

void EventLoop::Arm(TimerId id) {
  timers_.at(id)->timer.async_wait(liveness_.Guard([this, id](const boost::system::error_code& ec) {
    if (ec) return;
    auto it = timers_.find(id);
    if (it == timers_.end()) return;
    std::shared_ptr<Timer> timer = it->second;  // keeps fn alive if it cancels itself
    if (timer->period) {
      timer->timer.expires_at(timer->timer.expiry() + *timer->period);
      Arm(id);
      timer->fn();
    } else {
      timers_.erase(it);
      timer->fn();
    }
  }));
}

void EventLoop::Cancel(TimerId id) { timers_.erase(id); }  // the timer's destructor cancels its wait

void EventLoop::OnSignals(const std::vector<int>& signals, std::function<void(int)> fn) {
  auto set = std::make_unique<boost::asio::signal_set>(context_);
  for (int s : signals) {
    set->add(s);
    RestartSyscallsAfter(s);
  }
  signal_sets_.push_back(SignalWatch{std::move(set), std::move(fn)});
  ArmSignals(signal_sets_.size() - 1);
}

void EventLoop::ArmSignals(size_t index) {
  signal_sets_[index].set->async_wait(liveness_.Guard([this, index](const boost::system::error_code& ec, int signal) {
    if (ec) return;
    ArmSignals(index);
    signal_sets_[index].fn(signal);
  }));
}

bool EventLoop::RunUntil(const std::function<bool()>& done, absl::Duration timeout) {
  const auto deadline = std::chrono::steady_clock::now() + ToChrono(timeout);
  if (done()) return true;
  context_.restart();
  while (true) {
    auto now = std::chrono::steady_clock::now();
    if (now >= deadline) return done();
    context_.run_one_for(deadline - now);
    if (done()) return true;
    if (context_.stopped()) return false;
  }
}

void EventLoop::Run() {
  context_.restart();
  context_.run();
}

void EventLoop::Stop() { context_.stop(); }

}  // namespace orrery::scheduler
