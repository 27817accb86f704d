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
// Threads: the rows of a batch never interact, so each thread runs the whole time loop for its own
// block of rows (and, for a bidirectional layer, its own direction), with single-threaded step
// products. Threads meet once per call instead of at every step: a small product split over
// threads costs more in synchronisation than it saves, and on a busy machine every meeting waits
// for the slowest thread. The element-wise pass is parallel the same way. The threads are an OpenMP
// region (at::parallel_for), so they exist only when this file is compiled with -fopenmp
// (rnnkit.models.kernels.cpp_loop.openmp_flags); without it the tasks run one after the other.
//
// Every entry point takes lists, one entry per direction, all with the same batch size.
//
// Layout: time-major and contiguous; states are (T + 1, B, H) with row 0 the zero initial state.
// The float states a layer returns are batch-major (B, T, directions * H), written where they belong
// (see Placement), and their gradient is read from the same layout.
// `Low` is the dtype of the matrix products: float, or at::BFloat16 for mixed precision (on CPUs
// with native bfloat16 those products are several times faster). Gates, states, the cell and the
// returned bias gradients are always float32; the left operands of the products (and of the weight
// gradients computed in Python) are kept in `Low`.

#include <ATen/Parallel.h>
#include <torch/extension.h>

#if defined(__AVX512BF16__) || defined(__AVX512VNNI__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <mutex>
#include <set>
#include <thread>
#include <utility>
#include <vector>

// torch's OpenMP runtime, if torch uses one (weak: absent, the pointers are null).
extern "C" {
__attribute__((weak)) void omp_set_num_threads(int);
__attribute__((weak)) int omp_get_max_threads();
}

