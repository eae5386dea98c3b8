#include "learner/fashion_mnist.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <string>
#include <vector>

namespace orrery::learner {
namespace {

using ::testing::HasSubstr;

constexpr uint32_t kImagesMagic = 0x00000803;
constexpr uint32_t kLabelsMagic = 0x00000801;

void PutBigEndian32(std::vector<uint8_t>* out, uint32_t v) {
  out->push_back(static_cast<uint8_t>(v >> 24));
  out->push_back(static_cast<uint8_t>(v >> 16));
  out->push_back(static_cast<uint8_t>(v >> 8));
  out->push_back(static_cast<uint8_t>(v));
}

// Pixel value of image i at offset p: distinct enough to catch off-by-one slicing.
uint8_t Pixel(uint32_t i, uint32_t p) { return static_cast<uint8_t>((i * 7 + p) % 256); }

std::vector<uint8_t> ImagesIdx(uint32_t count, uint32_t rows, uint32_t cols) {
  std::vector<uint8_t> b;
  PutBigEndian32(&b, kImagesMagic);
  PutBigEndian32(&b, count);
  PutBigEndian32(&b, rows);
  PutBigEndian32(&b, cols);
  for (uint32_t i = 0; i < count; ++i) {
    for (uint32_t p = 0; p < rows * cols; ++p) b.push_back(Pixel(i, p));
  }
  return b;
}

std::vector<uint8_t> LabelsIdx(uint32_t count) {
  std::vector<uint8_t> b;
  PutBigEndian32(&b, kLabelsMagic);
  PutBigEndian32(&b, count);
  for (uint32_t i = 0; i < count; ++i) b.push_back(static_cast<uint8_t>(i % 10));
  return b;
}

std::vector<uint8_t> Gzip(const std::vector<uint8_t>& in) {
  z_stream zs{};
  EXPECT_EQ(deflateInit2(&zs, Z_BEST_SPEED, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY),
            Z_OK);
  std::vector<uint8_t> out(deflateBound(&zs, in.size()) + 64);
  zs.next_in = const_cast<Bytef*>(in.data());
  zs.avail_in = static_cast<uInt>(in.size());
  zs.next_out = out.data();
  zs.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&zs, Z_FINISH), Z_STREAM_END);
  out.resize(zs.total_out);
  deflateEnd(&zs);
  return out;
}

class IdxFilesTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    dir_ = std::filesystem::path(::testing::TempDir()) /
           (std::string("fashion_mnist_test_") + info->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string Write(const std::string& name, const std::vector<uint8_t>& bytes) {
    const std::string path = (dir_ / name).string();
    std::ofstream out(path, std::ios::binary);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    return path;
  }

  std::string LoadError(const std::vector<uint8_t>& images, const std::vector<uint8_t>& labels) {
    absl::StatusOr<Dataset> d =
        LoadIdxPair(Write("images.idx", images), Write("labels.idx", labels));
    EXPECT_FALSE(d.ok());
    return d.ok() ? "" : std::string(d.status().message());
  }

  std::filesystem::path dir_;
};

TEST_F(IdxFilesTest, PlainFilesParse) {
  absl::StatusOr<Dataset> d =
      LoadIdxPair(Write("i", ImagesIdx(25, 3, 4)), Write("l", LabelsIdx(25)));
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->count, 25);
  EXPECT_EQ(d->rows, 3);
  EXPECT_EQ(d->cols, 4);
  ASSERT_EQ(d->images.size(), 25u * 12);
  ASSERT_EQ(d->labels.size(), 25u);
  for (uint32_t i = 0; i < 25; ++i) {
    EXPECT_EQ(d->labels[i], static_cast<int32_t>(i % 10));
    for (uint32_t p = 0; p < 12; ++p) {
      ASSERT_FLOAT_EQ(d->images[i * 12 + p], Pixel(i, p) / 255.0f);
    }
  }
}

TEST_F(IdxFilesTest, GzippedFilesParseLikePlainOnes) {
  absl::StatusOr<Dataset> plain =
      LoadIdxPair(Write("i", ImagesIdx(40, 5, 5)), Write("l", LabelsIdx(40)));
  absl::StatusOr<Dataset> gz = LoadIdxPair(Write("i.gz", Gzip(ImagesIdx(40, 5, 5))),
                                           Write("l.gz", Gzip(LabelsIdx(40))));
  ASSERT_TRUE(plain.ok()) << plain.status();
  ASSERT_TRUE(gz.ok()) << gz.status();
  EXPECT_EQ(gz->images, plain->images);
  EXPECT_EQ(gz->labels, plain->labels);
}

