#include "server/aliased_serializer.h"

#include <climits>
#include <string>
#include <vector>

#include <grpcpp/support/slice.h>

#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream.h"

namespace orrery::server {
namespace {

using Owner = std::shared_ptr<const google::protobuf::MessageLite>;

// Payloads smaller than this are copied with the surrounding small fields; larger ones become
// slices of their own (a slice costs an allocation and a reference).
constexpr int kAliasAtLeast = 4096;

// A ZeroCopyOutputStream that collects small writes into copied slices and turns aliased writes
// into slices pointing at the owner's memory.
class SliceStream final : public google::protobuf::io::ZeroCopyOutputStream {
 public:
  explicit SliceStream(Owner owner) : owner_(std::move(owner)) {}

  bool Next(void** data, int* size) override {
    const size_t used = pending_.size();
    pending_.resize(used + kBlock);
    *data = pending_.data() + used;
    *size = kBlock;
    bytes_ += kBlock;
    return true;
  }
  void BackUp(int count) override {
    pending_.resize(pending_.size() - static_cast<size_t>(count));
    bytes_ -= count;
  }
  int64_t ByteCount() const override { return bytes_; }
  bool AllowsAliasing() const override { return true; }
  bool WriteAliasedRaw(const void* data, int size) override {
    if (size < kAliasAtLeast) {
      pending_.append(static_cast<const char*>(data), static_cast<size_t>(size));
    } else {
      FlushPending();
      slices_.emplace_back(const_cast<void*>(data), static_cast<size_t>(size), &ReleaseOwner,
                           new Owner(owner_));
    }
    bytes_ += size;
    return true;
  }

  // Call after the CodedOutputStream writing to this stream is gone (it backs up on destruction).
  grpc::ByteBuffer Finish() {
    FlushPending();
    return grpc::ByteBuffer(slices_.data(), slices_.size());
  }

 private:
  static constexpr int kBlock = 1024;

  static void ReleaseOwner(void* owner) { delete static_cast<Owner*>(owner); }

  void FlushPending() {
    if (pending_.empty()) return;
    slices_.emplace_back(pending_.data(), pending_.size());  // copies
    pending_.clear();
  }

  Owner owner_;
  int64_t bytes_ = 0;
  std::string pending_;  // small fields written since the last slice
  std::vector<grpc::Slice> slices_;
};

}  // namespace

grpc::ByteBuffer SerializeAliased(Owner message) {
  const size_t size = message->ByteSizeLong();
  if (size >= static_cast<size_t>(INT_MAX)) return grpc::ByteBuffer();
  SliceStream stream(message);
  {
    google::protobuf::io::CodedOutputStream coded(&stream);
    coded.EnableAliasing(true);
    message->SerializeWithCachedSizes(&coded);
    if (coded.HadError()) return grpc::ByteBuffer();
  }
  return stream.Finish();
}

}  // namespace orrery::server
