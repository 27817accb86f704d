// The sequential part of training an LSTM / GRU / Elman RNN layer on CPU.
//
// Everything that does not depend on the previous time step (the input projection of all steps,
// the weight and input gradients) is a few large matrix products in Python
// (rnnkit/models/kernels/cpp_loop.py). What is left is a loop over time with one small matrix product per
// step. In Python each step also pays about ten dispatches of small element-wise ops, more than the
// product itself costs; here each step is one product plus one fused, vectorised pass. The passes
// also do the work that would otherwise be extra sweeps over (time, batch, gates) buffers in memory
// (adding biases, converting dtypes, summing bias gradients): on a small CPU such sweeps cost about
// as much as the arithmetic.
//
// Layout: time-major and contiguous; states are (T + 1, B, H) with row 0 the zero initial state.
// `Low` is the dtype of the matrix products: float, or at::BFloat16 for mixed precision (on CPUs
// with native bfloat16 those products are several times faster). Gates, states, the cell and the
// returned bias gradients are always float32; the left operands of the products (and of the weight
// gradients computed in Python) are kept in `Low`.

#include <torch/extension.h>

#include <cmath>
#include <utility>
#include <vector>

namespace {

// (T + 1, B, H) states whose row 0, the initial state, is zero; the loop writes the other rows.
at::Tensor states(int64_t steps, int64_t batch, int64_t hidden, const at::TensorOptions& options) {
  auto tensor = at::empty({steps + 1, batch, hidden}, options);
  tensor[0].zero_();
  return tensor;
}

inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }
inline float to_float(float x) { return x; }
inline float to_float(at::BFloat16 x) { return static_cast<float>(x); }
template <typename Low>
inline Low from_float(float x) { return static_cast<Low>(x); }

// The loops read raw pointers: every tensor must be contiguous, of the expected dtype and shape.
void check(const at::Tensor& tensor, at::ScalarType dtype, const char* name) {
  TORCH_CHECK(tensor.scalar_type() == dtype, name, " must be a ", c10::toString(dtype), " tensor, got ",
              c10::toString(tensor.scalar_type()));
  TORCH_CHECK(tensor.is_contiguous(), name, " must be contiguous");
}

void check(const at::Tensor& tensor, at::ScalarType dtype, at::IntArrayRef shape, const char* name) {
  check(tensor, dtype, name);
  TORCH_CHECK(tensor.sizes() == shape, name, " must have shape ", shape, ", got ", tensor.sizes());
}

// One step's recurrent product: out = lhs @ rhs, all in `Low`; `rhs` is (K, N). The struct owns a
// reference to `rhs` (a tensor handle, not a C++ reference), so it can never outlive its operand.
template <typename Low>
struct StepProduct {
  at::Tensor rhs;
  at::Tensor out;
  StepProduct(at::Tensor rhs_, int64_t batch)
      : rhs(std::move(rhs_)), out(at::empty({batch, rhs.size(1)}, rhs.options())) {}
  const Low* run(const at::Tensor& lhs) {
    at::mm_out(out, lhs, rhs);
    return out.data_ptr<Low>();
  }
};

// ----------------------------------------------------------------------------------------- LSTM

