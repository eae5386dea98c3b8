#include "learner/layers/fixed_dense_step.h"

#include <algorithm>
#include <vector>

#include <glog/logging.h>
#include "quant/counter_rng.h"
#include "quant/fixed_convert.h"
#include "quant/fixed_gemm.h"

namespace orrery::learner {
namespace {

using quant::FixedFormat;
using quant::FixedMatrixView;
using quant::RandomStream;

// One purpose per rounded quantity of a layer.
enum Purpose : uint64_t {
  kInput = 0,
  kWeights = 1,
  kBias = 2,
  kOutput = 3,
  kError = 4,
  kWeightGrad = 5,
  kBiasGrad = 6,
  kDiffSrc = 7,
};

class FixedDenseStep final : public LayerStep {
 public:
  FixedDenseStep(const FixedDenseBuffers& b, const FixedCompute* fixed)
      : b_(b),
        fixed_(fixed),
        a_(fixed->activation_format()),
        w_(fixed->weight_format()),
        xq_(b.batch * b.inputs),
        wq_(b.units * b.inputs),
        bq_(b.bias.size()),
        acc_(b.batch * b.units),
        yq_(b.batch * b.units),
        eq_(b.batch * b.units),
        dwq_(b.units * b.inputs),
        dsq_(b.diff_src.empty() ? 0 : b.batch * b.inputs) {}

  void Forward(dnnl::stream& stream) override {
    stream.wait();
    const uint64_t pass = *fixed_->pass;
    Check(quant::Quantize(b_.src, a_, rounding(), Stream(pass, kInput), xq_));
    Check(quant::Quantize(b_.weights, w_, rounding(), Stream(pass, kWeights), wq_));
    // x [batch, inputs] times W^T: W is stored [units, inputs], so read it transposed.
    const FixedMatrixView x{xq_.data(), b_.batch, b_.inputs, b_.inputs, false, a_};
    const FixedMatrixView wt{wq_.data(), b_.inputs, b_.units, b_.inputs, true, w_};
    Check(quant::FixedGemmExact(x, wt, Options(pass, kOutput), acc_.data(), b_.units));
    // The exact sums have FL_A + FL_W fractional bits; the bias (FL_W) joins them exactly before
    // the one rounding of each output to <A>.
    const RandomStream out_stream = Stream(pass, kOutput);
    if (!b_.bias.empty()) {
      Check(quant::Quantize(b_.bias, w_, rounding(), Stream(pass, kBias), bq_));
    }
    if (!bq_.empty()) {
      for (int64_t i = 0; i < b_.batch; ++i) {
        int64_t* row = acc_.data() + i * b_.units;
        for (int64_t j = 0; j < b_.units; ++j) {
          row[j] += static_cast<int64_t>(bq_[j]) * (int64_t{1} << a_.fl);
        }
      }
    }
    // Output k = i * units + j draws counter k of the output stream, as FixedGemm's outputs do.
    quant::RoundAccumulators(acc_, w_.fl, rounding(), out_stream, yq_);
    Check(quant::Dequantize(yq_, a_, b_.dst));
    for (float& y : b_.dst) y = Activate(y);
  }

  void Backward(dnnl::stream& stream) override {
    stream.wait();
    const uint64_t pass = *fixed_->pass;
    const size_t n = b_.diff_dst.size();
    for (size_t k = 0; k < n; ++k) {
      if (!PassesGradient(b_.dst[k])) b_.diff_dst[k] = 0.0f;
    }
    Check(quant::Quantize(b_.diff_dst, w_, rounding(), Stream(pass, kError), eq_));
    // dW [units, inputs] = e^T [units, batch] * x [batch, inputs].
    const FixedMatrixView et{eq_.data(), b_.units, b_.batch, b_.units, true, w_};
    const FixedMatrixView x{xq_.data(), b_.batch, b_.inputs, b_.inputs, false, a_};
    Check(quant::FixedGemm(et, x, w_, Options(pass, kWeightGrad), dwq_.data(), b_.inputs));
    Check(quant::Dequantize(dwq_, w_, b_.diff_weights));
    if (!b_.diff_bias.empty()) {
      const RandomStream s = Stream(pass, kBiasGrad);
      for (int64_t j = 0; j < b_.units; ++j) {
        int64_t sum = 0;
        for (int64_t i = 0; i < b_.batch; ++i) sum += eq_[i * b_.units + j];
        const int16_t q = quant::RoundAccumulator(
            sum, 0, rounding(), quant::CounterRandom(s.key, s.offset + static_cast<uint64_t>(j)));
        b_.diff_bias[j] = quant::ToFloat(q, w_);
      }
    }
    if (!b_.diff_src.empty()) {
      // diff_src [batch, inputs] = e [batch, units] * W [units, inputs].
      const FixedMatrixView e{eq_.data(), b_.batch, b_.units, b_.units, false, w_};
      const FixedMatrixView w{wq_.data(), b_.units, b_.inputs, b_.inputs, false, w_};
      Check(quant::FixedGemm(e, w, w_, Options(pass, kDiffSrc), dsq_.data(), b_.inputs));
      Check(quant::Dequantize(dsq_, w_, b_.diff_src));
    }
  }

 private:
  quant::Rounding rounding() const { return fixed_->options.rounding; }

  RandomStream Stream(uint64_t pass, Purpose purpose) const {
    return RandomStream::For(fixed_->seed, pass,
                             (static_cast<uint64_t>(b_.layer_index) << 8) | purpose);
  }

  quant::GemmOptions Options(uint64_t pass, Purpose purpose) {
    quant::GemmOptions o;
    o.rounding = rounding();
    o.stream = Stream(pass, purpose);
    o.threads = fixed_->threads;
    o.workspace = &workspace_;
    return o;
  }

  float Activate(float y) const {
    switch (b_.activation) {
      case Activation::kRelu:
        return std::max(y, 0.0f);
      case Activation::kRelu6:
        return std::clamp(y, 0.0f, 6.0f);
      case Activation::kNone:
        break;
    }
    return y;
  }

  // The activation's derivative from its output, as oneDNN's *_use_dst_for_bwd computes it.
  bool PassesGradient(float dst) const {
    switch (b_.activation) {
      case Activation::kRelu:
        return dst > 0.0f;
      case Activation::kRelu6:
        return dst > 0.0f && dst < 6.0f;
      case Activation::kNone:
        break;
    }
    return true;
  }

  // The buffers were sized from the same shapes when the step was built, so a failure here is a
  // bug in this file, not bad input.
  static void Check(const absl::Status& status) { CHECK(status.ok()) << status; }

  const FixedDenseBuffers b_;
  const FixedCompute* const fixed_;
  const FixedFormat a_;
  const FixedFormat w_;
  std::vector<int16_t> xq_;   // quantized input, kept for the weight gradient
  std::vector<int16_t> wq_;   // quantized weights, kept for diff_src
  std::vector<int16_t> bq_;
  std::vector<int64_t> acc_;  // exact forward sums
  std::vector<int16_t> yq_;   // their rounding to <A>
  std::vector<int16_t> eq_;   // quantized errors
  std::vector<int16_t> dwq_;
  std::vector<int16_t> dsq_;
  quant::GemmWorkspace workspace_;
};

}  // namespace

std::unique_ptr<LayerStep> MakeFixedDenseStep(const FixedDenseBuffers& buffers,
                                              const FixedCompute* fixed) {
  return std::make_unique<FixedDenseStep>(buffers, fixed);
}

}  // namespace orrery::learner