TEST_F(IdxFilesTest, ConcatenatedGzipMembersParse) {
  const std::vector<uint8_t> images = ImagesIdx(10, 2, 2);
  const std::vector<uint8_t> first(images.begin(), images.begin() + 20);
  const std::vector<uint8_t> second(images.begin() + 20, images.end());
  std::vector<uint8_t> gz = Gzip(first);
  const std::vector<uint8_t> gz2 = Gzip(second);
  gz.insert(gz.end(), gz2.begin(), gz2.end());
  absl::StatusOr<Dataset> d = LoadIdxPair(Write("i.gz", gz), Write("l", LabelsIdx(10)));
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->count, 10);
}

TEST_F(IdxFilesTest, LimitKeepsFirstExamples) {
  absl::StatusOr<Dataset> d =
      LoadIdxPair(Write("i", ImagesIdx(30, 2, 2)), Write("l", LabelsIdx(30)), 7);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->count, 7);
  EXPECT_EQ(d->images.size(), 28u);
  EXPECT_EQ(d->labels.size(), 7u);
  EXPECT_FLOAT_EQ(d->images[27], Pixel(6, 3) / 255.0f);
  absl::StatusOr<Dataset> all =
      LoadIdxPair(Write("i", ImagesIdx(30, 2, 2)), Write("l", LabelsIdx(30)), 1000);
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->count, 30);
  EXPECT_FALSE(LoadIdxPair(Write("i", ImagesIdx(30, 2, 2)), Write("l", LabelsIdx(30)), -1).ok());
}

TEST_F(IdxFilesTest, TruncatedImagesNameFileAndSizes) {
  std::vector<uint8_t> images = ImagesIdx(10, 4, 4);  // 16 + 160 bytes
  images.resize(100);
  const std::string msg = LoadError(images, LabelsIdx(10));
  EXPECT_THAT(msg, HasSubstr("images.idx"));
  EXPECT_THAT(msg, HasSubstr("truncated"));
  EXPECT_THAT(msg, HasSubstr("176"));
  EXPECT_THAT(msg, HasSubstr("100"));
}

TEST_F(IdxFilesTest, TruncatedHeaderIsRejected) {
  EXPECT_THAT(LoadError({0, 0, 8}, LabelsIdx(1)), HasSubstr("truncated"));
  EXPECT_THAT(LoadError({0, 0, 8, 3, 0, 0}, LabelsIdx(1)), HasSubstr("truncated"));
  EXPECT_THAT(LoadError({}, LabelsIdx(1)), HasSubstr("truncated"));
}

TEST_F(IdxFilesTest, TrailingBytesAreRejected) {
  std::vector<uint8_t> labels = LabelsIdx(10);
  labels.push_back(0);
  labels.push_back(0);
  const std::string msg = LoadError(ImagesIdx(10, 2, 2), labels);
  EXPECT_THAT(msg, HasSubstr("labels.idx"));
  EXPECT_THAT(msg, HasSubstr("2 bytes of trailing data"));
}

TEST_F(IdxFilesTest, WrongMagicIsRejected) {
  std::vector<uint8_t> images = ImagesIdx(3, 2, 2);
  images[2] = 0x0d;  // float data instead of unsigned bytes
  EXPECT_THAT(LoadError(images, LabelsIdx(3)),
              HasSubstr("bad magic number 0x00000d03 (expected 0x00000803 for images)"));
  // Labels and images swapped.
  EXPECT_THAT(LoadError(LabelsIdx(3), ImagesIdx(3, 2, 2)), HasSubstr("bad magic number"));
}

TEST_F(IdxFilesTest, WrongDimensionCountIsRejected) {
  std::vector<uint8_t> images = ImagesIdx(3, 2, 2);
  images[3] = 2;
  EXPECT_THAT(LoadError(images, LabelsIdx(3)), HasSubstr("wrong dimension count 2, expected 3"));
}

TEST_F(IdxFilesTest, CorruptGzipIsRejected) {
  std::vector<uint8_t> gz = Gzip(ImagesIdx(50, 8, 8));
  for (size_t i = 12; i < gz.size() - 8; i += 3) gz[i] ^= 0x5a;
  const std::string msg = LoadError(gz, LabelsIdx(50));
  EXPECT_THAT(msg, HasSubstr("images.idx"));
  EXPECT_THAT(msg, HasSubstr("gzip"));
}