// proj: x W_ih^T (T, B, 4H) in Low; bias: b_ih + b_hh (4H) float; w_hh_t: W_hh^T (H, 4H) in Low.
// Returns the activated gates i, f, g, o (T, B, 4H), h (T+1, B, H), c (T+1, B, H), all float, and
// h in Low (T+1, B, H).
template <typename Low>
std::vector<at::Tensor> lstm_forward(const at::Tensor& proj, const at::Tensor& bias, const at::Tensor& w_hh_t) {
  const int64_t T = proj.size(0), B = proj.size(1), H = proj.size(2) / 4;
  auto f32 = proj.options().dtype(at::kFloat);
  auto gates = at::empty({T, B, 4 * H}, f32);
  auto h = states(T, B, H, f32);
  auto c = states(T, B, H, f32);
  auto h_low = states(T, B, H, proj.options());
  StepProduct<Low> product(w_hh_t, B);
  const Low* P = proj.data_ptr<Low>();
  const float* bias_ = bias.data_ptr<float>();
  float* G = gates.data_ptr<float>();
  float* Hs = h.data_ptr<float>();
  float* Cs = c.data_ptr<float>();
  Low* HL = h_low.data_ptr<Low>();
  for (int64_t t = 0; t < T; ++t) {
    const Low* rec = t > 0 ? product.run(h_low[t]) : nullptr;
    for (int64_t b = 0; b < B; ++b) {
      const int64_t row = t * B + b;
      const Low* p = P + row * 4 * H;
      float* g = G + row * 4 * H;
      if (rec != nullptr) {
        const Low* r = rec + b * 4 * H;
#pragma omp simd
        for (int64_t j = 0; j < 4 * H; ++j) g[j] = to_float(p[j]) + bias_[j] + to_float(r[j]);
      } else {
#pragma omp simd
        for (int64_t j = 0; j < 4 * H; ++j) g[j] = to_float(p[j]) + bias_[j];
      }
      const float* c_prev = Cs + row * H;
      float* c_next = Cs + (row + B) * H;
      float* h_next = Hs + (row + B) * H;
      Low* h_next_low = HL + (row + B) * H;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const float i = sigmoid(g[j]), f = sigmoid(g[H + j]);
        const float n = std::tanh(g[2 * H + j]), o = sigmoid(g[3 * H + j]);
        g[j] = i;
        g[H + j] = f;
        g[2 * H + j] = n;
        g[3 * H + j] = o;
        const float cell = f * c_prev[j] + i * n;
        c_next[j] = cell;
        h_next[j] = o * std::tanh(cell);
        h_next_low[j] = from_float<Low>(h_next[j]);
      }
    }
  }
  return {gates, h, c, h_low};
}

// grad_out: (T, B, H) float; w_hh: (4H, H) in Low. Returns the gradients w.r.t. the gate
// pre-activations (T, B, 4H) in Low and their sum over steps and batch (4H) float, the bias gradient.
template <typename Low>
std::vector<at::Tensor> lstm_backward(const at::Tensor& grad_out, const at::Tensor& gates, const at::Tensor& c,
                                      const at::Tensor& w_hh) {
  const int64_t T = gates.size(0), B = gates.size(1), H = gates.size(2) / 4;
  auto f32 = gates.options();
  auto dpre = at::empty({T, B, 4 * H}, w_hh.options());
  auto bias_grad = at::zeros({4 * H}, f32);
  auto dh = at::empty({H}, f32);
  auto dc_carry = at::zeros({B, H}, f32);  // dc of step t+1 times f of step t+1
  StepProduct<Low> product(w_hh, B);
  const float* GO = grad_out.data_ptr<float>();
  const float* G = gates.data_ptr<float>();
  const float* Cs = c.data_ptr<float>();
  Low* D = dpre.data_ptr<Low>();
  float* DB = bias_grad.data_ptr<float>();
  float* dh_ = dh.data_ptr<float>();
  float* DC = dc_carry.data_ptr<float>();
  for (int64_t t = T - 1; t >= 0; --t) {
    const Low* rec = t < T - 1 ? product.run(dpre[t + 1]) : nullptr;
    for (int64_t b = 0; b < B; ++b) {
      const int64_t row = t * B + b;
      const float* go = GO + row * H;
      if (rec != nullptr) {
        const Low* r = rec + b * H;
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) dh_[j] = go[j] + to_float(r[j]);
      } else {
        std::copy_n(go, H, dh_);
      }
      const float* g = G + row * 4 * H;
      const float* c_prev = Cs + row * H;
      const float* c_next = Cs + (row + B) * H;
      Low* d = D + row * 4 * H;
      float* dcb = DC + b * H;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const float i = g[j], f = g[H + j], n = g[2 * H + j], o = g[3 * H + j];
        const float th = std::tanh(c_next[j]);
        const float dcell = dcb[j] + dh_[j] * o * (1.0f - th * th);
        const float di = dcell * n * i * (1.0f - i);
        const float df = dcell * c_prev[j] * f * (1.0f - f);
        const float dn = dcell * i * (1.0f - n * n);
        const float d_o = dh_[j] * th * o * (1.0f - o);
        d[j] = from_float<Low>(di);
        d[H + j] = from_float<Low>(df);
        d[2 * H + j] = from_float<Low>(dn);
        d[3 * H + j] = from_float<Low>(d_o);
        DB[j] += di;
        DB[H + j] += df;
        DB[2 * H + j] += dn;
        DB[3 * H + j] += d_o;
        dcb[j] = dcell * f;
      }
    }
  }
  return {dpre, bias_grad};
}

