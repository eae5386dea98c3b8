// Fashion-MNIST reading: whole-file read, in-memory gunzip (zlib inflate), strict IDX validation.
//
// Every byte of the file is accounted for: the header's dimensions must describe exactly the data
// that follows, so a truncated file and a file with trailing bytes are both errors.
#include "learner/fashion_mnist.h"

#include <zlib.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <numeric>
#include <random>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "base/status_macros.h"

namespace orrery::learner {
namespace {

constexpr uint32_t kImagesMagic = 0x00000803;  // unsigned byte, 3 dimensions
constexpr uint32_t kLabelsMagic = 0x00000801;  // unsigned byte, 1 dimension
constexpr int kClasses = 10;
// Refuse to inflate beyond this: Fashion-MNIST's largest file is 47 MB; this stops a gzip bomb.
constexpr size_t kMaxDecompressedBytes = size_t{1} << 30;
constexpr uint32_t kMaxSide = 1 << 16;

absl::StatusOr<std::vector<uint8_t>> ReadWholeFile(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": is a directory"));
  }
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) {
    const int err = errno;
    const std::string msg = absl::StrCat(path, ": cannot open: ", std::strerror(err));
    return err == ENOENT ? absl::NotFoundError(msg) : absl::PermissionDeniedError(msg);
  }
  std::vector<uint8_t> bytes;
  const uintmax_t size = std::filesystem::file_size(path, ec);
  if (!ec) bytes.reserve(static_cast<size_t>(std::min<uintmax_t>(size, kMaxDecompressedBytes)));
  std::array<uint8_t, 1 << 16> buf;
  size_t n = 0;
  while ((n = std::fread(buf.data(), 1, buf.size(), f)) > 0) {
    bytes.insert(bytes.end(), buf.data(), buf.data() + n);
  }
  const bool failed = std::ferror(f) != 0;
  std::fclose(f);
  if (failed) return absl::DataLossError(absl::StrCat(path, ": read error"));
  return bytes;
}

bool IsGzip(const std::vector<uint8_t>& bytes) {
  return bytes.size() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b;
}

// Inflates one or more concatenated gzip members. Anything after the last member is an error.
absl::StatusOr<std::vector<uint8_t>> Gunzip(const std::vector<uint8_t>& in,
                                            const std::string& path) {
  std::vector<uint8_t> out;
  // The gzip trailer holds the last member's size mod 2^32: a good first guess for capacity when
  // believable (deflate cannot compress better than about 1032:1).
  if (in.size() >= 18) {
    const size_t hint = static_cast<size_t>(in[in.size() - 4]) |
                        static_cast<size_t>(in[in.size() - 3]) << 8 |
                        static_cast<size_t>(in[in.size() - 2]) << 16 |
                        static_cast<size_t>(in[in.size() - 1]) << 24;
    if (hint <= in.size() * 1032 && hint <= kMaxDecompressedBytes) out.reserve(hint);
  }
  z_stream zs;
  std::memset(&zs, 0, sizeof(zs));
  if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) {
    return absl::ResourceExhaustedError(absl::StrCat(path, ": cannot initialise zlib"));
  }
  size_t consumed = 0;
  absl::Status status;
  while (true) {
    zs.next_in = const_cast<Bytef*>(in.data() + consumed);
    const size_t avail = std::min<size_t>(in.size() - consumed, std::numeric_limits<uInt>::max());
    zs.avail_in = static_cast<uInt>(avail);
    // Fill the reserved capacity first; past it, grow geometrically.
    const size_t old_size = out.size();
    size_t room = out.capacity() - old_size;
    if (room == 0) room = std::max<size_t>(old_size, size_t{1} << 20);
    room = std::min<size_t>(room, std::numeric_limits<uInt>::max());
    out.resize(old_size + room);
    zs.next_out = out.data() + old_size;
    zs.avail_out = static_cast<uInt>(room);
    const uInt avail_out_before = zs.avail_out;
    const int rc = inflate(&zs, Z_NO_FLUSH);
    out.resize(old_size + (avail_out_before - zs.avail_out));
    consumed += avail - zs.avail_in;
    if (out.size() > kMaxDecompressedBytes) {
      status = absl::InvalidArgumentError(absl::StrCat(
          path, ": decompresses to more than ", kMaxDecompressedBytes, " bytes; not an IDX file"));
      break;
    }
    if (rc == Z_STREAM_END) {
      if (consumed == in.size()) break;
      // Another gzip member may follow (gzip allows concatenation); anything else is garbage.
      if (in.size() - consumed >= 2 && in[consumed] == 0x1f && in[consumed + 1] == 0x8b) {
        inflateReset(&zs);
        continue;
      }
      status = absl::DataLossError(absl::StrCat(path, ": ", in.size() - consumed,
                                                " bytes of trailing data after the gzip stream"));
      break;
    }
    if (rc == Z_OK) continue;
    if (rc == Z_BUF_ERROR && consumed == in.size()) {
      status = absl::DataLossError(
          absl::StrCat(path, ": truncated gzip stream (ends after ", in.size(),
                       " compressed bytes, ", out.size(), " bytes decompressed)"));
      break;
    }
    if (rc == Z_BUF_ERROR) continue;  // needed more output room; the loop grows it
    status = absl::DataLossError(absl::StrCat(path, ": corrupt gzip stream: ",
                                              zs.msg != nullptr ? zs.msg : zError(rc)));
    break;
  }
  inflateEnd(&zs);
  if (!status.ok()) return status;
  return out;
}

