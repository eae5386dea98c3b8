// Helpers for the decoders that read protobuf's wire format with a CodedInputStream instead of
// parsing whole messages (server/pull_decoder, server/push_decoder), so that both refuse what
// protobuf's own parser refuses about lengths and nesting.
#pragma once

#include <climits>
#include <cstdint>

#include "google/protobuf/io/coded_stream.h"
#include "google/protobuf/wire_format_lite.h"

namespace orrery::server::wire {

// The tag of field `field` with a varint or a length-delimited value.
constexpr uint32_t VarintTag(int field) {
  return google::protobuf::internal::WireFormatLite::MakeTag(
      field, google::protobuf::internal::WireFormatLite::WIRETYPE_VARINT);
}
constexpr uint32_t BytesTag(int field) {
  return google::protobuf::internal::WireFormatLite::MakeTag(
      field, google::protobuf::internal::WireFormatLite::WIRETYPE_LENGTH_DELIMITED);
}

// Protobuf's parser takes tags and lengths of at most 5 bytes (CodedInputStream takes up to 10
// and drops the high bits); lengths also stay below 2 GiB.
inline constexpr int kMaxTagOrLengthBytes = 5;

inline bool ReadLength(google::protobuf::io::CodedInputStream* input, uint32_t* length) {
  const int start = input->CurrentPosition();
  return input->ReadVarint32(length) &&
         input->CurrentPosition() - start <= kMaxTagOrLengthBytes &&
         *length <= static_cast<uint32_t>(INT_MAX);
}

// Reads a length prefix and limits `input` to it; LeaveLength after the body. A body reaching
// past the enclosing one's end is refused (PushLimit alone would keep the enclosing limit).
inline bool EnterLength(google::protobuf::io::CodedInputStream* input,
                        google::protobuf::io::CodedInputStream::Limit* limit) {
  uint32_t length = 0;
  if (!ReadLength(input, &length)) return false;
  const int available = input->BytesUntilLimit();  // -1: no enclosing limit
  if (available >= 0 && length > static_cast<uint32_t>(available)) return false;
  *limit = input->PushLimit(static_cast<int>(length));
  return true;
}

// Leaves a length-limited body, which must have been read to its limit: the input ending early
// also ends a ReadTag loop "legitimately", so the limit itself is checked too.
inline bool LeaveLength(google::protobuf::io::CodedInputStream* input,
                        google::protobuf::io::CodedInputStream::Limit limit) {
  const bool whole = input->ConsumedEntireMessage() && input->BytesUntilLimit() == 0;
  input->PopLimit(limit);
  return whole;
}

}  // namespace orrery::server::wire