TEST_F(IdxFilesTest, CorruptGzipChecksumIsRejected) {
  std::vector<uint8_t> gz = Gzip(ImagesIdx(50, 8, 8));
  gz[gz.size() - 6] ^= 0xff;  // CRC-32 in the trailer
  EXPECT_THAT(LoadError(gz, LabelsIdx(50)), HasSubstr("corrupt gzip stream"));
}

TEST_F(IdxFilesTest, TruncatedGzipIsRejected) {
  std::vector<uint8_t> gz = Gzip(ImagesIdx(50, 8, 8));
  gz.resize(gz.size() / 2);
  EXPECT_THAT(LoadError(gz, LabelsIdx(50)), HasSubstr("truncated gzip stream"));
}

TEST_F(IdxFilesTest, GarbageAfterGzipIsRejected) {
  std::vector<uint8_t> gz = Gzip(ImagesIdx(5, 2, 2));
  gz.push_back('x');
  EXPECT_THAT(LoadError(gz, LabelsIdx(5)), HasSubstr("trailing data after the gzip stream"));
}

TEST_F(IdxFilesTest, CountMismatchIsRejected) {
  const std::string msg = LoadError(ImagesIdx(10, 2, 2), LabelsIdx(9));
  EXPECT_THAT(msg, HasSubstr("count mismatch"));
  EXPECT_THAT(msg, HasSubstr("10 images"));
  EXPECT_THAT(msg, HasSubstr("9 labels"));
}

TEST_F(IdxFilesTest, LabelOutOfRangeIsRejected) {
  std::vector<uint8_t> labels = LabelsIdx(10);
  labels[8 + 6] = 10;
  const std::string msg = LoadError(ImagesIdx(10, 2, 2), labels);
  EXPECT_THAT(msg, HasSubstr("labels.idx: label 10 at index 6 is out of range"));
}

TEST_F(IdxFilesTest, ZeroSizedImagesAreRejected) {
  EXPECT_THAT(LoadError(ImagesIdx(4, 0, 3), LabelsIdx(4)), HasSubstr("out of range"));
}

TEST_F(IdxFilesTest, ImpossibleDimensionsAreRejectedWithoutAllocating) {
  std::vector<uint8_t> images;
  PutBigEndian32(&images, kImagesMagic);
  PutBigEndian32(&images, 0xffffffffu);
  PutBigEndian32(&images, 0xffffffffu);
  PutBigEndian32(&images, 0xffffffffu);
  EXPECT_FALSE(LoadError(images, LabelsIdx(1)).empty());
}

TEST_F(IdxFilesTest, MissingFilesAreNotFound) {
  absl::StatusOr<Dataset> d = LoadIdxPair((dir_ / "nope").string(), Write("l", LabelsIdx(1)));
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(d.status().message(), HasSubstr("nope"));

  absl::StatusOr<Dataset> dir = LoadFashionMnist(dir_.string(), Split::kTrain);
  ASSERT_FALSE(dir.ok());
  EXPECT_EQ(dir.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(dir.status().message(), HasSubstr("train-images-idx3-ubyte"));
}

TEST_F(IdxFilesTest, LoadFashionMnistFindsPlainAndGzippedNames) {
  Write("t10k-images-idx3-ubyte", ImagesIdx(12, 28, 28));
  Write("t10k-labels-idx1-ubyte.gz", Gzip(LabelsIdx(12)));
  absl::StatusOr<Dataset> d = LoadFashionMnist(dir_.string(), Split::kTest);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->count, 12);
}

Dataset Sequential(int64_t count) {
  Dataset d;
  d.count = count;
  d.rows = 2;
  d.cols = 3;
  for (int64_t i = 0; i < count; ++i) {
    d.labels.push_back(static_cast<int32_t>(i % 10));
    for (int p = 0; p < 6; ++p) d.images.push_back(static_cast<float>(i * 6 + p));
  }
  return d;
}

TEST(SliceDatasetTest, SlicesPartitionTheDataExactly) {
  for (int64_t count : {0, 1, 7, 100, 101}) {
    const Dataset d = Sequential(count);
    for (int parts : {1, 2, 3, 7, 8}) {
      std::vector<float> images;
      std::vector<int32_t> labels;
      int64_t total = 0;
      for (int part = 0; part < parts; ++part) {
        absl::StatusOr<Dataset> s = SliceDataset(d, part, parts);
        ASSERT_TRUE(s.ok()) << s.status();
        EXPECT_EQ(s->rows, 2);
        EXPECT_EQ(s->cols, 3);
        EXPECT_EQ(s->labels.size(), static_cast<size_t>(s->count));
        EXPECT_EQ(s->images.size(), static_cast<size_t>(s->count) * 6);
        // Slices differ in size by at most one.
        EXPECT_LE(s->count, count / parts + 1);
        EXPECT_GE(s->count, count / parts);
        total += s->count;
        images.insert(images.end(), s->images.begin(), s->images.end());
        labels.insert(labels.end(), s->labels.begin(), s->labels.end());
      }
      EXPECT_EQ(total, count);
      EXPECT_EQ(images, d.images) << count << " / " << parts;
      EXPECT_EQ(labels, d.labels) << count << " / " << parts;
    }
  }
}