namespace {

// (T + 1, B, H) states whose row 0, the initial state, is zero; the loop writes the other rows.
at::Tensor states(int64_t steps, int64_t batch, int64_t hidden, const at::TensorOptions& options) {
  auto tensor = at::empty({steps + 1, batch, hidden}, options);
  tensor[0].zero_();
  return tensor;
}

// tanh as Eigen computes it for float (generic_fast_tanh_float): a 13/6 rational function on
// [-7.9, 7.9], exact to a few ulp, and only multiply-adds and one division, so a loop of it
// vectorises to a few dozen instructions per 16 floats (glibc's vectorised tanhf and expf cost
// several times more, and they were most of the element-wise pass).
inline float tanh_(float x) {
  const float clamped = std::min(std::max(x, -7.90531110763549805f), 7.90531110763549805f);
  const float x2 = clamped * clamped;
  float p = -2.76076847742355e-16f;
  p = p * x2 + 2.00018790482477e-13f;
  p = p * x2 - 8.60467152213735e-11f;
  p = p * x2 + 5.12229709037114e-08f;
  p = p * x2 + 1.48572235717979e-05f;
  p = p * x2 + 6.37261928875436e-04f;
  p = p * x2 + 4.89352455891786e-03f;
  float q = 1.19825839466702e-06f;
  q = q * x2 + 1.18534705686654e-04f;
  q = q * x2 + 2.26843463243900e-03f;
  q = q * x2 + 4.89352518554385e-03f;
  // Below 4e-4 the rational form loses relative precision; tanh(x) = x there to float precision.
  return std::abs(x) < 0.0004f ? x : clamped * p / q;
}
inline float sigmoid(float x) { return 0.5f + 0.5f * tanh_(0.5f * x); }
inline float to_float(float x) { return x; }
inline float to_float(at::BFloat16 x) { return static_cast<float>(x); }
template <typename Low>
inline Low from_float(float x) { return static_cast<Low>(x); }
// int8 inference (q8 below): a state in [-1, 1] as the unsigned byte round(127 x) + 128.
template <>
inline uint8_t from_float<uint8_t>(float x) {
  return static_cast<uint8_t>(static_cast<int>(std::min(std::max(x, -1.0f), 1.0f) * 127.0f + 128.5f));
}

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

#if defined(__AVX512BF16__) || defined(__AVX512VNNI__)
// Calls tile(rows, row, col, masks) for the blocks of an (M, N) output that the step-product kernels
// compute at once: up to 4 rows (`rows`, a std::integral_constant) x 64 columns, where masks[v]
// selects the valid lanes of column block v (16 columns each).
template <typename Tile>
inline void over_tiles(int64_t M, int64_t N, Tile&& tile) {
  for (int64_t col = 0; col < N; col += 64) {
    __mmask16 masks[4];
    #pragma GCC unroll 4
    for (int v = 0; v < 4; ++v) {
      const int64_t valid = std::clamp<int64_t>(N - col - 16 * v, 0, 16);
      masks[v] = static_cast<__mmask16>((1u << valid) - 1u);
    }
    int64_t row = 0;
    for (; row + 4 <= M; row += 4) tile(std::integral_constant<int, 4>{}, row, col, masks);
    switch (M - row) {
      case 3: tile(std::integral_constant<int, 3>{}, row, col, masks); break;
      case 2: tile(std::integral_constant<int, 2>{}, row, col, masks); break;
      case 1: tile(std::integral_constant<int, 1>{}, row, col, masks); break;
      default: break;
    }
  }
}
#endif

#if defined(__AVX512BF16__)
// The step product in bfloat16 without at::mm: out (M, N) float = lhs (M, K) @ rhs (K, N), with rhs
// packed once per call into pairs of rows (K / 2, N, 2), the layout of the AVX512-BF16 dot product
// (two bfloat16 products summed into a float per lane). At 32-64 rows at::mm spends ~13 us per call
// in dispatch and oneDNN set-up, more than its arithmetic; this does the arithmetic alone, summing in
// float32 like at::mm.
namespace bf16 {

using Pair = uint32_t;  // two bfloat16 values of neighbouring rows k, k + 1 of rhs (or of lhs)

inline const uint16_t* bits(const at::BFloat16* p) { return reinterpret_cast<const uint16_t*>(p); }

// rhs (K, N) row-major, K even -> (K / 2, N) pairs.
at::Tensor pack(const at::Tensor& rhs) {
  const int64_t K = rhs.size(0), N = rhs.size(1), pairs = K / 2;
  auto packed = at::empty({pairs, N}, rhs.options().dtype(at::kInt));
  const uint16_t* in = bits(rhs.data_ptr<at::BFloat16>());
  Pair* out = reinterpret_cast<Pair*>(packed.data_ptr<int32_t>());
  for (int64_t p = 0; p < pairs; ++p)
    for (int64_t n = 0; n < N; ++n) {
      const Pair low = in[2 * p * N + n], high = in[(2 * p + 1) * N + n];
      out[p * N + n] = low | (high << 16);
    }
  return packed;
}

// acc[i][v] += row i's pair of lhs values (k = 2p, 2p + 1) times the packed rhs pairs of column
// block v. The loops over i and v are unrolled on purpose: left as loops, gcc kept acc in memory and
// stored all 16 accumulators every step, which halved the throughput.
template <int MR>
inline void accumulate(__m512 (&acc)[MR][4], const Pair (&a_pairs)[MR], const Pair* packed_row,
                       const __mmask16* masks) {
  __m512i b[4];
  #pragma GCC unroll 4
  for (int v = 0; v < 4; ++v) b[v] = _mm512_maskz_loadu_epi32(masks[v], packed_row + 16 * v);
  #pragma GCC unroll 4
  for (int i = 0; i < MR; ++i) {
    const __m512bh a = (__m512bh)_mm512_set1_epi32(static_cast<int>(a_pairs[i]));
    #pragma GCC unroll 4
    for (int v = 0; v < 4; ++v) acc[i][v] = _mm512_dpbf16_ps(acc[i][v], a, (__m512bh)b[v]);
  }
}

// Rows [0, MR) x columns [col, col + 64) of out; masks[v] selects the valid lanes of column block v.
// K is even (StepProduct uses at::mm otherwise).
template <int MR>
inline void tile(const uint16_t* lhs, int64_t K, const Pair* packed, int64_t N, float* out, int64_t col,
                 const __mmask16* masks) {
  __m512 acc[MR][4];
  #pragma GCC unroll 4
  for (int i = 0; i < MR; ++i)
    #pragma GCC unroll 4
    for (int v = 0; v < 4; ++v) acc[i][v] = _mm512_setzero_ps();
  Pair a_pairs[MR];
  for (int64_t p = 0; p < K / 2; ++p) {
    #pragma GCC unroll 4
    for (int i = 0; i < MR; ++i) std::memcpy(&a_pairs[i], lhs + i * K + 2 * p, sizeof(Pair));
    accumulate<MR>(acc, a_pairs, packed + p * N + col, masks);
  }
  #pragma GCC unroll 4
  for (int i = 0; i < MR; ++i)
    #pragma GCC unroll 4
    for (int v = 0; v < 4; ++v) _mm512_mask_storeu_ps(out + i * N + col + 16 * v, masks[v], acc[i][v]);
}

// out (M, N) float = lhs (M, K) @ the packed rhs; lhs rows are contiguous (row stride K).
inline void product(const at::BFloat16* lhs_, int64_t M, int64_t K, const Pair* packed, int64_t N, float* out) {
  const uint16_t* lhs = bits(lhs_);
  over_tiles(M, N, [&](auto rows, int64_t row, int64_t col, const __mmask16* masks) {
    tile<decltype(rows)::value>(lhs + row * K, K, packed, N, out + row * N, col, masks);
  });
}

}  // namespace bf16
#endif

#if defined(__AVX512VNNI__)
// The step product of int8 inference: out (M, N) float = dequantised lhs (M, K) @ rhs (K, N). lhs
// holds states in [-1, 1] (LSTM, GRU and tanh cells) as bytes u = round(127 h) + 128; rhs is int8 with
// one scale per column, packed once per call into quads of rows (K / 4, N, 4), the layout of the
// AVX512-VNNI dot product (four u8 x s8 products summed into an int32 per lane, twice bfloat16's
// per instruction). out[m, n] = scale[n] * (sum_k u[m, k] w[k, n] - offset[n]), where offset[n] =
// 128 sum_k w[k, n] takes the 128 back out and scale[n] = (column scale) / 127. Integer sums are exact.
namespace q8 {

using Quad = uint32_t;  // four int8 values of rows k .. k + 3 of rhs (or four uint8 of lhs)

// rhs (K, N) int8 row-major, K % 4 == 0 -> (K / 4, N) quads.
at::Tensor pack(const at::Tensor& rhs) {
  const int64_t K = rhs.size(0), N = rhs.size(1), quads = K / 4;
  auto packed = at::empty({quads, N}, rhs.options().dtype(at::kInt));
  const uint8_t* in = reinterpret_cast<const uint8_t*>(rhs.data_ptr<int8_t>());
  Quad* out = reinterpret_cast<Quad*>(packed.data_ptr<int32_t>());
  for (int64_t q = 0; q < quads; ++q)
    for (int64_t n = 0; n < N; ++n) {
      Quad quad = 0;
      for (int64_t i = 0; i < 4; ++i) quad |= static_cast<Quad>(in[(4 * q + i) * N + n]) << (8 * i);
      out[q * N + n] = quad;
    }
  return packed;
}

// Rows [0, MR) x columns [col, col + 64) of out, as bf16::tile (unrolled for the same reason).
template <int MR>
inline void tile(const uint8_t* lhs, int64_t K, const Quad* packed, int64_t N, const float* scale,
                 const int32_t* offset, float* out, int64_t col, const __mmask16* masks) {
  __m512i acc[MR][4];
  #pragma GCC unroll 4
  for (int i = 0; i < MR; ++i)
    #pragma GCC unroll 4
    for (int v = 0; v < 4; ++v) acc[i][v] = _mm512_setzero_si512();
  for (int64_t q = 0; q < K / 4; ++q) {
    __m512i b[4];
    #pragma GCC unroll 4
    for (int v = 0; v < 4; ++v) b[v] = _mm512_maskz_loadu_epi32(masks[v], packed + q * N + col + 16 * v);
    #pragma GCC unroll 4
    for (int i = 0; i < MR; ++i) {
      Quad a_quad;
      std::memcpy(&a_quad, lhs + i * K + 4 * q, sizeof(Quad));
      const __m512i a = _mm512_set1_epi32(static_cast<int>(a_quad));
      #pragma GCC unroll 4
      for (int v = 0; v < 4; ++v) acc[i][v] = _mm512_dpbusd_epi32(acc[i][v], a, b[v]);
    }
  }
  #pragma GCC unroll 4
  for (int v = 0; v < 4; ++v) {
    const __m512 s = _mm512_maskz_loadu_ps(masks[v], scale + col + 16 * v);
    const __m512i o = _mm512_maskz_loadu_epi32(masks[v], offset + col + 16 * v);
    #pragma GCC unroll 4
    for (int i = 0; i < MR; ++i) {
      const __m512 sum = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[i][v], o));
      _mm512_mask_storeu_ps(out + i * N + col + 16 * v, masks[v], _mm512_mul_ps(sum, s));
    }
  }
}

inline void product(const uint8_t* lhs, int64_t M, int64_t K, const Quad* packed, int64_t N, const float* scale,
                    const int32_t* offset, float* out) {
  over_tiles(M, N, [&](auto rows, int64_t row, int64_t col, const __mmask16* masks) {
    tile<decltype(rows)::value>(lhs + row * K, K, packed, N, scale, offset, out + row * N, col, masks);
  });
}

}  // namespace q8
#endif

// Whether this build has the int8 step product (the CPU and compiler have AVX512-VNNI).
bool has_int8_products() {
#if defined(__AVX512VNNI__)
  return true;
#else
  return false;
#endif
}