absl::StatusOr<std::vector<uint8_t>> ReadMaybeGzipped(const std::string& path) {
  ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, ReadWholeFile(path));
  if (IsGzip(bytes)) return Gunzip(bytes, path);
  return bytes;
}

uint32_t BigEndian32(const uint8_t* p) {
  return uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | uint32_t{p[3]};
}

struct IdxFile {
  std::vector<uint32_t> dims;
  size_t data_offset = 0;
  std::vector<uint8_t> bytes;
};

// Parses and checks an IDX header: magic, then `ndims` big-endian sizes, then exactly
// product(dims) unsigned bytes.
absl::StatusOr<IdxFile> ReadIdx(const std::string& path, uint32_t magic, const char* what) {
  IdxFile idx;
  ASSIGN_OR_RETURN(idx.bytes, ReadMaybeGzipped(path));
  const std::vector<uint8_t>& b = idx.bytes;
  if (b.size() < 4) {
    return absl::DataLossError(
        absl::StrCat(path, ": truncated: ", b.size(), " bytes is too short for an IDX header"));
  }
  const uint32_t got_magic = BigEndian32(b.data());
  if (got_magic != magic) {
    char buf[64];
    std::snprintf(buf, sizeof(buf), "bad magic number 0x%08x (expected 0x%08x for %s)", got_magic,
                  magic, what);
    std::string msg = absl::StrCat(path, ": ", buf);
    if ((got_magic & 0xffffff00u) == (magic & 0xffffff00u)) {
      absl::StrAppend(&msg, "; wrong dimension count ", got_magic & 0xff, ", expected ",
                      magic & 0xff);
    }
    return absl::InvalidArgumentError(msg);
  }
  const uint32_t ndims = magic & 0xff;
  idx.data_offset = 4 + 4 * size_t{ndims};
  if (b.size() < idx.data_offset) {
    return absl::DataLossError(absl::StrCat(path, ": truncated: header needs ", idx.data_offset,
                                            " bytes, file has ", b.size()));
  }
  uint64_t expected = idx.data_offset;
  uint64_t elements = 1;
  for (uint32_t d = 0; d < ndims; ++d) {
    const uint32_t size = BigEndian32(b.data() + 4 + 4 * d);
    idx.dims.push_back(size);
    if (size != 0 && elements > std::numeric_limits<uint64_t>::max() / 2 / size) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": header dimensions are impossibly large"));
    }
    elements *= size;
  }
  expected += elements;
  if (b.size() < expected) {
    return absl::DataLossError(absl::StrCat(path, ": truncated: header promises ", expected,
                                            " bytes, file has ", b.size()));
  }
  if (b.size() > expected) {
    return absl::DataLossError(absl::StrCat(path, ": ", b.size() - expected,
                                            " bytes of trailing data (header promises ", expected,
                                            " bytes, file has ", b.size(), ")"));
  }
  return idx;
}

}  // namespace

