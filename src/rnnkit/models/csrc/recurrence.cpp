// The sequential part of the LSTM / GRU / Elman RNN forward and backward passes on CPU.
//
// Everything that does not depend on the previous time step (input projections, weight and input
// gradients) is batched into large matrix products in Python (rnnkit/models/compiled.py). What is
// left is a loop over time with one small matrix product per step; in Python each step also pays
// about ten dispatches of small element-wise ops, which costs more than the product itself. Here
// each step is one product plus one fused, vectorised element-wise pass over the batch.
//
// Layout: time-major, contiguous float32 buffers: (T, B, k*H) gate buffers, (T + 1, B, H) states
// with row 0 the zero initial state. The recurrent weight may be float32 or bfloat16: it sets the
// dtype of the per-step product (bfloat16 on CPUs with native support, for mixed precision); states,
// gates and gradients stay float32.

#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <cmath>

namespace {

inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

constexpr int64_t kRowsPerTask = 8;  // batch rows per parallel task

// The per-step recurrent product `lhs @ rhs` in the weight's dtype, read back as float32.
// `lhs_low` mirrors the float32 left operand in the low-precision dtype when the weight is one.
class StepProduct {
 public:
  StepProduct(const at::Tensor& rhs, int64_t batch)
      : rhs_(rhs),
        inner_(rhs.size(0)),
        width_(rhs.size(1)),
        out_(at::empty({batch, width_}, rhs.options())),
        lhs_low_(rhs.scalar_type() != at::kFloat ? at::empty({batch, inner_}, rhs.options()) : at::Tensor()) {
    TORCH_CHECK(rhs.is_contiguous() && (rhs.scalar_type() == at::kFloat || rhs.scalar_type() == at::kBFloat16),
                "the recurrent weight must be a contiguous float32 or bfloat16 matrix");
    if (lhs_low_.defined()) {
      out_low_ = out_.data_ptr<at::BFloat16>();
      lhs_low_ptr_ = lhs_low_.data_ptr<at::BFloat16>();
    } else {
      out_float_ = out_.data_ptr<float>();
    }
  }

  // Computes lhs @ rhs; `lhs` is the float32 operand, replaced by its mirror for a bfloat16 weight.
  void run(const at::Tensor& lhs) { at::mm_out(out_, lhs_low_.defined() ? lhs_low_ : lhs, rhs_); }

  // out[:] += product[row, :], for a float32 row of the product's width.
  void add_row_to(int64_t row, float* out) const {
    if (out_low_ != nullptr) {
      const at::BFloat16* p = out_low_ + row * width_;
      for (int64_t j = 0; j < width_; ++j) out[j] += static_cast<float>(p[j]);
    } else {
      const float* p = out_float_ + row * width_;
#pragma omp simd
      for (int64_t j = 0; j < width_; ++j) out[j] += p[j];
    }
  }

  // Row `row` of the next left operand, given in float32; mirrored only for a bfloat16 weight.
  void mirror_row(int64_t row, const float* values) {
    if (lhs_low_ptr_ == nullptr) return;
    at::BFloat16* dst = lhs_low_ptr_ + row * inner_;
    for (int64_t j = 0; j < inner_; ++j) dst[j] = at::BFloat16(values[j]);
  }

 private:
  at::Tensor rhs_;
  int64_t inner_, width_;
  at::Tensor out_;
  at::Tensor lhs_low_;
  float* out_float_ = nullptr;
  at::BFloat16* out_low_ = nullptr;
  at::BFloat16* lhs_low_ptr_ = nullptr;
};

void check_gates(const at::Tensor& gates, int64_t num_gates) {
  TORCH_CHECK(gates.dim() == 3 && gates.is_contiguous() && gates.scalar_type() == at::kFloat,
              "gates must be a contiguous float32 (time, batch, ", num_gates, " * hidden) tensor");
  TORCH_CHECK(gates.size(2) % num_gates == 0, "gate width is not a multiple of ", num_gates);
}

template <typename Body>
void for_rows(int64_t batch, const Body& body) {
  at::parallel_for(0, batch, kRowsPerTask, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) body(b);
  });
}

}  // namespace