// One step's recurrent product for rows [first, last): lhs[first:last] @ rhs, with lhs and rhs in
// `Low` and the result in float32. `rhs` is (K, N). The struct owns a reference to `rhs` (a tensor
// handle, not a C++ reference), so it can never outlive its operand. Called inside a parallel
// region, the product runs on this thread alone.
//
// Low = uint8_t is int8 inference (q8): `rhs` is int8 and `scale` (N) float its columns' scales.
template <typename Low>
struct StepProduct {
  at::Tensor rhs;
  at::Tensor out;     // (rows, N) float
  at::Tensor packed;  // rhs in bf16::pack's or q8::pack's layout, where that kernel is compiled in
  at::Tensor scale, offset;  // int8 only: q8::product's scale / 127 and offset per column
  int64_t first, rows;
  StepProduct(at::Tensor rhs_, int64_t first_, int64_t last, const at::Tensor& column_scale = {})
      : rhs(std::move(rhs_)), out(at::empty({last - first_, rhs.size(1)}, rhs.options().dtype(at::kFloat))),
        first(first_), rows(last - first_) {
#if defined(__AVX512BF16__)
    if constexpr (std::is_same_v<Low, at::BFloat16>)
      if (rhs.size(0) % 2 == 0) packed = bf16::pack(rhs);
#endif
#if defined(__AVX512VNNI__)
    if constexpr (std::is_same_v<Low, uint8_t>) {
      packed = q8::pack(rhs);
      scale = column_scale / 127.0f;
      offset = (rhs.to(at::kInt).sum(0) * 128).to(at::kInt).contiguous();
    }
#endif
  }
  // lhs: this step's (B, K) left operand, all rows (a pointer, not a tensor: a tensor view per step
  // cost ~1 us, 560 of them in a training step of 280 steps).
  const float* run(const Low* lhs) {
    const int64_t K = rhs.size(0);
    const Low* rows_lhs = lhs + first * K;
    if constexpr (std::is_same_v<Low, uint8_t>) {
#if defined(__AVX512VNNI__)
      q8::product(rows_lhs, rows, K, reinterpret_cast<const q8::Quad*>(packed.data_ptr<int32_t>()), rhs.size(1),
                  scale.data_ptr<float>(), offset.data_ptr<int32_t>(), out.data_ptr<float>());
#endif
      return out.data_ptr<float>();
    } else {
#if defined(__AVX512BF16__)
      if constexpr (std::is_same_v<Low, at::BFloat16>)
        if (packed.defined()) {
          bf16::product(rows_lhs, rows, K, reinterpret_cast<const bf16::Pair*>(packed.data_ptr<int32_t>()),
                        rhs.size(1), out.data_ptr<float>());
          return out.data_ptr<float>();
        }
#endif
      const auto block = at::from_blob(const_cast<Low*>(rows_lhs), {rows, K}, rhs.options());
      if constexpr (std::is_same_v<Low, float>) {
        at::mm_out(out, block, rhs);
      } else {
        out.copy_(at::mm(block, rhs));
      }
    }
    return out.data_ptr<float>();
  }
};

// Nested OpenMP regions are enabled in torch's runtime (unlimited active levels), so a product called
// inside a task would fork a team of its own on top of the tasks' threads: on 2 cores that made the
// loop 5-10x slower than on one thread. While this guard lives, this thread's regions use 1 thread.
struct OneThreadInside {
  int saved = 0;
  OneThreadInside() {
    if (omp_set_num_threads != nullptr && omp_get_max_threads != nullptr) {
      saved = omp_get_max_threads();
      omp_set_num_threads(1);
    }
  }
  ~OneThreadInside() {
    if (saved > 0) omp_set_num_threads(saved);
  }
  OneThreadInside(const OneThreadInside&) = delete;
  OneThreadInside& operator=(const OneThreadInside&) = delete;
};

// The split of `directions` x `batch` rows into independent tasks: `blocks` row blocks per direction.
struct Blocks {
  static constexpr int64_t kMinRows = 8;  // fewer rows per product cost more in calls than they save
  int64_t directions, batch, blocks;
  Blocks(int64_t directions_, int64_t batch_) : directions(directions_), batch(batch_) {
    const int64_t threads = std::max<int64_t>(1, at::get_num_threads());
    const int64_t wanted = (threads + directions - 1) / directions;
    blocks = std::max<int64_t>(1, std::min(wanted, batch / kMinRows));
  }
  // Runs fn(direction, block, first_row, last_row) for every task, each on one thread.
  template <typename Fn>
  void run(Fn&& fn) const {
    at::parallel_for(0, directions * blocks, 1, [&](int64_t begin, int64_t end) {
      const OneThreadInside one_thread;
      for (int64_t task = begin; task < end; ++task) {
        const int64_t d = task / blocks, block = task % blocks;
        fn(d, block, batch * block / blocks, batch * (block + 1) / blocks);
      }
    });
  }
};

// Where one direction's states go in the layer's output (B, T, directions * H) float, and where their
// gradients come from in its gradient: step t of row b sits at position positions[b, t] (t itself
// without positions), in columns [column, column + H). A direction that reads its rows reversed
// within their lengths thus writes its states back in reading order, beside the other direction's:
// no reversal, concatenation, or (time, batch) <-> (batch, time) copy is left to do in Python.
struct Placement {
  const int64_t* positions;  // (B, T), or nullptr
  int64_t T, width, column;
  int64_t at(int64_t t, int64_t b) const {
    return (b * T + (positions != nullptr ? positions[b * T + t] : t)) * width + column;
  }
};

// positions: empty (every step in place) or (B, T) int64 holding a position in [0, T) per step.
Placement placement(const at::Tensor& positions, int64_t T, int64_t B, int64_t width, int64_t column) {
  if (positions.numel() == 0) return {nullptr, T, width, column};
  check(positions, at::kLong, {B, T}, "positions");
  TORCH_CHECK(positions.min().item<int64_t>() >= 0 && positions.max().item<int64_t>() < T,
              "positions must lie in [0, time)");
  return {positions.data_ptr<int64_t>(), T, width, column};
}

// ----------------------------------------------------------------------------------------- LSTM

// proj: x W_ih^T (T, B, 4H) in Low; bias: b_ih + b_hh (4H) float; w_hh_t: W_hh^T (H, 4H) in Low.
// Fills the activated gates i, f, g, o (T, B, 4H) and c (T+1, B, H), both float, h in Low (T+1, B, H),
// and h in float at its placement in `out`, for rows [first, last). Without a backward pass to come
// (inference) the gates are one step's scratch (1, B, 4H), overwritten at every step.
// int8 inference: Low = uint8_t, w_hh_t int8 with its columns' scales in w_scale, proj in `Proj`.
struct LstmForward {
  at::Tensor proj, bias, w_hh_t, gates, c, h_low, w_scale, out;
  Placement place;
};

