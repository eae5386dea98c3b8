#include "server/push_decoder.h"

#include <algorithm>
#include <climits>
#include <string>

#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/io/zero_copy_stream_impl_lite.h"
#include "google/protobuf/wire_format_lite.h"
#include "server/wire_reading.h"

namespace orrery::server {
namespace {

using google::protobuf::io::CodedInputStream;
using google::protobuf::io::CodedOutputStream;
using google::protobuf::io::StringOutputStream;
using WireFormat = google::protobuf::internal::WireFormatLite;
using wire::EnterLength;
using wire::kMaxTagOrLengthBytes;
using wire::LeaveLength;
using wire::ReadLength;

// Copies one field (its tag already read) to `out`: length-delimited ones with their bytes as
// they are, the others as protobuf's SkipField rewrites them (the same values).
bool CopyField(CodedInputStream* input, uint32_t tag, CodedOutputStream* out) {
  if (WireFormat::GetTagWireType(tag) != WireFormat::WIRETYPE_LENGTH_DELIMITED) {
    return WireFormat::SkipField(input, tag, out);
  }
  uint32_t length = 0;
  std::string bytes;
  if (!ReadLength(input, &length) || !input->ReadString(&bytes, static_cast<int>(length))) {
    return false;
  }
  out->WriteTag(tag);
  out->WriteVarint32(length);
  out->WriteString(bytes);
  return true;
}

// Reads the fields up to the current limit: `special` (length-delimited) to on_special, every
// other field copied, tag and all, to `rest` for protobuf to parse. False on a malformed field.
template <typename OnSpecial>
bool SplitFields(CodedInputStream* input, int special, std::string* rest, OnSpecial on_special) {
  StringOutputStream rest_stream(rest);
  CodedOutputStream out(&rest_stream);
  while (true) {
    const int start = input->CurrentPosition();
    const uint32_t tag = input->ReadTag();
    if (tag == 0) return input->ConsumedEntireMessage();
    if (input->CurrentPosition() - start > kMaxTagOrLengthBytes) return false;
    if (tag == wire::BytesTag(special)) {
      if (!on_special()) return false;
    } else if (!CopyField(input, tag, &out)) {
      return false;
    }
  }
}

// The bytes of a length-delimited field (`input` at its length), as pieces of the stream's
// buffers, without copying them.
bool ReadPieces(CodedInputStream* input, absl::InlinedVector<absl::string_view, 1>* pieces) {
  uint32_t length = 0;
  if (!ReadLength(input, &length)) return false;
  pieces->clear();
  size_t left = length;
  while (left > 0) {
    const void* data;
    int size;
    if (!input->GetDirectBufferPointer(&data, &size) || size <= 0) return false;
    const size_t take = std::min(left, static_cast<size_t>(size));
    pieces->emplace_back(static_cast<const char*>(data), take);
    if (!input->Skip(static_cast<int>(take))) return false;
    left -= take;
  }
  return true;
}

// One PushChunk (within its length limit): its fields but the gradient's bytes go through
// protobuf; the gradient (which may come in several occurrences, merged as protobuf merges them)
// keeps its bytes as pieces.
bool ReadChunk(CodedInputStream* input, proto::PushChunk* chunk, PayloadView* payload) {
  std::string chunk_rest, tensor_rest;
  bool has_gradient = false;
  const bool ok = SplitFields(input, proto::PushChunk::kGradientFieldNumber, &chunk_rest, [&] {
    CodedInputStream::Limit limit;
    if (!EnterLength(input, &limit)) return false;
    has_gradient = true;
    return SplitFields(input, proto::EncodedTensor::kDataFieldNumber, &tensor_rest,
                       [&] { return ReadPieces(input, &payload->pieces); }) &&
           LeaveLength(input, limit);
  });
  if (!ok || !chunk->ParseFromString(chunk_rest)) return false;
  if (has_gradient) {
    proto::EncodedTensor* gradient = chunk->mutable_gradient();
    if (!gradient->ParseFromString(tensor_rest)) return false;
    payload->encoding = gradient->encoding();
    payload->fractional_bits = gradient->fractional_bits();
    payload->element_count = gradient->element_count();
  }
  return true;
}

}  // namespace

PayloadView ReceivedPush::Payload(int i) const {
  if (payloads.empty()) return PayloadView::Of(request.chunks(i).gradient());
  return payloads[static_cast<size_t>(i)];
}

proto::PushRequest ReceivedPush::Materialize() const {
  proto::PushRequest out = request;
  for (size_t i = 0; i < payloads.size(); ++i) {
    proto::PushChunk* c = out.mutable_chunks(static_cast<int>(i));
    if (!c->has_gradient()) continue;
    std::string* data = c->mutable_gradient()->mutable_data();
    data->clear();
    for (absl::string_view p : payloads[i].pieces) data->append(p.data(), p.size());
  }
  return out;
}

absl::StatusOr<ReceivedPush> DecodePushRequest(google::protobuf::io::ZeroCopyInputStream* in,
                                               std::shared_ptr<const void> keep) {
  ReceivedPush push;
  push.keep = std::move(keep);
  std::vector<proto::PushChunk> chunks;
  std::string rest;
  {
    CodedInputStream input(in);
    input.SetTotalBytesLimit(INT_MAX);
    const bool ok = SplitFields(&input, proto::PushRequest::kChunksFieldNumber, &rest, [&] {
      CodedInputStream::Limit limit;
      if (!EnterLength(&input, &limit)) return false;
      chunks.emplace_back();
      push.payloads.emplace_back();
      return ReadChunk(&input, &chunks.back(), &push.payloads.back()) &&
             LeaveLength(&input, limit);
    });
    if (!ok) return absl::InvalidArgumentError("malformed PushRequest: bad field or truncated");
  }
  if (!push.request.ParseFromString(rest)) {
    return absl::InvalidArgumentError("malformed PushRequest: bad field or not UTF-8");
  }
  push.request.mutable_chunks()->Reserve(static_cast<int>(chunks.size()));
  for (proto::PushChunk& c : chunks) *push.request.add_chunks() = std::move(c);
  return push;
}

}  // namespace orrery::server