// LSTM (gates i, f, g, o). `gates`: input pre-activations x W_ih^T + b_ih + b_hh, overwritten with
// the activated gates. `w_hh_t`: W_hh^T, (H, 4H). Returns h (T+1, B, H), c (T+1, B, H), tanh(c) (T, B, H).
std::vector<at::Tensor> lstm_forward(at::Tensor gates, const at::Tensor& w_hh_t) {
  check_gates(gates, 4);
  const int64_t T = gates.size(0), B = gates.size(1), H = gates.size(2) / 4;
  auto h = at::zeros({T + 1, B, H}, gates.options());
  auto c = at::zeros({T + 1, B, H}, gates.options());
  auto tanh_c = at::empty({T, B, H}, gates.options());
  StepProduct product(w_hh_t, B);
  float* G = gates.data_ptr<float>();
  float* Hs = h.data_ptr<float>();
  float* Cs = c.data_ptr<float>();
  float* TC = tanh_c.data_ptr<float>();
  for (int64_t t = 0; t < T; ++t) {
    if (t > 0) product.run(h[t]);
    for_rows(B, [&](int64_t b) {
      float* g = G + (t * B + b) * 4 * H;
      if (t > 0) product.add_row_to(b, g);
      const float* c_prev = Cs + (t * B + b) * H;
      float* c_next = Cs + ((t + 1) * B + b) * H;
      float* h_next = Hs + ((t + 1) * B + b) * H;
      float* tc = TC + (t * B + b) * H;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const float i = sigmoid(g[j]), f = sigmoid(g[H + j]);
        const float n = std::tanh(g[2 * H + j]), o = sigmoid(g[3 * H + j]);
        g[j] = i;
        g[H + j] = f;
        g[2 * H + j] = n;
        g[3 * H + j] = o;
        const float cell = f * c_prev[j] + i * n;
        const float th = std::tanh(cell);
        c_next[j] = cell;
        tc[j] = th;
        h_next[j] = o * th;
      }
      product.mirror_row(b, h_next);
    });
  }
  return {h, c, tanh_c};
}

// Gradients w.r.t. the LSTM gate pre-activations, (T, B, 4H), from `grad_out` (T, B, H), the
// buffers of lstm_forward and `w_hh` (4H, H).
at::Tensor lstm_backward(const at::Tensor& grad_out, const at::Tensor& gates, const at::Tensor& c,
                         const at::Tensor& tanh_c, const at::Tensor& w_hh) {
  check_gates(gates, 4);
  const int64_t T = gates.size(0), B = gates.size(1), H = gates.size(2) / 4;
  auto dpre = at::empty_like(gates);
  auto dh = at::empty({B, H}, gates.options());
  auto dc_carry = at::zeros({B, H}, gates.options());  // dc of step t+1 times f of step t+1
  StepProduct product(w_hh, B);
  const float* GO = grad_out.data_ptr<float>();
  const float* G = gates.data_ptr<float>();
  const float* Cs = c.data_ptr<float>();
  const float* TC = tanh_c.data_ptr<float>();
  float* D = dpre.data_ptr<float>();
  float* DH = dh.data_ptr<float>();
  float* DC = dc_carry.data_ptr<float>();
  for (int64_t t = T - 1; t >= 0; --t) {
    if (t < T - 1) product.run(dpre[t + 1]);
    for_rows(B, [&](int64_t b) {
      float* dhb = DH + b * H;
      std::copy_n(GO + (t * B + b) * H, H, dhb);
      if (t < T - 1) product.add_row_to(b, dhb);
      const float* g = G + (t * B + b) * 4 * H;
      const float* c_prev = Cs + (t * B + b) * H;
      const float* tc = TC + (t * B + b) * H;
      float* d = D + (t * B + b) * 4 * H;
      float* dcb = DC + b * H;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const float i = g[j], f = g[H + j], n = g[2 * H + j], o = g[3 * H + j], th = tc[j];
        const float dcell = dcb[j] + dhb[j] * o * (1.0f - th * th);
        d[j] = dcell * n * i * (1.0f - i);
        d[H + j] = dcell * c_prev[j] * f * (1.0f - f);
        d[2 * H + j] = dcell * i * (1.0f - n * n);
        d[3 * H + j] = dhb[j] * th * o * (1.0f - o);
        dcb[j] = dcell * f;
      }
      product.mirror_row(b, d);
    });
  }
  return dpre;
}