// Rows between two steps of a kept buffer (T, B, ...): B when it holds every step for the backward
// pass, 0 when it is one step's scratch (1, B, ...) that every step overwrites.
inline int64_t step_stride(const at::Tensor& kept, int64_t B) { return kept.size(0) > 1 ? B : 0; }

template <typename Low, typename Proj = Low>
void lstm_forward_rows(LstmForward& io, int64_t first, int64_t last) {
  const int64_t T = io.proj.size(0), B = io.proj.size(1), H = io.proj.size(2) / 4;
  const int64_t gates_stride = step_stride(io.gates, B);
  StepProduct<Low> product(io.w_hh_t, first, last, io.w_scale);
  const Proj* P = io.proj.data_ptr<Proj>();
  const float* bias_ = io.bias.data_ptr<float>();
  float* G = io.gates.data_ptr<float>();
  float* OUT = io.out.data_ptr<float>();
  float* Cs = io.c.data_ptr<float>();
  Low* HL = io.h_low.data_ptr<Low>();
  for (int64_t t = 0; t < T; ++t) {
    const float* rec = t > 0 ? product.run(HL + t * B * H) : nullptr;
    for (int64_t b = first; b < last; ++b) {
      const int64_t row = t * B + b;
      const Proj* p = P + row * 4 * H;
      float* g = G + (t * gates_stride + b) * 4 * H;
      if (rec != nullptr) {
        const float* r = rec + (b - first) * 4 * H;
#pragma omp simd
        for (int64_t j = 0; j < 4 * H; ++j) g[j] = to_float(p[j]) + bias_[j] + to_float(r[j]);
      } else {
#pragma omp simd
        for (int64_t j = 0; j < 4 * H; ++j) g[j] = to_float(p[j]) + bias_[j];
      }
      const float* c_prev = Cs + row * H;
      float* c_next = Cs + (row + B) * H;
      float* h_next = OUT + io.place.at(t, b);
      Low* h_next_low = HL + (row + B) * H;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const float i = sigmoid(g[j]), f = sigmoid(g[H + j]);
        const float n = tanh_(g[2 * H + j]), o = sigmoid(g[3 * H + j]);
        g[j] = i;
        g[H + j] = f;
        g[2 * H + j] = n;
        g[3 * H + j] = o;
        const float cell = f * c_prev[j] + i * n;
        c_next[j] = cell;
        const float hidden = o * tanh_(cell);
        h_next[j] = hidden;
        h_next_low[j] = from_float<Low>(hidden);
      }
    }
  }
}

// grad: the layer output's gradient (B, T, directions * H) float, read at `place`; w_hh: (4H, H) in Low.
// Fills, for rows [first, last), the gradients w.r.t. the gate pre-activations dpre (T, B, 4H) in Low
// and adds their sum over those rows and all steps to bias_grad (4H) float: this block's share of the
// bias gradient.
struct LstmBackward {
  at::Tensor grad, gates, c, w_hh, dpre, bias_grads;  // bias_grads: (blocks, 4H), one row per block
  Placement place;
};

template <typename Low>
void lstm_backward_rows(LstmBackward& io, int64_t block, int64_t first, int64_t last) {
  const int64_t T = io.gates.size(0), B = io.gates.size(1), H = io.gates.size(2) / 4;
  auto dh = at::empty({H}, io.gates.options());
  auto dc_carry = at::zeros({last - first, H}, io.gates.options());  // dc of step t+1 times f of step t+1
  StepProduct<Low> product(io.w_hh, first, last);
  const float* GO = io.grad.data_ptr<float>();
  const float* G = io.gates.data_ptr<float>();
  const float* Cs = io.c.data_ptr<float>();
  Low* D = io.dpre.data_ptr<Low>();
  float* DB = io.bias_grads[block].data_ptr<float>();
  float* dh_ = dh.data_ptr<float>();
  float* DC = dc_carry.data_ptr<float>();
  for (int64_t t = T - 1; t >= 0; --t) {
    const float* rec = t < T - 1 ? product.run(D + (t + 1) * B * 4 * H) : nullptr;
    for (int64_t b = first; b < last; ++b) {
      const int64_t row = t * B + b;
      const float* go = GO + io.place.at(t, b);
      if (rec != nullptr) {
        const float* r = rec + (b - first) * H;
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) dh_[j] = go[j] + to_float(r[j]);
      } else {
        std::copy_n(go, H, dh_);
      }
      const float* g = G + row * 4 * H;
      const float* c_prev = Cs + row * H;
      const float* c_next = Cs + (row + B) * H;
      Low* d = D + row * 4 * H;
      float* dcb = DC + (b - first) * H;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const float i = g[j], f = g[H + j], n = g[2 * H + j], o = g[3 * H + j];
        const float th = tanh_(c_next[j]);
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
}

// ------------------------------------------------------------------------------------------ GRU

// proj: x W_ih^T (T, B, 3H) in Low; bias: b_ih + (b_hr, b_hz, 0) (3H) float; b_hn: (H) float;
// w_hh_t: W_hh^T (H, 3H) in Low (n = tanh(x_n + b_in + r * (h W_hn^T + b_hn))). Fills r, z, n
// (T, B, 3H), h (T+1, B, H), the kept h W_hn^T + b_hn (T, B, H), all float, h in Low, and h in float
// at its placement in `out`, for rows [first, last). Without a backward pass to come, gates and hn
// are one step's scratch (1, B, ...).
// int8 inference: Low = uint8_t, w_hh_t int8 with its columns' scales in w_scale, proj in `Proj`.
struct GruForward {
  at::Tensor proj, bias, b_hn, w_hh_t, gates, h, hn, h_low, w_scale, out;
  Placement place;
};

template <typename Low, typename Proj = Low>
void gru_forward_rows(GruForward& io, int64_t first, int64_t last) {
  const int64_t T = io.proj.size(0), B = io.proj.size(1), H = io.proj.size(2) / 3;
  const int64_t gates_stride = step_stride(io.gates, B);  // hn is kept the same way
  StepProduct<Low> product(io.w_hh_t, first, last, io.w_scale);
  const Proj* P = io.proj.data_ptr<Proj>();
  const float* bias_ = io.bias.data_ptr<float>();
  const float* BN = io.b_hn.data_ptr<float>();
  float* G = io.gates.data_ptr<float>();
  float* Hs = io.h.data_ptr<float>();
  float* HN = io.hn.data_ptr<float>();
  Low* HL = io.h_low.data_ptr<Low>();
  float* OUT = io.out.data_ptr<float>();
  for (int64_t t = 0; t < T; ++t) {
    const float* rec = t > 0 ? product.run(HL + t * B * H) : nullptr;
    for (int64_t b = first; b < last; ++b) {
      const int64_t row = t * B + b;
      const Proj* p = P + row * 3 * H;
      const float* r = rec != nullptr ? rec + (b - first) * 3 * H : nullptr;
      float* g = G + (t * gates_stride + b) * 3 * H;
      const float* h_prev = Hs + row * H;
      float* h_next = Hs + (row + B) * H;
      float* hn_t = HN + (t * gates_stride + b) * H;
      Low* h_next_low = HL + (row + B) * H;
      float* out = OUT + io.place.at(t, b);
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const float rec_r = r != nullptr ? to_float(r[j]) : 0.0f;
        const float rec_z = r != nullptr ? to_float(r[H + j]) : 0.0f;
        const float rec_n = r != nullptr ? to_float(r[2 * H + j]) : 0.0f;
        const float reset = sigmoid(to_float(p[j]) + bias_[j] + rec_r);
        const float update = sigmoid(to_float(p[H + j]) + bias_[H + j] + rec_z);
        const float hidden_n = rec_n + BN[j];
        const float n = tanh_(to_float(p[2 * H + j]) + bias_[2 * H + j] + reset * hidden_n);
        g[j] = reset;
        g[H + j] = update;
        g[2 * H + j] = n;
        hn_t[j] = hidden_n;
        const float hidden = n + update * (h_prev[j] - n);
        h_next[j] = hidden;
        out[j] = hidden;
        h_next_low[j] = from_float<Low>(hidden);
      }
    }
  }
}