absl::StatusOr<Dataset> LoadIdxPair(const std::string& images_path, const std::string& labels_path,
                                    int64_t limit) {
  if (limit < 0) {
    return absl::InvalidArgumentError(absl::StrCat("limit must be >= 0, got ", limit));
  }
  ASSIGN_OR_RETURN(IdxFile images, ReadIdx(images_path, kImagesMagic, "images"));
  ASSIGN_OR_RETURN(IdxFile labels, ReadIdx(labels_path, kLabelsMagic, "labels"));
  const uint32_t count = images.dims[0];
  const uint32_t rows = images.dims[1];
  const uint32_t cols = images.dims[2];
  if (rows == 0 || cols == 0 || rows > kMaxSide || cols > kMaxSide) {
    return absl::InvalidArgumentError(absl::StrCat(images_path, ": image size ", rows, "x", cols,
                                                   " is out of range (1..", kMaxSide, ")"));
  }
  if (labels.dims[0] != count) {
    return absl::InvalidArgumentError(absl::StrCat("image/label count mismatch: ", images_path,
                                                   " has ", count, " images, ", labels_path,
                                                   " has ", labels.dims[0], " labels"));
  }
  const uint8_t* label_bytes = labels.bytes.data() + labels.data_offset;
  for (uint32_t i = 0; i < count; ++i) {
    if (label_bytes[i] >= kClasses) {
      return absl::InvalidArgumentError(absl::StrCat(labels_path, ": label ", int{label_bytes[i]},
                                                     " at index ", i, " is out of range [0, ",
                                                     kClasses, ")"));
    }
  }

  Dataset data;
  data.count = limit > 0 ? std::min<int64_t>(limit, count) : count;
  data.rows = static_cast<int>(rows);
  data.cols = static_cast<int>(cols);
  const size_t pixels = static_cast<size_t>(data.count) * rows * cols;
  data.images.resize(pixels);
  const uint8_t* image_bytes = images.bytes.data() + images.data_offset;
  std::array<float, 256> scale;
  for (int v = 0; v < 256; ++v) scale[v] = static_cast<float>(v) / 255.0f;
  for (size_t i = 0; i < pixels; ++i) data.images[i] = scale[image_bytes[i]];
  data.labels.assign(label_bytes, label_bytes + data.count);
  return data;
}

absl::StatusOr<Dataset> LoadFashionMnist(const std::string& dir, Split split, int64_t limit) {
  const std::string prefix = split == Split::kTrain ? "train" : "t10k";
  // Prefer the gzipped name Debian installs; fall back to an uncompressed copy.
  auto find = [&](const std::string& stem) -> absl::StatusOr<std::string> {
    const std::string base = absl::StrCat(dir, "/", prefix, "-", stem);
    std::error_code ec;
    for (const std::string& candidate : {base + ".gz", base}) {
      if (std::filesystem::exists(candidate, ec)) return candidate;
    }
    return absl::NotFoundError(absl::StrCat("Fashion-MNIST file not found: neither ", base,
                                            ".gz nor ", base,
                                            " exists (install dataset-fashion-mnist or pass "
                                            "--data DIR)"));
  };
  ASSIGN_OR_RETURN(std::string images_path, find("images-idx3-ubyte"));
  ASSIGN_OR_RETURN(std::string labels_path, find("labels-idx1-ubyte"));
  return LoadIdxPair(images_path, labels_path, limit);
}

absl::StatusOr<Dataset> SliceDataset(const Dataset& data, int part, int parts) {
  if (parts < 1 || part < 0 || part >= parts) {
    return absl::InvalidArgumentError(
        absl::StrCat("slice ", part, " of ", parts, ": need 0 <= part < parts"));
  }
  const int64_t pixels = int64_t{data.rows} * data.cols;
  if (data.count < 0 || static_cast<int64_t>(data.labels.size()) != data.count ||
      static_cast<int64_t>(data.images.size()) != data.count * pixels) {
    return absl::InvalidArgumentError(absl::StrCat(
        "dataset is inconsistent: count ", data.count, ", ", data.labels.size(), " labels, ",
        data.images.size(), " pixels for ", data.rows, "x", data.cols, " images"));
  }
  const int64_t begin = part * data.count / parts;
  const int64_t end = (part + 1) * data.count / parts;
  Dataset slice;
  slice.count = end - begin;
  slice.rows = data.rows;
  slice.cols = data.cols;
  slice.images.assign(data.images.begin() + begin * pixels, data.images.begin() + end * pixels);
  slice.labels.assign(data.labels.begin() + begin, data.labels.begin() + end);
  return slice;
}

std::vector<int64_t> ShuffledOrder(int64_t count, uint64_t seed) {
  if (count <= 0) return {};
  std::vector<int64_t> order(static_cast<size_t>(count));
  std::iota(order.begin(), order.end(), int64_t{0});
  // Fisher-Yates with an unbiased bounded draw written out here (not std::shuffle or
  // std::uniform_int_distribution, whose algorithms differ between standard libraries), so a
  // seed gives the same order on every platform.
  std::mt19937_64 rng(seed);
  for (uint64_t i = static_cast<uint64_t>(count) - 1; i > 0; --i) {
    const uint64_t range = i + 1;
    const uint64_t limit = std::numeric_limits<uint64_t>::max() -
                           std::numeric_limits<uint64_t>::max() % range;
    uint64_t r = rng();
    while (r >= limit) r = rng();
    std::swap(order[i], order[r % range]);
  }
  return order;
}

}  // namespace orrery::learner