// GRU (gates r, z, n; n = tanh(x_n + b_in + r * (h W_hn^T + b_hn))). `gates`: x W_ih^T + b_ih with
// b_hr, b_hz added, overwritten with r, z, n. `w_hh_t`: W_hh^T (H, 3H); `b_hn`: (H). Returns
// h (T+1, B, H) and the kept h W_hn^T + b_hn (T, B, H).
std::vector<at::Tensor> gru_forward(at::Tensor gates, const at::Tensor& w_hh_t, const at::Tensor& b_hn) {
  check_gates(gates, 3);
  const int64_t T = gates.size(0), B = gates.size(1), H = gates.size(2) / 3;
  auto h = at::zeros({T + 1, B, H}, gates.options());
  auto hn = at::empty({T, B, H}, gates.options());
  auto rec = at::empty({B, 3 * H}, gates.options());  // h W_hh^T of the current step
  StepProduct product(w_hh_t, B);
  float* G = gates.data_ptr<float>();
  float* Hs = h.data_ptr<float>();
  float* HN = hn.data_ptr<float>();
  float* R = rec.data_ptr<float>();
  const float* BN = b_hn.data_ptr<float>();
  for (int64_t t = 0; t < T; ++t) {
    if (t > 0) product.run(h[t]);
    for_rows(B, [&](int64_t b) {
      float* r_row = R + b * 3 * H;
      std::fill_n(r_row, 3 * H, 0.0f);
      if (t > 0) product.add_row_to(b, r_row);
      float* g = G + (t * B + b) * 3 * H;
      const float* h_prev = Hs + (t * B + b) * H;
      float* h_next = Hs + ((t + 1) * B + b) * H;
      float* hn_t = HN + (t * B + b) * H;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const float r = sigmoid(g[j] + r_row[j]);
        const float z = sigmoid(g[H + j] + r_row[H + j]);
        const float hidden_n = r_row[2 * H + j] + BN[j];
        const float n = std::tanh(g[2 * H + j] + r * hidden_n);
        g[j] = r;
        g[H + j] = z;
        g[2 * H + j] = n;
        hn_t[j] = hidden_n;
        h_next[j] = n + z * (h_prev[j] - n);
      }
      product.mirror_row(b, h_next);
    });
  }
  return {h, hn};
}