// Fills, in Low and for rows [first, last), the gradients w.r.t. h W_hh^T + b_hh (d_hidden) and
// w.r.t. x W_ih^T + b_ih (d_input) (T, B, 3H), and adds their float sums over those rows and all
// steps to this block's rows of b_hh_grads and b_ih_grads ((blocks, 3H) each).
struct GruBackward {
  at::Tensor grad, gates, hn, h, w_hh, d_hidden, d_input, b_hh_grads, b_ih_grads;
  Placement place;  // where grad holds this direction's states' gradients
};

template <typename Low>
void gru_backward_rows(GruBackward& io, int64_t block, int64_t first, int64_t last) {
  const int64_t T = io.gates.size(0), B = io.gates.size(1), H = io.gates.size(2) / 3;
  auto carry = at::zeros({last - first, H}, io.gates.options());  // dh of step t+1 times z of step t+1
  StepProduct<Low> product(io.w_hh, first, last);
  const float* GO = io.grad.data_ptr<float>();
  const float* G = io.gates.data_ptr<float>();
  const float* HN = io.hn.data_ptr<float>();
  const float* Hs = io.h.data_ptr<float>();
  Low* DH = io.d_hidden.data_ptr<Low>();
  Low* DI = io.d_input.data_ptr<Low>();
  float* BH = io.b_hh_grads[block].data_ptr<float>();
  float* BI = io.b_ih_grads[block].data_ptr<float>();
  float* CA = carry.data_ptr<float>();
  for (int64_t t = T - 1; t >= 0; --t) {
    const float* rec = t < T - 1 ? product.run(DH + (t + 1) * B * 3 * H) : nullptr;
    for (int64_t b = first; b < last; ++b) {
      const int64_t row = t * B + b;
      const float* go = GO + io.place.at(t, b);
      const float* r = rec != nullptr ? rec + (b - first) * H : nullptr;
      const float* g = G + row * 3 * H;
      const float* hn_t = HN + row * H;
      const float* h_prev = Hs + row * H;
      Low* dh_row = DH + row * 3 * H;
      Low* di_row = DI + row * 3 * H;
      float* cb = CA + (b - first) * H;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        const float dh = go[j] + cb[j] + (r != nullptr ? to_float(r[j]) : 0.0f);
        const float reset = g[j], update = g[H + j], n = g[2 * H + j];
        const float dn = dh * (1.0f - update) * (1.0f - n * n);
        const float dr = dn * hn_t[j] * reset * (1.0f - reset);
        const float dz = dh * (h_prev[j] - n) * update * (1.0f - update);
        const float dhn = dn * reset;
        // Separate stores: a chained `a = b = low` copies a bfloat16 object, which gcc cannot vectorise.
        dh_row[j] = from_float<Low>(dr);
        di_row[j] = from_float<Low>(dr);
        dh_row[H + j] = from_float<Low>(dz);
        di_row[H + j] = from_float<Low>(dz);
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
}

// ------------------------------------------------------------------------------------ Elman RNN

// proj: x W_ih^T (T, B, H) in Low; bias: b_ih + b_hh (H) float; w_hh_t: W_hh^T (H, H) in Low.
// Fills h (T+1, B, H) float and in Low, and h at its placement in `out`, for rows [first, last).
// int8 inference (tanh only): as GruForward.
struct RnnForward {
  at::Tensor proj, bias, w_hh_t, h, h_low;
  bool relu;
  at::Tensor w_scale, out;
  Placement place;
};

template <typename Low, typename Proj = Low>
void rnn_forward_rows(RnnForward& io, int64_t first, int64_t last) {
  const int64_t T = io.proj.size(0), B = io.proj.size(1), H = io.proj.size(2);
  const bool relu = io.relu;
  StepProduct<Low> product(io.w_hh_t, first, last, io.w_scale);
  const Proj* P = io.proj.data_ptr<Proj>();
  const float* bias_ = io.bias.data_ptr<float>();
  float* Hs = io.h.data_ptr<float>();
  Low* HL = io.h_low.data_ptr<Low>();
  float* OUT = io.out.data_ptr<float>();
  for (int64_t t = 0; t < T; ++t) {
    const float* rec = t > 0 ? product.run(HL + t * B * H) : nullptr;
    for (int64_t b = first; b < last; ++b) {
      const int64_t row = t * B + b;
      const Proj* p = P + row * H;
      const float* r = rec != nullptr ? rec + (b - first) * H : nullptr;
      float* s = Hs + (row + B) * H;
      Low* s_low = HL + (row + B) * H;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) s[j] = to_float(p[j]) + bias_[j] + (r != nullptr ? to_float(r[j]) : 0.0f);
      if (relu) {  // two loops: a branch inside one keeps gcc from vectorising it
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) s[j] = s[j] > 0.0f ? s[j] : 0.0f;
      } else {
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) s[j] = tanh_(s[j]);
      }
      float* out = OUT + io.place.at(t, b);
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) {
        s_low[j] = from_float<Low>(s[j]);
        out[j] = s[j];
      }
    }
  }
}

// Fills the gradients w.r.t. the pre-activations dpre (T, B, H) in Low for rows [first, last) and
// adds their float sum to this block's row of bias_grads (blocks, H).
struct RnnBackward {
  at::Tensor grad, h, w_hh, dpre, bias_grads;
  bool relu;
  Placement place;  // where grad holds this direction's states' gradients
};