// ------------------------------------------------------------------------------------------ GRU

// proj: x W_ih^T (T, B, 3H) in Low; bias: b_ih + (b_hr, b_hz, 0) (3H) float; b_hn: (H) float;
// w_hh_t: W_hh^T (H, 3H) in Low (n = tanh(x_n + b_in + r * (h W_hn^T + b_hn))). Returns r, z, n
// (T, B, 3H), h (T+1, B, H), the kept h W_hn^T + b_hn (T, B, H), all float, and h in Low.
template <typename Low>
std::vector<at::Tensor> gru_forward(const at::Tensor& proj, const at::Tensor& bias, const at::Tensor& b_hn,
                                    const at::Tensor& w_hh_t) {
  const int64_t T = proj.size(0), B = proj.size(1), H = proj.size(2) / 3;
  auto f32 = proj.options().dtype(at::kFloat);
  auto gates = at::empty({T, B, 3 * H}, f32);
  auto h = states(T, B, H, f32);
  auto hn = at::empty({T, B, H}, f32);
  auto h_low = states(T, B, H, proj.options());
  StepProduct<Low> product(w_hh_t, B);
  const Low* P = proj.data_ptr<Low>();
  const float* bias_ = bias.data_ptr<float>();
  const float* BN = b_hn.data_ptr<float>();
  float* G = gates.data_ptr<float>();
  float* Hs = h.data_ptr<float>();
  float* HN = hn.data_ptr<float>();
  Low* HL = h_low.data_ptr<Low>();
  for (int64_t t = 0; t < T; ++t) {
    const Low* rec = t > 0 ? product.run(h_low[t]) : nullptr;
    for (int64_t b = 0; b < B; ++b) {
      const int64_t row = t * B + b;
      const Low* p = P + row * 3 * H;
      const Low* r = rec != nullptr ? rec + b * 3 * H : nullptr;
      float* g = G + row * 3 * H;
      const float* h_prev = Hs + row * H;
      float* h_next = Hs + (row + B) * H;
      float* hn_t = HN + row * H;
      Low* h_next_low = HL + (row + B) * H;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const float rec_r = r != nullptr ? to_float(r[j]) : 0.0f;
        const float rec_z = r != nullptr ? to_float(r[H + j]) : 0.0f;
        const float rec_n = r != nullptr ? to_float(r[2 * H + j]) : 0.0f;
        const float reset = sigmoid(to_float(p[j]) + bias_[j] + rec_r);
        const float update = sigmoid(to_float(p[H + j]) + bias_[H + j] + rec_z);
        const float hidden_n = rec_n + BN[j];
        const float n = std::tanh(to_float(p[2 * H + j]) + bias_[2 * H + j] + reset * hidden_n);
        g[j] = reset;
        g[H + j] = update;
        g[2 * H + j] = n;
        hn_t[j] = hidden_n;
        h_next[j] = n + update * (h_prev[j] - n);
        h_next_low[j] = from_float<Low>(h_next[j]);
      }
    }
  }
  return {gates, h, hn, h_low};
}

