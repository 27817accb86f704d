// An embedding's gradient as rows, and Adam / AdamW over the whole embedding from them: the exact
// dense update, without the dense gradient.
//
// Adam moves every row at every step (the moments of a row outside the batch still decay), so the
// update has to stream the weights and both moments. torch's fused Adam also streams a dense
// gradient that is zero outside the batch's rows, and that gradient has to be zero-filled and
// scattered into first: 20 MB written and read again per step for 50,000 x 100 floats. Here the
// gradient stays the (rows, values) pair the embedding's backward made, and one pass reads each
// row's gradient from it, or zero.
//
// Element-wise the same formulas as torch's fused Adam (L2 weight decay added to the gradient;
// AdamW's decoupled decay scaling the weight first); results agree with it to rounding.

#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <tuple>
#include <vector>

namespace {

struct AdamStep {
  float beta1, beta2, one_minus_beta1, one_minus_beta2;
  float step_size;             // lr / (1 - beta1^step)
  float bias_correction2_sqrt;  // sqrt(1 - beta2^step)
  float eps, l2, decay;          // l2: Adam's weight decay; decay: AdamW's factor 1 - lr * weight_decay
};

inline void update_row(const AdamStep& s, const float* __restrict__ grad, float* __restrict__ weight,
                       float* __restrict__ exp_avg, float* __restrict__ exp_avg_sq, int64_t width) {
#pragma omp simd
  for (int64_t k = 0; k < width; ++k) {
    const float w = weight[k] * s.decay;
    const float g = grad[k] + s.l2 * w;
    const float m = exp_avg[k] * s.beta1 + g * s.one_minus_beta1;
    const float v = exp_avg_sq[k] * s.beta2 + g * g * s.one_minus_beta2;
    exp_avg[k] = m;
    exp_avg_sq[k] = v;
    weight[k] = w - s.step_size * m / (std::sqrt(v) / s.bias_correction2_sqrt + s.eps);
  }
}

}  // namespace

// The gradient of `weight[ids]` (ids: any shape, int64 in [0, V); grad: (ids.numel(), E) float32)
// as rows: (rows, values), one row per distinct id in increasing order, each the sum of its ids'
// gradients in the order they occur (as index_add_ sums them); the padding row is listed with a
// zero gradient when it occurs. Two passes over the ids and one over V flags, no sort.
std::tuple<at::Tensor, at::Tensor> embedding_rows_grad(const at::Tensor& ids, const at::Tensor& grad,
                                                       int64_t num_weights, int64_t padding) {
  TORCH_CHECK(ids.scalar_type() == at::kLong, "ids must be int64");
  TORCH_CHECK(grad.dim() == 2 && grad.scalar_type() == at::kFloat && grad.size(0) == ids.numel(),
              "grad must be (ids, width) float32");
  const at::Tensor flat = ids.contiguous().view(-1);
  const at::Tensor source = grad.contiguous();
  const int64_t* id = flat.data_ptr<int64_t>();
  const int64_t count = flat.numel(), E = grad.size(1);
  std::vector<int64_t> slot(num_weights, -1);
  for (int64_t i = 0; i < count; ++i) {
    TORCH_CHECK(id[i] >= 0 && id[i] < num_weights, "an id is outside the embedding");
    slot[id[i]] = 0;
  }
  std::vector<int64_t> distinct;
  for (int64_t r = 0; r < num_weights; ++r) {
    if (slot[r] == 0) {
      slot[r] = static_cast<int64_t>(distinct.size());
      distinct.push_back(r);
    }
  }
  const int64_t U = static_cast<int64_t>(distinct.size());
  at::Tensor rows = at::empty({U}, flat.options());
  std::copy(distinct.begin(), distinct.end(), rows.data_ptr<int64_t>());
  at::Tensor values = at::zeros({U, E}, source.options());
  float* out = values.data_ptr<float>();
  const float* in = source.data_ptr<float>();
  for (int64_t i = 0; i < count; ++i) {
    if (id[i] == padding) continue;
    float* __restrict__ target = out + slot[id[i]] * E;
    const float* __restrict__ row = in + i * E;
#pragma omp simd
    for (int64_t k = 0; k < E; ++k) target[k] += row[k];
  }
  return {rows, values};
}

// weight, exp_avg, exp_avg_sq: (V, E) float32, contiguous, updated in place. rows: (U) int64,
// strictly increasing (a coalesced sparse gradient's indices); values: (U, E) float32, the
// gradient of those rows. `step` counts this update (1 on the first).
void adam_from_rows(at::Tensor weight, at::Tensor exp_avg, at::Tensor exp_avg_sq, const at::Tensor& rows,
                    const at::Tensor& values, double lr, double beta1, double beta2, double eps,
                    double weight_decay, bool decoupled, int64_t step) {
  TORCH_CHECK(weight.dim() == 2 && weight.scalar_type() == at::kFloat && weight.is_contiguous(),
              "the weight must be a contiguous 2-d float32 tensor");
  for (const auto* t : {&exp_avg, &exp_avg_sq}) {
    TORCH_CHECK(t->sizes() == weight.sizes() && t->scalar_type() == at::kFloat && t->is_contiguous(),
                "the moments must be contiguous float32 tensors shaped like the weight");
  }
  const int64_t V = weight.size(0), E = weight.size(1);
  TORCH_CHECK(rows.dim() == 1 && rows.scalar_type() == at::kLong, "rows must be a 1-d int64 tensor");
  TORCH_CHECK(values.scalar_type() == at::kFloat && values.is_contiguous() &&
                  values.sizes() == at::IntArrayRef({rows.size(0), E}),
              "values must be a contiguous float32 (rows, width) tensor");
  TORCH_CHECK(step >= 1, "step counts from 1");
  const at::Tensor index = rows.contiguous();
  const int64_t* row = index.data_ptr<int64_t>();
  const int64_t count = index.numel();
  for (int64_t i = 0; i < count; ++i) {
    TORCH_CHECK(row[i] >= 0 && row[i] < V && (i == 0 || row[i] > row[i - 1]),
                "rows must be increasing and within the weight");
  }
  AdamStep s;
  s.beta1 = static_cast<float>(beta1);
  s.beta2 = static_cast<float>(beta2);
  s.one_minus_beta1 = static_cast<float>(1 - beta1);
  s.one_minus_beta2 = static_cast<float>(1 - beta2);
  s.step_size = static_cast<float>(lr / (1 - std::pow(beta1, step)));
  s.bias_correction2_sqrt = static_cast<float>(std::sqrt(1 - std::pow(beta2, step)));
  s.eps = static_cast<float>(eps);
  s.l2 = decoupled ? 0.0f : static_cast<float>(weight_decay);
  s.decay = decoupled ? static_cast<float>(1 - lr * weight_decay) : 1.0f;

  const std::vector<float> zero(E, 0.0f);
  const float* grad = values.data_ptr<float>();
  float* w = weight.data_ptr<float>();
  float* m = exp_avg.data_ptr<float>();
  float* v = exp_avg_sq.data_ptr<float>();
  at::parallel_for(0, V, 256, [&](int64_t first, int64_t last) {
    int64_t next = std::lower_bound(row, row + count, first) - row;  // the next row with a gradient
    for (int64_t r = first; r < last; ++r) {
      const float* g = zero.data();
      if (next < count && row[next] == r) g = grad + (next++) * E;
      update_row(s, g, w + r * E, m + r * E, v + r * E, E);
    }
  });
}
