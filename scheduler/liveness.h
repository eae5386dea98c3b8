// Callbacks that an object hands to the event loop, to Asio or to another object can run after the
// object is gone: a posted task, a timer or signal that fired, a listener still registered. The
// object holds a Liveness, closes it first thing in its destructor (callbacks that run while it
// tears down find it closed), and wraps each such callback in Guard.
#pragma once

#include <memory>
#include <utility>

namespace orrery::scheduler {

class Liveness {
 public:
  Liveness() = default;
  Liveness(const Liveness&) = delete;
  Liveness& operator=(const Liveness&) = delete;

  void Close() { *open_ = false; }

  // `fn`, made to do nothing once this Liveness is closed or destroyed; it takes the same
  // arguments. Call Guard on the owner's thread (the event loop's).
  template <typename Fn>
  auto Guard(Fn fn) const {
    return [open = std::weak_ptr<const bool>(open_), fn = std::move(fn)](auto&&... args) mutable {
      const std::shared_ptr<const bool> still = open.lock();
      if (still != nullptr && *still) fn(std::forward<decltype(args)>(args)...);
    };
  }

 private:
  std::shared_ptr<bool> open_ = std::make_shared<bool>(true);
};

}  // namespace orrery::scheduler