// Returns, in Low, the gradients w.r.t. h W_hh^T + b_hh and w.r.t. x W_ih^T + b_ih (T, B, 3H), and
// their float sums over steps and batch (3H each): the gradients of b_hh and b_ih.
template <typename Low>
std::vector<at::Tensor> gru_backward(const at::Tensor& grad_out, const at::Tensor& gates, const at::Tensor& hn,
                                     const at::Tensor& h, const at::Tensor& w_hh) {
  const int64_t T = gates.size(0), B = gates.size(1), H = gates.size(2) / 3;
  auto f32 = gates.options();
  auto d_hidden = at::empty({T, B, 3 * H}, w_hh.options());
  auto d_input = at::empty({T, B, 3 * H}, w_hh.options());
  auto b_hh_grad = at::zeros({3 * H}, f32);
  auto b_ih_grad = at::zeros({3 * H}, f32);
  auto carry = at::zeros({B, H}, f32);  // dh of step t+1 times z of step t+1
  StepProduct<Low> product(w_hh, B);
  const float* GO = grad_out.data_ptr<float>();
  const float* G = gates.data_ptr<float>();
  const float* HN = hn.data_ptr<float>();
  const float* Hs = h.data_ptr<float>();
  Low* DH = d_hidden.data_ptr<Low>();
  Low* DI = d_input.data_ptr<Low>();
  float* BH = b_hh_grad.data_ptr<float>();
  float* BI = b_ih_grad.data_ptr<float>();
  float* CA = carry.data_ptr<float>();
  for (int64_t t = T - 1; t >= 0; --t) {
    const Low* rec = t < T - 1 ? product.run(d_hidden[t + 1]) : nullptr;
    for (int64_t b = 0; b < B; ++b) {
      const int64_t row = t * B + b;
      const float* go = GO + row * H;
      const Low* r = rec != nullptr ? rec + b * H : nullptr;
      const float* g = G + row * 3 * H;
      const float* hn_t = HN + row * H;
      const float* h_prev = Hs + row * H;
      Low* dh_row = DH + row * 3 * H;
      Low* di_row = DI + row * 3 * H;
      float* cb = CA + b * H;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const float dh = go[j] + cb[j] + (r != nullptr ? to_float(r[j]) : 0.0f);
        const float reset = g[j], update = g[H + j], n = g[2 * H + j];
        const float dn = dh * (1.0f - update) * (1.0f - n * n);
        const float dr = dn * hn_t[j] * reset * (1.0f - reset);
        const float dz = dh * (h_prev[j] - n) * update * (1.0f - update);
        const float dhn = dn * reset;
        dh_row[j] = di_row[j] = from_float<Low>(dr);
        dh_row[H + j] = di_row[H + j] = from_float<Low>(dz);
        dh_row[2 * H + j] = from_float<Low>(dhn);
        di_row[2 * H + j] = from_float<Low>(dn);
        BH[j] += dr;
        BH[H + j] += dz;
        BH[2 * H + j] += dhn;
        BI[2 * H + j] += dn;
        cb[j] = dh * update;
      }
    }
  }
  // b_ih's r and z gradients are b_hh's: both are added to the same pre-activations.
  b_ih_grad.narrow(0, 0, 2 * H).copy_(b_hh_grad.narrow(0, 0, 2 * H));
  return {d_hidden, d_input, b_hh_grad, b_ih_grad};
}

// ------------------------------------------------------------------------------------ Elman RNN

