#include "server/pull_decoder.h"

#include <climits>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "base/status_macros.h"
#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/wire_format_lite.h"
#include "parameter_server.pb.h"
#include "server/fixed16_payload.h"
#include "server/tensor_codec.h"
#include "server/wire_reading.h"

namespace orrery::server {
namespace {

using google::protobuf::io::CodedInputStream;
using WireFormat = google::protobuf::internal::WireFormatLite;
using wire::EnterLength;
using wire::LeaveLength;

absl::Status Malformed(absl::string_view what) {
  return absl::InternalError(absl::StrCat("malformed PullResponse: ", what));
}

// Reads fields until the end of the current limit (or stream); returns false on a bad tag.
template <typename OnField>
bool ForEachField(CodedInputStream* input, OnField on_field) {
  while (true) {
    const uint32_t tag = input->ReadTag();
    if (tag == 0) return input->ConsumedEntireMessage();
    if (!on_field(tag)) return false;
  }
}

class Decoder {
 public:
  Decoder(const ShardPlan& plan, uint32_t shard, std::span<const int> expected,
          std::span<float> weights, std::span<uint64_t> versions)
      : plan_(plan), expected_(expected.size()), weights_(weights),
        versions_(versions), unexpected_(plan.chunks().size(), true) {
    for (int i : expected) unexpected_[i] = plan.chunks()[i].shard != shard;
  }

  absl::Status Run(google::protobuf::io::ZeroCopyInputStream* in) {
    CodedInputStream input(in);
    input.SetTotalBytesLimit(INT_MAX);
    const bool ok = ForEachField(&input, [&](uint32_t tag) {
      if (tag == wire::BytesTag(2)) {  // repeated PullChunk chunks = 2
        CodedInputStream::Limit limit;
        if (!EnterLength(&input, &limit)) return false;
        status_ = DecodeChunk(&input);
        return status_.ok() && LeaveLength(&input, limit);
      }
      return WireFormat::SkipField(&input, tag);  // version = 1, unknown fields
    });
    if (!status_.ok()) return status_;
    if (!ok) return Malformed("bad field or truncated message");
    if (chunks_ != expected_) {
      return absl::InternalError(absl::StrCat("answered ", chunks_, " chunks, expected ", expected_,
                                              "; is the shard's layout the same?"));
    }
    return absl::OkStatus();
  }

