#include "server/aliased_serializer.h"

#include <climits>
#include <string>
#include <vector>

#include <grpcpp/support/slice.h>

#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream.h"
#include "google/protobuf/wire_format_lite.h"

namespace orrery::server {
namespace {

using Owner = std::shared_ptr<const void>;

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

grpc::ByteBuffer SerializeAliased(std::shared_ptr<const google::protobuf::MessageLite> message) {
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

grpc::ByteBuffer SerializePullAnswer(std::shared_ptr<const PullAnswer> answer) {
  if (answer->aliased.empty()) {
    return SerializeAliased(std::shared_ptr<const google::protobuf::MessageLite>(
        answer, &answer->response));
  }
  using google::protobuf::io::CodedOutputStream;
  using google::protobuf::internal::WireFormatLite;
  const proto::PullResponse& response = answer->response;
  // Field by field in field-number order, as protobuf writes them: PullResponse{version=1,
  // chunks=2}, PullChunk{id=1, version=2, weights=3}, EncodedTensor{..., data=4}. Each chunk's
  // small fields are serialised by protobuf from a copy without the payload-bearing field. The
  // sizes count one byte per tag: fields 2, 3 and 4 (below 16) have one-byte tags.
  proto::PullResponse head;
  head.set_version(response.version());
  size_t total = head.ByteSizeLong();
  std::vector<proto::PullChunk> chunk_heads(static_cast<size_t>(response.chunks_size()));
  std::vector<size_t> tensor_sizes(chunk_heads.size()), chunk_sizes(chunk_heads.size());
  for (size_t i = 0; i < chunk_heads.size(); ++i) {
    const proto::PullChunk& chunk = response.chunks(static_cast<int>(i));
    chunk_heads[i] = chunk;
    chunk_heads[i].clear_weights();
    const size_t data = size_t{answer->aliased[i].length} * sizeof(float);
    tensor_sizes[i] = chunk.weights().ByteSizeLong() + 1 + CodedOutputStream::VarintSize64(data) +
                      data;
    chunk_sizes[i] = chunk_heads[i].ByteSizeLong() + 1 +
                     CodedOutputStream::VarintSize64(tensor_sizes[i]) + tensor_sizes[i];
    total += 1 + CodedOutputStream::VarintSize64(chunk_sizes[i]) + chunk_sizes[i];
  }
  if (total >= static_cast<size_t>(INT_MAX)) return grpc::ByteBuffer();
  SliceStream stream(answer);
  {
    CodedOutputStream coded(&stream);
    coded.EnableAliasing(true);
    head.SerializeWithCachedSizes(&coded);
    for (size_t i = 0; i < chunk_heads.size(); ++i) {
      const proto::PullChunk& chunk = response.chunks(static_cast<int>(i));
      coded.WriteTag(WireFormatLite::MakeTag(proto::PullResponse::kChunksFieldNumber,
                                             WireFormatLite::WIRETYPE_LENGTH_DELIMITED));
      coded.WriteVarint64(chunk_sizes[i]);
      chunk_heads[i].SerializeWithCachedSizes(&coded);
      coded.WriteTag(WireFormatLite::MakeTag(proto::PullChunk::kWeightsFieldNumber,
                                             WireFormatLite::WIRETYPE_LENGTH_DELIMITED));
      coded.WriteVarint64(tensor_sizes[i]);
      chunk.weights().SerializeWithCachedSizes(&coded);  // sizes cached by ByteSizeLong above
      const PullAnswer::Span& span = answer->aliased[i];
      const size_t data = size_t{span.length} * sizeof(float);
      coded.WriteTag(WireFormatLite::MakeTag(proto::EncodedTensor::kDataFieldNumber,
                                             WireFormatLite::WIRETYPE_LENGTH_DELIMITED));
      coded.WriteVarint64(data);
      coded.WriteRawMaybeAliased(answer->weights->data() + span.offset, static_cast<int>(data));
    }
    if (coded.HadError()) return grpc::ByteBuffer();
  }
  return stream.Finish();
}

}  // namespace orrery::server