// proj: x W_ih^T (T, B, H) in Low; bias: b_ih + b_hh (H) float; w_hh_t: W_hh^T (H, H) in Low.
// Returns h (T+1, B, H) float and in Low.
template <typename Low>
std::vector<at::Tensor> rnn_forward(const at::Tensor& proj, const at::Tensor& bias, const at::Tensor& w_hh_t,
                                    bool relu) {
  const int64_t T = proj.size(0), B = proj.size(1), H = proj.size(2);
  auto h = states(T, B, H, proj.options().dtype(at::kFloat));
  auto h_low = states(T, B, H, proj.options());
  StepProduct<Low> product(w_hh_t, B);
  const Low* P = proj.data_ptr<Low>();
  const float* bias_ = bias.data_ptr<float>();
  float* Hs = h.data_ptr<float>();
  Low* HL = h_low.data_ptr<Low>();
  for (int64_t t = 0; t < T; ++t) {
    const Low* rec = t > 0 ? product.run(h_low[t]) : nullptr;
    for (int64_t b = 0; b < B; ++b) {
      const int64_t row = t * B + b;
      const Low* p = P + row * H;
      const Low* r = rec != nullptr ? rec + b * H : nullptr;
      float* s = Hs + (row + B) * H;
      Low* s_low = HL + (row + B) * H;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const float pre = to_float(p[j]) + bias_[j] + (r != nullptr ? to_float(r[j]) : 0.0f);
        s[j] = relu ? (pre > 0.0f ? pre : 0.0f) : std::tanh(pre);
        s_low[j] = from_float<Low>(s[j]);
      }
    }
  }
  return {h, h_low};
}

// Returns the gradients w.r.t. the pre-activations (T, B, H) in Low and their float sum (H).
template <typename Low>
std::vector<at::Tensor> rnn_backward(const at::Tensor& grad_out, const at::Tensor& h, const at::Tensor& w_hh,
                                     bool relu) {
  const int64_t T = h.size(0) - 1, B = h.size(1), H = h.size(2);
  auto dpre = at::empty({T, B, H}, w_hh.options());
  auto bias_grad = at::zeros({H}, h.options());
  StepProduct<Low> product(w_hh, B);
  const float* GO = grad_out.data_ptr<float>();
  const float* Hs = h.data_ptr<float>();
  Low* D = dpre.data_ptr<Low>();
  float* DB = bias_grad.data_ptr<float>();
  for (int64_t t = T - 1; t >= 0; --t) {
    const Low* rec = t < T - 1 ? product.run(dpre[t + 1]) : nullptr;
    for (int64_t b = 0; b < B; ++b) {
      const int64_t row = t * B + b;
      const float* go = GO + row * H;
      const Low* r = rec != nullptr ? rec + b * H : nullptr;
      const float* s = Hs + (row + B) * H;
      Low* d = D + row * H;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const float dh = go[j] + (r != nullptr ? to_float(r[j]) : 0.0f);
        const float slope = relu ? (s[j] > 0.0f ? 1.0f : 0.0f) : 1.0f - s[j] * s[j];
        const float dp = dh * slope;
        d[j] = from_float<Low>(dp);
        DB[j] += dp;
      }
    }
  }
  return {dpre, bias_grad};
}

// ------------------------------------------------------------------------------------ dispatch

// Runs `fn` with the C++ type of the product dtype (checked by product_dtype before).
template <typename Fn>
auto by_product_dtype(const at::Tensor& low, Fn&& fn) {
  if (low.scalar_type() == at::kBFloat16) return fn(at::BFloat16{});
  return fn(float{});
}

at::ScalarType product_dtype(const at::Tensor& low, const char* name) {
  const at::ScalarType dtype = low.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kBFloat16, name,
              ": matrix products run in float32 or bfloat16, not ", c10::toString(dtype));
  return dtype;
}

// proj (T, B, gates * H) in the product dtype; bias (gates * H) float; w_hh_t (H, gates * H) in the
// product dtype. Returns H.
int64_t check_forward(const at::Tensor& proj, const at::Tensor& bias, const at::Tensor& w_hh_t, int64_t gates) {
  TORCH_CHECK(proj.dim() == 3 && proj.size(2) % gates == 0, "proj must be (time, batch, ", gates, " * hidden)");
  const int64_t H = proj.size(2) / gates;
  const at::ScalarType low = product_dtype(proj, "proj");
  check(proj, low, "proj");
  check(bias, at::kFloat, {gates * H}, "bias");
  check(w_hh_t, low, {H, gates * H}, "the transposed recurrent weight");
  return H;
}