// GRU gradients: returns (d(h W_hh^T + b_hh), (T, B, 3H); d(pre-activation of n), (T, B, H)).
std::vector<at::Tensor> gru_backward(const at::Tensor& grad_out, const at::Tensor& gates,
                                     const at::Tensor& hn, const at::Tensor& h, const at::Tensor& w_hh) {
  check_gates(gates, 3);
  const int64_t T = gates.size(0), B = gates.size(1), H = gates.size(2) / 3;
  auto dh_proj = at::empty_like(gates);
  auto dpre_n = at::empty({T, B, H}, gates.options());
  auto dh = at::empty({B, H}, gates.options());
  auto carry = at::zeros({B, H}, gates.options());  // dh of step t+1 times z of step t+1
  StepProduct product(w_hh, B);
  const float* GO = grad_out.data_ptr<float>();
  const float* G = gates.data_ptr<float>();
  const float* HN = hn.data_ptr<float>();
  const float* Hs = h.data_ptr<float>();
  float* DP = dh_proj.data_ptr<float>();
  float* DN = dpre_n.data_ptr<float>();
  float* DH = dh.data_ptr<float>();
  float* CA = carry.data_ptr<float>();
  for (int64_t t = T - 1; t >= 0; --t) {
    if (t < T - 1) product.run(dh_proj[t + 1]);
    for_rows(B, [&](int64_t b) {
      float* dhb = DH + b * H;
      const float* go = GO + (t * B + b) * H;
      float* cb = CA + b * H;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) dhb[j] = go[j] + cb[j];
      if (t < T - 1) product.add_row_to(b, dhb);
      const float* g = G + (t * B + b) * 3 * H;
      const float* hn_t = HN + (t * B + b) * H;
      const float* h_prev = Hs + (t * B + b) * H;
      float* dp = DP + (t * B + b) * 3 * H;
      float* dn_out = DN + (t * B + b) * H;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const float r = g[j], z = g[H + j], n = g[2 * H + j], dhv = dhb[j];
        const float dn = dhv * (1.0f - z) * (1.0f - n * n);
        dn_out[j] = dn;
        dp[j] = dn * hn_t[j] * r * (1.0f - r);
        dp[H + j] = dhv * (h_prev[j] - n) * z * (1.0f - z);
        dp[2 * H + j] = dn * r;
        cb[j] = dhv * z;
      }
      product.mirror_row(b, dp);
    });
  }
  return {dh_proj, dpre_n};
}

// Elman RNN. `states`: input pre-activations x W_ih^T + b_ih + b_hh (T, B, H), overwritten with the
// hidden states h_1..h_T. `w_hh_t`: W_hh^T (H, H).
void rnn_forward(at::Tensor states, const at::Tensor& w_hh_t, bool relu) {
  check_gates(states, 1);
  const int64_t T = states.size(0), B = states.size(1), H = states.size(2);
  StepProduct product(w_hh_t, B);
  float* S = states.data_ptr<float>();
  for (int64_t t = 0; t < T; ++t) {
    if (t > 0) product.run(states[t - 1]);
    for_rows(B, [&](int64_t b) {
      float* s = S + (t * B + b) * H;
      if (t > 0) product.add_row_to(b, s);
      if (relu) {
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) s[j] = s[j] > 0.0f ? s[j] : 0.0f;
      } else {
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) s[j] = std::tanh(s[j]);
      }
      product.mirror_row(b, s);
    });
  }
}

// Gradients w.r.t. the Elman RNN pre-activations, (T, B, H).
at::Tensor rnn_backward(const at::Tensor& grad_out, const at::Tensor& states, const at::Tensor& w_hh,
                        bool relu) {
  check_gates(states, 1);
  const int64_t T = states.size(0), B = states.size(1), H = states.size(2);
  auto dpre = at::empty_like(states);
  StepProduct product(w_hh, B);
  const float* GO = grad_out.data_ptr<float>();
  const float* S = states.data_ptr<float>();
  float* D = dpre.data_ptr<float>();
  for (int64_t t = T - 1; t >= 0; --t) {
    if (t < T - 1) product.run(dpre[t + 1]);
    for_rows(B, [&](int64_t b) {
      float* d = D + (t * B + b) * H;
      std::copy_n(GO + (t * B + b) * H, H, d);
      if (t < T - 1) product.add_row_to(b, d);
      const float* s = S + (t * B + b) * H;
      if (relu) {
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) d[j] = s[j] > 0.0f ? d[j] : 0.0f;
      } else {
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) d[j] *= 1.0f - s[j] * s[j];
      }
      product.mirror_row(b, d);
    });
  }
  return dpre;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("lstm_forward", &lstm_forward);
  m.def("lstm_backward", &lstm_backward);
  m.def("gru_forward", &gru_forward);
  m.def("gru_backward", &gru_backward);
  m.def("rnn_forward", &rnn_forward);
  m.def("rnn_backward", &rnn_backward);
}
