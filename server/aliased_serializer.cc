#include "server/aliased_serializer.h"

#include <climits>
#include <span>
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

grpc::ByteBuffer SerializeWithAliasedChunks(const google::protobuf::MessageLite& head, int chunks_field,
                                            std::span<const AliasedChunk> chunks, std::shared_ptr<const void> owner) {
  using google::protobuf::io::CodedOutputStream;
  using google::protobuf::internal::WireFormatLite;
  // A chunk is {its head's fields, tensor_field: {the tensor's fields, data: the payload}}. The
  // sizes count one byte per tag: the field numbers used (below 16) have one-byte tags.
  size_t total = head.ByteSizeLong();
  std::vector<size_t> tensor_sizes(chunks.size()), chunk_sizes(chunks.size());
  for (size_t i = 0; i < chunks.size(); ++i) {
    const AliasedChunk& c = chunks[i];
    tensor_sizes[i] = c.tensor->ByteSizeLong() + 1 + CodedOutputStream::VarintSize64(c.bytes) + c.bytes;
    chunk_sizes[i] = c.head->ByteSizeLong() + 1 + CodedOutputStream::VarintSize64(tensor_sizes[i]) + tensor_sizes[i];
    total += 1 + CodedOutputStream::VarintSize64(chunk_sizes[i]) + chunk_sizes[i];
  }
  if (total >= static_cast<size_t>(INT_MAX)) return grpc::ByteBuffer();
  SliceStream stream(std::move(owner));
  {
    CodedOutputStream coded(&stream);
    coded.EnableAliasing(true);
    head.SerializeWithCachedSizes(&coded);  // sizes cached by ByteSizeLong above
    for (size_t i = 0; i < chunks.size(); ++i) {
      const AliasedChunk& c = chunks[i];
      coded.WriteTag(WireFormatLite::MakeTag(chunks_field, WireFormatLite::WIRETYPE_LENGTH_DELIMITED));
      coded.WriteVarint64(chunk_sizes[i]);
      c.head->SerializeWithCachedSizes(&coded);
      coded.WriteTag(WireFormatLite::MakeTag(c.tensor_field, WireFormatLite::WIRETYPE_LENGTH_DELIMITED));
      coded.WriteVarint64(tensor_sizes[i]);
      c.tensor->SerializeWithCachedSizes(&coded);
      coded.WriteTag(WireFormatLite::MakeTag(proto::EncodedTensor::kDataFieldNumber,
                                             WireFormatLite::WIRETYPE_LENGTH_DELIMITED));
      coded.WriteVarint64(c.bytes);
      coded.WriteRawMaybeAliased(c.data, static_cast<int>(c.bytes));
    }
    if (coded.HadError()) return grpc::ByteBuffer();
  }
  return stream.Finish();
}

grpc::ByteBuffer SerializePullAnswer(std::shared_ptr<const PullAnswer> answer) {
  if (answer->aliased.empty()) {
    return SerializeAliased(std::shared_ptr<const google::protobuf::MessageLite>(
        answer, &answer->response));
  }
  // PullResponse{version=1, chunks=2}, PullChunk{id=1, version=2, weights=3}: in field-number
  // order, as protobuf writes them. The chunks' weights have no data in `response`.
  const proto::PullResponse& response = answer->response;
  proto::PullResponse head;
  head.set_version(response.version());
  std::vector<proto::PullChunk> chunk_heads(static_cast<size_t>(response.chunks_size()));
  std::vector<AliasedChunk> chunks(chunk_heads.size());
  for (size_t i = 0; i < chunk_heads.size(); ++i) {
    const proto::PullChunk& chunk = response.chunks(static_cast<int>(i));
    chunk_heads[i] = chunk;
    chunk_heads[i].clear_weights();
    const PullAnswer::Span& span = answer->aliased[i];
    chunks[i] = AliasedChunk{&chunk_heads[i], proto::PullChunk::kWeightsFieldNumber, &chunk.weights(),
                             answer->weights->data() + span.offset, size_t{span.length} * sizeof(float)};
  }
  return SerializeWithAliasedChunks(head, proto::PullResponse::kChunksFieldNumber, chunks, answer);
}

}  // namespace orrery::server