// grad_out (T, B, H) float; w_hh (gates * H, H) in the product dtype. Returns grad_out's sizes.
std::vector<int64_t> check_backward(const at::Tensor& grad_out, const at::Tensor& w_hh, int64_t gates) {
  TORCH_CHECK(grad_out.dim() == 3, "grad_out must be (time, batch, hidden)");
  const int64_t H = grad_out.size(2);
  check(grad_out, at::kFloat, "grad_out");
  check(w_hh, product_dtype(w_hh, "the recurrent weight"), {gates * H, H}, "the recurrent weight");
  return grad_out.sizes().vec();
}

// What the forward pass kept, for a backward over grad_out (T, B, H): float tensors of (T + extra,
// B, width * H).
void check_kept(const at::Tensor& kept, const std::vector<int64_t>& grad_shape, int64_t extra, int64_t width,
                const char* name) {
  check(kept, at::kFloat, {grad_shape[0] + extra, grad_shape[1], width * grad_shape[2]}, name);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("lstm_forward", [](const at::Tensor& proj, const at::Tensor& bias, const at::Tensor& w_hh_t) {
    check_forward(proj, bias, w_hh_t, 4);
    return by_product_dtype(proj, [&](auto low) { return lstm_forward<decltype(low)>(proj, bias, w_hh_t); });
  });
  m.def("lstm_backward", [](const at::Tensor& grad_out, const at::Tensor& gates, const at::Tensor& c,
                            const at::Tensor& w_hh) {
    const auto shape = check_backward(grad_out, w_hh, 4);
    check_kept(gates, shape, 0, 4, "the activated gates");
    check_kept(c, shape, 1, 1, "the cell states");
    return by_product_dtype(w_hh, [&](auto low) { return lstm_backward<decltype(low)>(grad_out, gates, c, w_hh); });
  });
  m.def("gru_forward", [](const at::Tensor& proj, const at::Tensor& bias, const at::Tensor& b_hn,
                          const at::Tensor& w_hh_t) {
    const int64_t H = check_forward(proj, bias, w_hh_t, 3);
    check(b_hn, at::kFloat, {H}, "b_hn");
    return by_product_dtype(proj, [&](auto low) { return gru_forward<decltype(low)>(proj, bias, b_hn, w_hh_t); });
  });
  m.def("gru_backward", [](const at::Tensor& grad_out, const at::Tensor& gates, const at::Tensor& hn,
                           const at::Tensor& h, const at::Tensor& w_hh) {
    const auto shape = check_backward(grad_out, w_hh, 3);
    check_kept(gates, shape, 0, 3, "the activated gates");
    check_kept(hn, shape, 0, 1, "the kept h W_hn + b_hn");
    check_kept(h, shape, 1, 1, "the hidden states");
    return by_product_dtype(w_hh, [&](auto low) { return gru_backward<decltype(low)>(grad_out, gates, hn, h, w_hh); });
  });
  m.def("rnn_forward", [](const at::Tensor& proj, const at::Tensor& bias, const at::Tensor& w_hh_t, bool relu) {
    check_forward(proj, bias, w_hh_t, 1);
    return by_product_dtype(proj, [&](auto low) { return rnn_forward<decltype(low)>(proj, bias, w_hh_t, relu); });
  });
  m.def("rnn_backward", [](const at::Tensor& grad_out, const at::Tensor& h, const at::Tensor& w_hh, bool relu) {
    const auto shape = check_backward(grad_out, w_hh, 1);
    check_kept(h, shape, 1, 1, "the hidden states");
    return by_product_dtype(w_hh, [&](auto low) { return rnn_backward<decltype(low)>(grad_out, h, w_hh, relu); });
  });
}