TEST(SliceDatasetTest, BadPartIsRejected) {
  const Dataset d = Sequential(10);
  EXPECT_EQ(SliceDataset(d, 2, 2).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SliceDataset(d, -1, 2).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(SliceDataset(d, 0, 0).status().code(), absl::StatusCode::kInvalidArgument);
  Dataset broken = d;
  broken.images.pop_back();
  EXPECT_EQ(SliceDataset(broken, 0, 2).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(ShuffledOrderTest, IsAPermutationReproduciblePerSeed) {
  const std::vector<int64_t> a = ShuffledOrder(1000, 42);
  const std::vector<int64_t> b = ShuffledOrder(1000, 42);
  const std::vector<int64_t> c = ShuffledOrder(1000, 43);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  std::vector<int64_t> sorted = a;
  std::sort(sorted.begin(), sorted.end());
  std::vector<int64_t> identity(1000);
  std::iota(identity.begin(), identity.end(), 0);
  EXPECT_EQ(sorted, identity);
  EXPECT_NE(a, identity);
  EXPECT_TRUE(ShuffledOrder(0, 1).empty());
  EXPECT_EQ(ShuffledOrder(1, 1), std::vector<int64_t>{0});
}

TEST(ShuffledOrderTest, IsStableAcrossPlatforms) {
  // Pinned output: the shuffle uses its own bounded draw on mt19937_64, not std::shuffle, so
  // these values must not change with the standard library.
  EXPECT_EQ(ShuffledOrder(10, 7), (std::vector<int64_t>{0, 7, 4, 9, 3, 1, 2, 8, 6, 5}));
}

class RealFashionMnistTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!std::filesystem::exists(std::string(kDefaultFashionMnistDir) +
                                 "/train-images-idx3-ubyte.gz")) {
      GTEST_SKIP() << "dataset-fashion-mnist is not installed";
    }
  }
};

TEST_F(RealFashionMnistTest, TrainSetHas60000BalancedImages) {
  absl::StatusOr<Dataset> d = LoadFashionMnist(kDefaultFashionMnistDir, Split::kTrain);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->count, 60000);
  EXPECT_EQ(d->rows, 28);
  EXPECT_EQ(d->cols, 28);
  EXPECT_EQ(d->images.size(), 60000u * 784);
  std::array<int, 10> histogram{};
  for (int32_t label : d->labels) {
    ASSERT_GE(label, 0);
    ASSERT_LT(label, 10);
    ++histogram[label];
  }
  for (int c = 0; c < 10; ++c) EXPECT_EQ(histogram[c], 6000) << "class " << c;
  const auto [lo, hi] = std::minmax_element(d->images.begin(), d->images.end());
  EXPECT_EQ(*lo, 0.0f);
  EXPECT_EQ(*hi, 1.0f);
}

TEST_F(RealFashionMnistTest, TestSetHas10000Images) {
  absl::StatusOr<Dataset> d = LoadFashionMnist(kDefaultFashionMnistDir, Split::kTest);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->count, 10000);
  EXPECT_EQ(d->rows, 28);
  EXPECT_EQ(d->cols, 28);
  EXPECT_EQ(d->labels.size(), 10000u);
}

TEST_F(RealFashionMnistTest, LimitTakesAPrefix) {
  absl::StatusOr<Dataset> full = LoadFashionMnist(kDefaultFashionMnistDir, Split::kTest);
  absl::StatusOr<Dataset> some = LoadFashionMnist(kDefaultFashionMnistDir, Split::kTest, 500);
  ASSERT_TRUE(full.ok()) << full.status();
  ASSERT_TRUE(some.ok()) << some.status();
  EXPECT_EQ(some->count, 500);
  EXPECT_TRUE(std::equal(some->labels.begin(), some->labels.end(), full->labels.begin()));
  EXPECT_TRUE(std::equal(some->images.begin(), some->images.end(), full->images.begin()));
}

}  // namespace
}  // namespace orrery::learner