template <typename Low>
void rnn_backward_rows(RnnBackward& io, int64_t block, int64_t first, int64_t last) {
  const int64_t T = io.h.size(0) - 1, B = io.h.size(1), H = io.h.size(2);
  const bool relu = io.relu;
  StepProduct<Low> product(io.w_hh, first, last);
  const float* GO = io.grad.data_ptr<float>();
  const float* Hs = io.h.data_ptr<float>();
  Low* D = io.dpre.data_ptr<Low>();
  float* DB = io.bias_grads[block].data_ptr<float>();
  for (int64_t t = T - 1; t >= 0; --t) {
    const float* rec = t < T - 1 ? product.run(D + (t + 1) * B * H) : nullptr;
    for (int64_t b = first; b < last; ++b) {
      const int64_t row = t * B + b;
      const float* go = GO + io.place.at(t, b);
      const float* r = rec != nullptr ? rec + (b - first) * H : nullptr;
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

// The gradient of the output (B, T, directions * H) float of a layer of T steps over B rows, and one
// direction's recurrent weight w_hh (gates * H, H) in the product dtype. Returns (T, B, H).
std::vector<int64_t> check_backward(const at::Tensor& grad, int64_t T, int64_t B, size_t directions,
                                    const at::Tensor& w_hh, int64_t gates) {
  TORCH_CHECK(w_hh.dim() == 2, "the recurrent weight must be (gates * hidden, hidden)");
  const int64_t H = w_hh.size(1);
  check(w_hh, product_dtype(w_hh, "the recurrent weight"), {gates * H, H}, "the recurrent weight");
  check(grad, at::kFloat, {B, T, static_cast<int64_t>(directions) * H}, "the output's gradient");
  return {T, B, H};
}

// What the forward pass kept, for a backward over (T, B, H) states: float tensors of (T + extra,
// B, width * H).
void check_kept(const at::Tensor& kept, const std::vector<int64_t>& shape, int64_t extra, int64_t width,
                const char* name) {
  check(kept, at::kFloat, {shape[0] + extra, shape[1], width * shape[2]}, name);
}

// The directions of one call: as many entries in every list, one shape and product dtype for all
// (the row blocks and the templated loop are shared). Returns the number of directions.
size_t check_directions(const std::vector<std::vector<at::Tensor>>& lists) {
  const size_t count = lists.front().size();
  TORCH_CHECK(count > 0, "at least one direction");
  for (const auto& list : lists) TORCH_CHECK(list.size() == count, "every argument needs one entry per direction");
  for (const auto& list : lists)
    for (const auto& tensor : list) {
      TORCH_CHECK(tensor.sizes() == list.front().sizes(), "all directions must have the same shapes");
      TORCH_CHECK(tensor.scalar_type() == list.front().scalar_type(), "all directions must have the same dtype");
    }
  return count;
}

using Lists = std::vector<std::vector<at::Tensor>>;
using Positions = std::vector<at::Tensor>;  // per direction: empty, or (B, T) int64 (see Placement)

// Direction d of `count` (T, B, H) layers in a (B, T, count * H) output.
Placement place(const Positions& positions, size_t d, size_t count, int64_t T, int64_t B, int64_t H) {
  TORCH_CHECK(positions.size() == count, "every argument needs one entry per direction");
  return placement(positions[d], T, B, static_cast<int64_t>(count) * H, static_cast<int64_t>(d) * H);
}

// The output of `count` directions of (T, B, H) states, side by side: (B, T, count * H) float.
at::Tensor layer_output(size_t count, int64_t T, int64_t B, int64_t H, const at::TensorOptions& f32) {
  return at::empty({B, T, static_cast<int64_t>(count) * H}, f32);
}

// keep: keep the gates for lstm_backward (training); false keeps only the states (inference).
// Returns the layer's output and, per direction, the gates, c and h in Low.
std::tuple<at::Tensor, Lists> lstm_forward(const std::vector<at::Tensor>& projs, const std::vector<at::Tensor>& biases,
                                           const std::vector<at::Tensor>& w_hh_ts, const Positions& positions,
                                           bool keep) {
  const size_t count = check_directions({projs, biases, w_hh_ts});
  const int64_t T = projs[0].size(0), B = projs[0].size(1);
  const int64_t H = check_forward(projs[0], biases[0], w_hh_ts[0], 4);
  auto f32 = projs[0].options().dtype(at::kFloat);
  auto out = layer_output(count, T, B, H, f32);
  std::vector<LstmForward> io;
  for (size_t d = 0; d < count; ++d) {
    check_forward(projs[d], biases[d], w_hh_ts[d], 4);
    io.push_back({projs[d], biases[d], w_hh_ts[d], at::empty({keep ? T : 1, B, 4 * H}, f32), states(T, B, H, f32),
                  states(T, B, H, projs[d].options()), {}, out, place(positions, d, count, T, B, H)});
  }
  by_product_dtype(projs[0], [&](auto low) {
    Blocks(count, B).run([&](int64_t d, int64_t, int64_t first, int64_t last) {
      lstm_forward_rows<decltype(low)>(io[d], first, last);
    });
  });
  Lists kept;
  for (auto& d : io) kept.push_back({d.gates, d.c, d.h_low});
  return {out, kept};
}

// Returns, per direction, dpre (T, B, 4H) in Low and the bias gradient (4H) float.
Lists lstm_backward(const at::Tensor& grad, const Positions& positions, const std::vector<at::Tensor>& gates,
                    const std::vector<at::Tensor>& cs, const std::vector<at::Tensor>& w_hhs) {
  const size_t count = check_directions({gates, cs, w_hhs});
  const Blocks blocks(count, gates[0].size(1));
  std::vector<LstmBackward> io;
  for (size_t d = 0; d < count; ++d) {
    const auto shape = check_backward(grad, gates[d].size(0), gates[d].size(1), count, w_hhs[d], 4);
    const int64_t T = shape[0], B = shape[1], H = shape[2];
    check_kept(gates[d], shape, 0, 4, "the activated gates");
    check_kept(cs[d], shape, 1, 1, "the cell states");
    io.push_back({grad, gates[d], cs[d], w_hhs[d], at::empty({T, B, 4 * H}, w_hhs[d].options()),
                  at::zeros({blocks.blocks, 4 * H}, gates[d].options()), place(positions, d, count, T, B, H)});
  }
  by_product_dtype(w_hhs[0], [&](auto low) {
    blocks.run([&](int64_t d, int64_t block, int64_t first, int64_t last) {
      lstm_backward_rows<decltype(low)>(io[d], block, first, last);
    });
  });
  Lists out;
  for (auto& d : io) out.push_back({d.dpre, d.bias_grads.sum(0)});
  return out;
}

// keep: as lstm_forward's, for the gates and hn. Returns the layer's output and, per direction, the
// gates, h (float), hn and h in Low.
std::tuple<at::Tensor, Lists> gru_forward(const std::vector<at::Tensor>& projs, const std::vector<at::Tensor>& biases,
                                          const std::vector<at::Tensor>& b_hns, const std::vector<at::Tensor>& w_hh_ts,
                                          const Positions& positions, bool keep) {
  const size_t count = check_directions({projs, biases, b_hns, w_hh_ts});
  const int64_t T = projs[0].size(0), B = projs[0].size(1);
  const int64_t H = check_forward(projs[0], biases[0], w_hh_ts[0], 3);
  auto f32 = projs[0].options().dtype(at::kFloat);
  auto out = layer_output(count, T, B, H, f32);
  const int64_t kept_steps = keep ? T : 1;
  std::vector<GruForward> io;
  for (size_t d = 0; d < count; ++d) {
    check_forward(projs[d], biases[d], w_hh_ts[d], 3);
    check(b_hns[d], at::kFloat, {H}, "b_hn");
    io.push_back({projs[d], biases[d], b_hns[d], w_hh_ts[d], at::empty({kept_steps, B, 3 * H}, f32),
                  states(T, B, H, f32), at::empty({kept_steps, B, H}, f32), states(T, B, H, projs[d].options()), {},
                  out, place(positions, d, count, T, B, H)});
  }
  by_product_dtype(projs[0], [&](auto low) {
    Blocks(count, B).run([&](int64_t d, int64_t, int64_t first, int64_t last) {
      gru_forward_rows<decltype(low)>(io[d], first, last);
    });
  });
  Lists kept;
  for (auto& d : io) kept.push_back({d.gates, d.h, d.hn, d.h_low});
  return {out, kept};
}

// Returns, per direction, d_hidden and d_input (T, B, 3H) in Low and the b_hh and b_ih gradients.
Lists gru_backward(const at::Tensor& grad, const Positions& positions, const std::vector<at::Tensor>& gates,
                   const std::vector<at::Tensor>& hns, const std::vector<at::Tensor>& hs,
                   const std::vector<at::Tensor>& w_hhs) {
  const size_t count = check_directions({gates, hns, hs, w_hhs});
  const Blocks blocks(count, gates[0].size(1));
  std::vector<GruBackward> io;
  for (size_t d = 0; d < count; ++d) {
    const auto shape = check_backward(grad, gates[d].size(0), gates[d].size(1), count, w_hhs[d], 3);
    check_kept(gates[d], shape, 0, 3, "the activated gates");
    check_kept(hns[d], shape, 0, 1, "the kept h W_hn + b_hn");
    check_kept(hs[d], shape, 1, 1, "the hidden states");
    const int64_t T = shape[0], B = shape[1], H = shape[2];
    auto low = w_hhs[d].options();
    auto f32 = gates[d].options();
    io.push_back({grad, gates[d], hns[d], hs[d], w_hhs[d], at::empty({T, B, 3 * H}, low), at::empty({T, B, 3 * H}, low),
                  at::zeros({blocks.blocks, 3 * H}, f32), at::zeros({blocks.blocks, 3 * H}, f32),
                  place(positions, d, count, T, B, H)});
  }
  by_product_dtype(w_hhs[0], [&](auto low) {
    blocks.run([&](int64_t d, int64_t block, int64_t first, int64_t last) {
      gru_backward_rows<decltype(low)>(io[d], block, first, last);
    });
  });
  Lists out;
  for (auto& d : io) {
    const int64_t H = d.gates.size(2) / 3;
    auto b_hh_grad = d.b_hh_grads.sum(0);
    auto b_ih_grad = d.b_ih_grads.sum(0);
    // b_ih's r and z gradients are b_hh's: both are added to the same pre-activations.
    b_ih_grad.narrow(0, 0, 2 * H).copy_(b_hh_grad.narrow(0, 0, 2 * H));
    out.push_back({d.d_hidden, d.d_input, b_hh_grad, b_ih_grad});
  }
  return out;
}

// Returns the layer's output and, per direction, h (float) and h in Low.
std::tuple<at::Tensor, Lists> rnn_forward(const std::vector<at::Tensor>& projs, const std::vector<at::Tensor>& biases,
                                          const std::vector<at::Tensor>& w_hh_ts, const Positions& positions,
                                          bool relu) {
  const size_t count = check_directions({projs, biases, w_hh_ts});
  const int64_t T = projs[0].size(0), B = projs[0].size(1);
  const int64_t H = check_forward(projs[0], biases[0], w_hh_ts[0], 1);
  auto f32 = projs[0].options().dtype(at::kFloat);
  auto out = layer_output(count, T, B, H, f32);
  std::vector<RnnForward> io;
  for (size_t d = 0; d < count; ++d) {
    check_forward(projs[d], biases[d], w_hh_ts[d], 1);
    io.push_back({projs[d], biases[d], w_hh_ts[d], states(T, B, H, f32), states(T, B, H, projs[d].options()), relu,
                  {}, out, place(positions, d, count, T, B, H)});
  }
  by_product_dtype(projs[0], [&](auto low) {
    Blocks(count, B).run([&](int64_t d, int64_t, int64_t first, int64_t last) {
      rnn_forward_rows<decltype(low)>(io[d], first, last);
    });
  });
  Lists kept;
  for (auto& d : io) kept.push_back({d.h, d.h_low});
  return {out, kept};
}

// Returns, per direction, dpre (T, B, H) in Low and the bias gradient (H) float.
Lists rnn_backward(const at::Tensor& grad, const Positions& positions, const std::vector<at::Tensor>& hs,
                   const std::vector<at::Tensor>& w_hhs, bool relu) {
  const size_t count = check_directions({hs, w_hhs});
  const Blocks blocks(count, hs[0].size(1));
  std::vector<RnnBackward> io;
  for (size_t d = 0; d < count; ++d) {
    TORCH_CHECK(grad.dim() == 3, "the output's gradient must be (batch, time, directions * hidden)");
    const auto shape = check_backward(grad, grad.size(1), grad.size(0), count, w_hhs[d], 1);
    check_kept(hs[d], shape, 1, 1, "the hidden states");
    const int64_t T = shape[0], B = shape[1], H = shape[2];
    io.push_back({grad, hs[d], w_hhs[d], at::empty({T, B, H}, w_hhs[d].options()),
                  at::zeros({blocks.blocks, H}, hs[d].options()), relu, place(positions, d, count, T, B, H)});
  }
  by_product_dtype(w_hhs[0], [&](auto low) {
    blocks.run([&](int64_t d, int64_t block, int64_t first, int64_t last) {
      rnn_backward_rows<decltype(low)>(io[d], block, first, last);
    });
  });
  Lists out;
  for (auto& d : io) out.push_back({d.dpre, d.bias_grads.sum(0)});
  return out;
}

// int8 inference of LSTM, GRU and tanh layers: what *_forward compute without keeping
// gates, with the step products in int8 (q8). w_hh_ts (H, gates * H) int8, w_scales (gates * H)
// float; proj in float32 or bfloat16. Returns the layer's output (B, T, directions * H) float.
int64_t check_int8_forward(const at::Tensor& proj, const at::Tensor& bias, const at::Tensor& w_hh_t,
                           const at::Tensor& w_scale, int64_t gates) {
  TORCH_CHECK(has_int8_products(), "int8 step products need a CPU with AVX512-VNNI");
  TORCH_CHECK(proj.dim() == 3 && proj.size(2) % gates == 0, "proj must be (time, batch, ", gates, " * hidden)");
  const int64_t H = proj.size(2) / gates;
  TORCH_CHECK(H % 4 == 0, "int8 step products need a hidden size divisible by 4, got ", H);
  check(proj, product_dtype(proj, "proj"), "proj");
  check(bias, at::kFloat, {gates * H}, "bias");
  check(w_hh_t, at::kChar, {H, gates * H}, "the transposed int8 recurrent weight");
  check(w_scale, at::kFloat, {gates * H}, "the recurrent weight's column scales");
  return H;
}

// One int8 forward over the directions: checks each direction's arguments, builds its Io with
// make(d, T, B, H, float32 options, output, placement), runs rows(io, first, last, Proj{}) over the row
// blocks with Proj the projection's dtype, and returns the layer's output.
template <typename Io, typename Make, typename Rows>
at::Tensor run_int8(const std::vector<at::Tensor>& projs, const std::vector<at::Tensor>& biases,
                    const std::vector<at::Tensor>& w_hh_ts, const std::vector<at::Tensor>& w_scales,
                    const Positions& positions, int64_t gates, Make&& make, Rows&& rows) {
  const size_t count = check_directions({projs, biases, w_hh_ts, w_scales});
  const int64_t T = projs[0].size(0), B = projs[0].size(1);
  const int64_t H = check_int8_forward(projs[0], biases[0], w_hh_ts[0], w_scales[0], gates);
  auto f32 = projs[0].options().dtype(at::kFloat);
  auto out = layer_output(count, T, B, H, f32);
  std::vector<Io> io;
  for (size_t d = 0; d < count; ++d) {
    check_int8_forward(projs[d], biases[d], w_hh_ts[d], w_scales[d], gates);
    io.push_back(make(d, T, B, H, f32, out, place(positions, d, count, T, B, H)));
  }
  by_product_dtype(projs[0], [&](auto projected) {
    Blocks(count, B).run([&](int64_t d, int64_t, int64_t first, int64_t last) {
      rows(io[d], first, last, projected);
    });
  });
  return out;
}

using Options = at::TensorOptions;

at::Tensor lstm_forward_int8(const std::vector<at::Tensor>& projs, const std::vector<at::Tensor>& biases,
                             const std::vector<at::Tensor>& w_hh_ts, const std::vector<at::Tensor>& w_scales,
                             const Positions& positions) {
  return run_int8<LstmForward>(
      projs, biases, w_hh_ts, w_scales, positions, 4,
      [&](size_t d, int64_t T, int64_t B, int64_t H, const Options& f32, const at::Tensor& out,
          Placement placed) -> LstmForward {
        return {projs[d], biases[d], w_hh_ts[d], at::empty({1, B, 4 * H}, f32), states(T, B, H, f32),
                states(T, B, H, f32.dtype(at::kByte)), w_scales[d], out, placed};
      },
      [](LstmForward& one, int64_t first, int64_t last, auto projected) {
        lstm_forward_rows<uint8_t, decltype(projected)>(one, first, last);
      });
}

at::Tensor gru_forward_int8(const std::vector<at::Tensor>& projs, const std::vector<at::Tensor>& biases,
                            const std::vector<at::Tensor>& b_hns, const std::vector<at::Tensor>& w_hh_ts,
                            const std::vector<at::Tensor>& w_scales, const Positions& positions) {
  TORCH_CHECK(b_hns.size() == projs.size(), "every argument needs one entry per direction");
  return run_int8<GruForward>(
      projs, biases, w_hh_ts, w_scales, positions, 3,
      [&](size_t d, int64_t T, int64_t B, int64_t H, const Options& f32, const at::Tensor& out,
          Placement placed) -> GruForward {
        check(b_hns[d], at::kFloat, {H}, "b_hn");
        return {projs[d], biases[d], b_hns[d], w_hh_ts[d], at::empty({1, B, 3 * H}, f32), states(T, B, H, f32),
                at::empty({1, B, H}, f32), states(T, B, H, f32.dtype(at::kByte)), w_scales[d], out, placed};
      },
      [](GruForward& one, int64_t first, int64_t last, auto projected) {
        gru_forward_rows<uint8_t, decltype(projected)>(one, first, last);
      });
}

at::Tensor rnn_forward_int8(const std::vector<at::Tensor>& projs, const std::vector<at::Tensor>& biases,
                            const std::vector<at::Tensor>& w_hh_ts, const std::vector<at::Tensor>& w_scales,
                            const Positions& positions) {
  return run_int8<RnnForward>(
      projs, biases, w_hh_ts, w_scales, positions, 1,
      [&](size_t d, int64_t T, int64_t B, int64_t H, const Options& f32, const at::Tensor& out,
          Placement placed) -> RnnForward {
        return {projs[d], biases[d], w_hh_ts[d], states(T, B, H, f32), states(T, B, H, f32.dtype(at::kByte)),
                false, w_scales[d], out, placed};
      },
      [](RnnForward& one, int64_t first, int64_t last, auto projected) {
        rnn_forward_rows<uint8_t, decltype(projected)>(one, first, last);
      });
}

// How many distinct threads run the tasks of a call over `directions` x `batch` rows: what the
// time loops get. Tests read it; it is 1 where the file was built without OpenMP.
int64_t task_threads(int64_t directions, int64_t batch) {
  std::mutex mutex;
  std::set<std::thread::id> seen;
  Blocks(directions, batch).run([&](int64_t, int64_t, int64_t, int64_t) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));  // keep each task's thread busy
    const std::lock_guard<std::mutex> lock(mutex);
    seen.insert(std::this_thread::get_id());
  });
  return static_cast<int64_t>(seen.size());
}

}  // namespace

// csrc/adam.cpp, built into the same module.
std::tuple<at::Tensor, at::Tensor> embedding_rows_grad(const at::Tensor& ids, const at::Tensor& grad,
                                                       int64_t num_weights, int64_t padding);
void adam_from_rows(at::Tensor weight, at::Tensor exp_avg, at::Tensor exp_avg_sq, const at::Tensor& rows,
                    const at::Tensor& values, double lr, double beta1, double beta2, double eps,
                    double weight_decay, bool decoupled, int64_t step);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("lstm_forward", &lstm_forward);
  m.def("lstm_backward", &lstm_backward);
  m.def("gru_forward", &gru_forward);
  m.def("gru_backward", &gru_backward);
  m.def("rnn_forward", &rnn_forward);
  m.def("rnn_backward", &rnn_backward);
  m.def("lstm_forward_int8", &lstm_forward_int8);
  m.def("gru_forward_int8", &gru_forward_int8);
  m.def("rnn_forward_int8", &rnn_forward_int8);
  m.def("has_int8_products", &has_int8_products);
  m.def("task_threads", &task_threads);
  m.def("embedding_rows_grad", &embedding_rows_grad);
  m.def("adam_from_rows", &adam_from_rows);
}