 private:
  // One PullChunk. Its payload goes straight into place when the chunk id and the payload's
  // header precede it (the order protobuf writes them in); otherwise it is held and placed at the
  // end of the chunk.
  absl::Status DecodeChunk(CodedInputStream* input) {
    std::string tensor;
    uint32_t index = 0;
    uint64_t version = 0;
    int64_t encoding = 0;
    int32_t fractional_bits = 0;
    uint64_t element_count = 0;
    size_t data_bytes = 0;
    int written_to = -1;  // chunk whose place already holds the payload
    std::string& held = held_;  // reused across chunks
    bool have_held = false;

    auto find = [&]() -> int {
      absl::StatusOr<int> i = plan_.FindChunk(tensor, index);
      return i.ok() ? *i : -1;
    };
    auto id = [&]() {
      return ForEachField(input, [&](uint32_t tag) {
        if (tag == wire::BytesTag(1)) {  // string tensor = 1
          uint32_t length = 0;
          return input->ReadVarint32(&length) && length <= (1u << 20) &&
                 input->ReadString(&tensor, static_cast<int>(length));
        }
        if (tag == wire::VarintTag(2)) return input->ReadVarint32(&index);  // uint32 index = 2
        return WireFormat::SkipField(input, tag);
      });
    };
    auto payload = [&]() {
      return ForEachField(input, [&](uint32_t tag) {
        uint64_t v = 0;
        if (tag == wire::VarintTag(1)) {  // Encoding encoding = 1
          if (!input->ReadVarint64(&v)) return false;
          encoding = static_cast<int32_t>(v);
          return true;
        }
        if (tag == wire::VarintTag(2)) {  // uint32 element_count = 2
          if (!input->ReadVarint64(&v)) return false;
          element_count = static_cast<uint32_t>(v);
          return true;
        }
        if (tag == wire::VarintTag(3)) {  // int32 fractional_bits = 3
          if (!input->ReadVarint64(&v)) return false;
          fractional_bits = static_cast<int32_t>(v);
          return true;
        }
        if (tag != wire::BytesTag(4)) return WireFormat::SkipField(input, tag);
        uint32_t length = 0;  // bytes data = 4
        if (!wire::ReadLength(input, &length)) return false;
        data_bytes = length;
        const int i = find();
        // FP32 bytes are the weights themselves: read them straight into place. FIXED16 words
        // are held and converted at the end of the chunk.
        if (i >= 0 && Owns(i) && encoding == proto::FP32 &&
            CheckPayloadHeader(proto::FP32, fractional_bits, element_count, length,
                               plan_.chunks()[i].length)
                .ok()) {
          have_held = false;
          written_to = i;
          return input->ReadRaw(weights_.data() + plan_.chunks()[i].offset,
                                static_cast<int>(length));
        }
        have_held = true;
        written_to = -1;
        return input->ReadString(&held, static_cast<int>(length));
      });
    };

    const bool ok = ForEachField(input, [&](uint32_t tag) {
      CodedInputStream::Limit limit;
      if (tag == wire::BytesTag(1)) {  // ChunkId id = 1
        tensor.clear();
        index = 0;
        return EnterLength(input, &limit) && id() && LeaveLength(input, limit);
      }
      if (tag == wire::VarintTag(2)) return input->ReadVarint64(&version);  // uint64 version = 2
      if (tag == wire::BytesTag(3)) {  // EncodedTensor weights = 3
        return EnterLength(input, &limit) && payload() && LeaveLength(input, limit);
      }
      return WireFormat::SkipField(input, tag);
    });
    if (!ok) return Malformed("bad chunk");

    absl::StatusOr<int> found = plan_.FindChunk(tensor, index);
    if (!found.ok()) return found.status();
    const int i = *found;
    const Chunk& c = plan_.chunks()[i];
    if (!Owns(i)) {
      return absl::InternalError(absl::StrCat("answered chunk ", tensor, "/", index,
                                              " it does not own or twice"));
    }
    unexpected_[i] = true;  // a second copy is refused
    ++chunks_;
    RETURN_IF_ERROR(CheckPayloadHeader(static_cast<proto::Encoding>(encoding), fractional_bits,
                                       element_count, data_bytes, c.length));
    if (have_held) {
      const std::span<float> place = weights_.subspan(c.offset, c.length);
      if (encoding == proto::FIXED16) {
        DecodeFixed16Payload(held, quant::FixedFormat{fractional_bits}, place);
      } else if (c.length != 0) {
        std::memcpy(place.data(), held.data(), held.size());
      }
    } else if (written_to != i && c.length != 0) {
      return Malformed("chunk id changed after its payload");
    }
    versions_[i] = version;
    return absl::OkStatus();
  }

  // Whether chunk `i` is one this answer should hold and has not been answered yet.
  bool Owns(int i) const { return !unexpected_[i]; }

  const ShardPlan& plan_;
  const size_t expected_;
  std::span<float> weights_;
  std::span<uint64_t> versions_;
  std::vector<bool> unexpected_;  // per plan chunk: not (or no longer) expected in this answer
  size_t chunks_ = 0;
  std::string held_;
  absl::Status status_;
};

}  // namespace

absl::Status DecodePullResponse(google::protobuf::io::ZeroCopyInputStream* in,
                                const ShardPlan& plan, uint32_t shard, std::span<float> weights,
                                std::span<uint64_t> chunk_versions) {
  if (weights.size() != plan.total_elements() || chunk_versions.size() != plan.chunks().size()) {
    return absl::InvalidArgumentError("DecodePullResponse: buffers do not match the plan");
  }
  return Decoder(plan, shard, plan.ChunksOfShard(shard), weights, chunk_versions).Run(in);
}

absl::Status DecodePullResponsePart(google::protobuf::io::ZeroCopyInputStream* in,
                                    const ShardPlan& plan, uint32_t shard,
                                    std::span<const int> expected, std::span<float> weights,
                                    std::span<uint64_t> chunk_versions) {
  if (weights.size() != plan.total_elements() || chunk_versions.size() != plan.chunks().size()) {
    return absl::InvalidArgumentError("DecodePullResponsePart: buffers do not match the plan");
  }
  for (int i : expected) {
    if (i < 0 || static_cast<size_t>(i) >= plan.chunks().size()) {
      return absl::InvalidArgumentError("DecodePullResponsePart: a chunk index is out of range");
    }
  }
  return Decoder(plan, shard, expected, weights, chunk_versions).Run(in);
}

}  // namespace orrery::server
