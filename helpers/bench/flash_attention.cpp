// Fused ("flash") attention for CPUs in float32 (and in bfloat16 pairs on AVX-512 BF16), built by
// helpers/bench/attention.py with torch's cpp_extension.
//
// softmax(q k^T * scale) v for one (batch, head) and a block of queries at a time, without ever holding the whole
// (queries x keys) score matrix: keys and values are read a block at a time and the softmax is kept running
// (its maximum and sum are updated per block, and the output rescaled). Everything is laid out *transposed*, with
// the queries along the vector lanes: scores S^T = K Q^T, their maxima and sums, and the output O^T = V^T P^T are
// then all lane-wise, with no horizontal reductions, and no lane is wasted on SD 1.5's head size of 40 (2.5
// AVX-512 vectors). One source, two instruction sets: ED_AVX512 (16 lanes) or AVX2 + FMA (8 lanes). With ED_BF16
// (AVX-512 BF16), bfloat16 inputs take a second path whose two products multiply pairs of bfloat16 numbers into
// float32 sums (vdpbf16ps: twice the work of a float32 FMA per instruction); the softmax stays in float32.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>

namespace {

#if defined(ED_AVX512)
using vec = __m512;
constexpr int W = 16;
constexpr int QV = 4, TR = 4, TD = 5, KB = 128;  // tuned on a Xeon with AVX-512 (2 cores)
inline vec vzero() { return _mm512_setzero_ps(); }
inline vec vset(float x) { return _mm512_set1_ps(x); }
inline vec vload(const float* p) { return _mm512_load_ps(p); }
inline void vstore(float* p, vec x) { _mm512_store_ps(p, x); }
inline vec vfma(vec a, vec b, vec c) { return _mm512_fmadd_ps(a, b, c); }
inline vec vmul(vec a, vec b) { return _mm512_mul_ps(a, b); }
inline vec vadd(vec a, vec b) { return _mm512_add_ps(a, b); }
inline vec vsub(vec a, vec b) { return _mm512_sub_ps(a, b); }
inline vec vmax(vec a, vec b) { return _mm512_max_ps(a, b); }
inline vec vround(vec x) { return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
inline vec vscale(vec p, vec n) { return _mm512_scalef_ps(p, n); }  // p * 2^n
#else
using vec = __m256;
constexpr int W = 8;
constexpr int QV = 3, TR = 4, TD = 4, KB = 128;  // 16 registers: 12 accumulators, 4 operands
inline vec vzero() { return _mm256_setzero_ps(); }
inline vec vset(float x) { return _mm256_set1_ps(x); }
inline vec vload(const float* p) { return _mm256_load_ps(p); }
inline void vstore(float* p, vec x) { _mm256_store_ps(p, x); }
inline vec vfma(vec a, vec b, vec c) { return _mm256_fmadd_ps(a, b, c); }
inline vec vmul(vec a, vec b) { return _mm256_mul_ps(a, b); }
inline vec vadd(vec a, vec b) { return _mm256_add_ps(a, b); }
inline vec vsub(vec a, vec b) { return _mm256_sub_ps(a, b); }
inline vec vmax(vec a, vec b) { return _mm256_max_ps(a, b); }
inline vec vround(vec x) { return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
inline vec vscale(vec p, vec n) {  // p * 2^n for integer n in [-126, 0]: n goes straight into the exponent bits
  __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}
#endif
constexpr int QB = W * QV;  // queries per block
static_assert(KB % TR == 0, "a block of keys is a whole number of score tiles");

// 2^x for x <= 0: 2^round(x) times a degree-6 Taylor polynomial of 2^f on [-0.5, 0.5] (relative error ~1e-7).
inline vec exp2(vec x) {
  x = vmax(vset(-126.f), x);  // max returns its second operand when either is NaN: a NaN score stays NaN
  vec n = vround(x), f = vsub(x, n);
  vec p = vset(1.5403530e-4f);
  p = vfma(p, f, vset(1.3333558e-3f));
  p = vfma(p, f, vset(9.6181291e-3f));
  p = vfma(p, f, vset(5.5504109e-2f));
  p = vfma(p, f, vset(2.4022651e-1f));
  p = vfma(p, f, vset(6.9314718e-1f));
  p = vfma(p, f, vset(1.f));
  return vscale(p, n);
}

// The register tile both products are made of: acc[r][:] += sum_i A[r * a_row + i * a_step] * B[i][:], for R rows
// of A (one number, or one bfloat16 pair, broadcast to every lane) against n rows of B (QB lanes each).
inline vec lanes(const float* p) { return vload(p); }
inline vec splat(float x) { return vset(x); }
inline vec madd(vec acc, vec a, vec b) { return vfma(a, b, acc); }
#if defined(ED_BF16)  // the same for bfloat16 pairs (see the bfloat16 path below)
using bvec = __m512bh;
inline bvec lanes(const uint32_t* p) { return (bvec)_mm512_load_si512(p); }
inline bvec splat(uint32_t pair) { return (bvec)_mm512_set1_epi32((int)pair); }
inline vec madd(vec acc, bvec a, bvec b) { return _mm512_dpbf16_ps(acc, a, b); }
#endif

template <int R, typename E>
inline void tile(const E* A, int64_t a_row, int64_t a_step, const E* B, int n, vec (&acc)[R][QV]) {
  for (int i = 0; i < n; ++i) {
    decltype(lanes(B)) b[QV];
#pragma GCC unroll 16
    for (int c = 0; c < QV; ++c) b[c] = lanes(B + i * QB + W * c);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      auto a = splat(A[r * a_row + i * a_step]);
#pragma GCC unroll 16
      for (int c = 0; c < QV; ++c) acc[r][c] = madd(acc[r][c], a, b[c]);
    }
  }
}

// acc set to zero, or to R rows of O times alpha; and stored back, times `scale` if given.
template <int R>
inline void load_rows(vec (&acc)[R][QV], const float* O, const vec* alpha) {
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int c = 0; c < QV; ++c) acc[r][c] = O ? vmul(vload(O + r * QB + W * c), alpha[c]) : vzero();
}
template <int R>
inline void store_rows(const vec (&acc)[R][QV], float* O, const vec* scale = nullptr) {
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int c = 0; c < QV; ++c) vstore(O + r * QB + W * c, scale ? vmul(acc[r][c], *scale) : acc[r][c]);
}

// Scores of TR keys against the block's queries: S[r][:] = sum_d K[r][d] * Qt[d][:].
inline void scores(const float* K, const float* Qt, float* S, int D) {
  vec acc[TR][QV];
  load_rows(acc, nullptr, nullptr);
  tile(K, D, 1, Qt, D, acc);
  store_rows(acc, S);
}

// T rows of the output, rescaled and accumulated: O[t][:] = O[t][:] * alpha + sum_j V[j][t] * P[j][:].
template <int T>
inline void accumulate(const float* V, const float* P, float* O, const vec* alpha, int D, int keys) {
  vec acc[T][QV];
  load_rows(acc, O, alpha);
  tile(V, 1, D, P, keys, acc);
  store_rows(acc, O);
}

// One block of queries (Qt: D x QB, pre-scaled by scale * log2(e)) against all Nk keys and values (Nk x D, zero
// padded to a multiple of KB); writes `rows` output rows, `out_stride` floats apart. S and O are scratch.
void query_block(const float* Qt, const float* K, const float* V, float* out, int64_t D, int64_t Nk, int64_t rows,
                 int64_t out_stride, float* S, float* O) {
  alignas(64) float m[QB], l[QB];
  std::fill(m, m + QB, -1e30f);
  std::fill(l, l + QB, 0.f);
  std::fill(O, O + D * QB, 0.f);
  for (int64_t k0 = 0; k0 < Nk; k0 += KB) {
    const float* Kb = K + k0 * D;
    const float* Vb = V + k0 * D;
    const int keys = (int)std::min<int64_t>(KB, Nk - k0);
    for (int j = 0; j < keys; j += TR) scores(Kb + j * D, Qt, S + j * QB, (int)D);  // padded keys: zeros
    vec top[QV], alpha[QV], sum[QV];
    for (int c = 0; c < QV; ++c) top[c] = vload(m + W * c);
    for (int j = 0; j < keys; ++j)
      for (int c = 0; c < QV; ++c) top[c] = vmax(top[c], vload(S + j * QB + W * c));
    for (int c = 0; c < QV; ++c) {
      alpha[c] = exp2(vsub(vload(m + W * c), top[c]));
      vstore(m + W * c, top[c]);
      sum[c] = vzero();
    }
    for (int j = 0; j < keys; ++j)
      for (int c = 0; c < QV; ++c) {
        vec p = exp2(vsub(vload(S + j * QB + W * c), top[c]));
        vstore(S + j * QB + W * c, p);
        sum[c] = vadd(sum[c], p);
      }
    for (int c = 0; c < QV; ++c) vstore(l + W * c, vfma(vload(l + W * c), alpha[c], sum[c]));
    int64_t d = 0;
    for (; d + TD <= D; d += TD) accumulate<TD>(Vb + d, S, O + d * QB, alpha, (int)D, keys);
    for (; d < D; ++d) accumulate<1>(Vb + d, S, O + d * QB, alpha, (int)D, keys);
  }
  for (int64_t i = 0; i < rows; ++i) {
    const float inv = 1.f / l[i];
    for (int64_t d = 0; d < D; ++d) out[i * out_stride + d] = O[d * QB + i] * inv;
  }
}

#if defined(ED_BF16)
// The bfloat16 path. A "pair" is two bfloat16 numbers in one 32-bit lane, which vdpbf16ps multiplies with another
// pair and adds, both products, to a float32 lane. Queries hold pairs of head features (Qp: D/2 x QB pairs),
// keys are bfloat16 rows whose consecutive features are already pairs, the weights P hold pairs of keys
// (KB/2 x QB), and the values are stored transposed in pairs of keys (Vt: D x Nk/2 pairs).

// Scores of TR keys against the block's queries, times `scale`: S[r][:] = scale * sum_d K[r][d] * Q[:][d].
inline void scores_bf16(const uint32_t* K, const uint32_t* Qp, float* S, int D2, vec scale) {
  vec acc[TR][QV];
  load_rows(acc, nullptr, nullptr);
  tile(K, D2, 1, Qp, D2, acc);
  store_rows(acc, S, &scale);
}

// T rows of the output, rescaled and accumulated over pairs of keys: O[t][:] = O[t][:] * alpha + sum_j V[j][t] P[j][:].
template <int T>
inline void accumulate_bf16(const uint32_t* Vt, int64_t vstride, const uint32_t* Pp, float* O, const vec* alpha,
                            int pairs) {
  vec acc[T][QV];
  load_rows(acc, O, alpha);
  tile(Vt, vstride, 1, Pp, pairs, acc);
  store_rows(acc, O);
}

// As query_block, for bfloat16 pairs: Qp (D2 x QB pairs), K (Nkp x D2 pairs), Vt (D x Nkp/2 pairs), zero-padded
// from the Nk real keys to Nkp, a multiple of KB; `scale` includes log2(e). S, Pp and O are scratch.
void query_block_bf16(const uint32_t* Qp, const uint32_t* K, const uint32_t* Vt, float* out, int64_t D, int64_t D2,
                      int64_t Nk, int64_t Nkp, int64_t rows, int64_t out_stride, float scale, float* S, uint32_t* Pp,
                      float* O) {
  alignas(64) float m[QB], l[QB];
  std::fill(m, m + QB, -1e30f);
  std::fill(l, l + QB, 0.f);
  std::fill(O, O + D * QB, 0.f);
  // vpermw indices that interleave two rows of 16 bfloat16 weights (keys j and j + 1) into 16 pairs
  alignas(64) int16_t interleave[32];
  for (int i = 0; i < 16; ++i) interleave[2 * i] = (int16_t)i, interleave[2 * i + 1] = (int16_t)(16 + i);
  const __m512i order = _mm512_load_si512(interleave);
  const vec vscale = vset(scale);
  for (int64_t k0 = 0; k0 < Nk; k0 += KB) {
    const int keys = (int)std::min<int64_t>(KB, Nk - k0), pairs = (keys + 1) / 2;
    for (int j = 0; j < keys; j += TR) scores_bf16(K + (k0 + j) * D2, Qp, S + j * QB, (int)D2, vscale);
    vec top[QV], alpha[QV], sum[QV];
    for (int c = 0; c < QV; ++c) top[c] = vload(m + W * c);
    for (int j = 0; j < keys; ++j)
      for (int c = 0; c < QV; ++c) top[c] = vmax(top[c], vload(S + j * QB + W * c));
    for (int c = 0; c < QV; ++c) {
      alpha[c] = exp2(vsub(vload(m + W * c), top[c]));
      vstore(m + W * c, top[c]);
      sum[c] = vzero();
    }
    for (int j = 0; j < keys; ++j)
      for (int c = 0; c < QV; ++c) {
        vec p = exp2(vsub(vload(S + j * QB + W * c), top[c]));
        vstore(S + j * QB + W * c, p);
        sum[c] = vadd(sum[c], p);
      }
    // the odd key's partner (a zero-padded key, whose value row is zero too) is given no weight all the same
    if (keys % 2) std::fill(S + keys * QB, S + (keys + 1) * QB, 0.f);
    for (int j = 0; j < pairs; ++j)
      for (int c = 0; c < QV; ++c) {
        __m512bh two = _mm512_cvtne2ps_pbh(vload(S + (2 * j + 1) * QB + W * c), vload(S + 2 * j * QB + W * c));
        _mm512_store_si512(Pp + j * QB + W * c, _mm512_permutexvar_epi16(order, (__m512i)two));
      }
    for (int c = 0; c < QV; ++c) vstore(l + W * c, vfma(vload(l + W * c), alpha[c], sum[c]));
    const uint32_t* Vb = Vt + k0 / 2;
    const int64_t vstride = Nkp / 2;
    int64_t d = 0;
    for (; d + TD <= D; d += TD) accumulate_bf16<TD>(Vb + d * vstride, vstride, Pp, O + d * QB, alpha, pairs);
    for (; d < D; ++d) accumulate_bf16<1>(Vb + d * vstride, vstride, Pp, O + d * QB, alpha, pairs);
  }
  for (int64_t i = 0; i < rows; ++i) {
    const float inv = 1.f / l[i];
    for (int64_t d = 0; d < D; ++d) out[i * out_stride + d] = O[d * QB + i] * inv;
  }
}

// The bfloat16 path of flash_attention (below): q, k, v all bfloat16; the result in bfloat16.
at::Tensor flash_attention_bf16(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale) {
  const int64_t B = q.size(0), Nq = q.size(1), H = q.size(2), D = q.size(3), Nk = k.size(1);
  const int64_t D2 = (D + 1) / 2, nqb = (Nq + QB - 1) / QB, Nkp = (Nk + KB - 1) / KB * KB;
  auto bf = q.options().dtype(at::kBFloat16);
  // Queries as (batch, heads, query block, head-size pairs, QB, 2); keys as (batch, heads, Nkp, 2 * D2), both
  // zero-padded (an odd head size gets a zero feature); values as (batch, heads, D, Nkp / 2, 2).
  auto qs = at::zeros({B, nqb * QB, H, 2 * D2}, bf);
  qs.narrow(1, 0, Nq).narrow(3, 0, D).copy_(q);
  auto Qp = qs.view({B, nqb, QB, H, D2, 2}).permute({0, 3, 1, 4, 2, 5}).contiguous();
  auto Kp = at::zeros({B, H, Nkp, 2 * D2}, bf);
  Kp.narrow(2, 0, Nk).narrow(3, 0, D).copy_(k.permute({0, 2, 1, 3}));
  auto Vp = at::zeros({B, H, Nkp, D}, bf);
  Vp.narrow(2, 0, Nk).copy_(v.permute({0, 2, 1, 3}));
  auto Vt = Vp.view({B, H, Nkp / 2, 2, D}).permute({0, 1, 4, 2, 3}).contiguous();
  auto out = at::empty({B, Nq, H, D}, q.options().dtype(at::kFloat));
  const auto* qp = reinterpret_cast<const uint32_t*>(Qp.data_ptr());
  const auto* kp = reinterpret_cast<const uint32_t*>(Kp.data_ptr());
  const auto* vt = reinterpret_cast<const uint32_t*>(Vt.data_ptr());
  float* o = out.data_ptr<float>();
  const float s = (float)(scale * 1.4426950408889634);
  at::parallel_for(0, B * H * nqb, 1, [&](int64_t begin, int64_t end) {
    auto scratch = [](size_t bytes) { return std::aligned_alloc(64, (bytes + 63) / 64 * 64); };
    float* S = static_cast<float*>(scratch(sizeof(float) * KB * QB));
    uint32_t* Pp = static_cast<uint32_t*>(scratch(sizeof(uint32_t) * KB / 2 * QB));
    float* O = static_cast<float*>(scratch(sizeof(float) * D * QB));
    TORCH_CHECK(S != nullptr && Pp != nullptr && O != nullptr, "out of memory for the kernel's scratch");
    for (int64_t item = begin; item < end; ++item) {
      const int64_t bh = item / nqb, qb = item % nqb, b = bh / H, h = bh % H;
      query_block_bf16(qp + item * D2 * QB, kp + bh * Nkp * D2, vt + bh * D * (Nkp / 2),
                       o + ((b * Nq + qb * QB) * H + h) * D, D, D2, Nk, Nkp, std::min<int64_t>(QB, Nq - qb * QB),
                       H * D, s, S, Pp, O);
    }
    std::free(S);
    std::free(Pp);
    std::free(O);
  });
  return out.to(at::kBFloat16);
}
#endif

}  // namespace

// q: (batch, queries, heads, head size), k and v: (batch, keys, heads, head size), any float dtype and strides;
// returns softmax(q k^T * scale) v as (batch, queries, heads, head size) in q's dtype, computed in float32 (built
// with ED_BF16, all-bfloat16 inputs multiply in bfloat16 pairs, summed in float32).
at::Tensor flash_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, double scale) {
  TORCH_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4, "q, k, v must be (batch, tokens, heads, head size)");
  TORCH_CHECK(k.sizes() == v.sizes() && q.size(0) == k.size(0) && q.size(2) == k.size(2) && q.size(3) == k.size(3),
              "q, k, v must agree in batch, heads and head size, and k and v in every size");
  TORCH_CHECK(q.device().is_cpu() && k.device().is_cpu() && v.device().is_cpu(), "q, k, v must be on the CPU");
  TORCH_CHECK(q.is_floating_point() && k.is_floating_point() && v.is_floating_point(), "q, k, v must be floats");
  TORCH_CHECK(k.size(1) > 0, "attention needs at least one key");
#if defined(ED_BF16)
  if (q.scalar_type() == at::kBFloat16 && k.scalar_type() == at::kBFloat16 && v.scalar_type() == at::kBFloat16)
    return flash_attention_bf16(q, k, v, scale);
#endif
  const int64_t B = q.size(0), Nq = q.size(1), H = q.size(2), D = q.size(3), Nk = k.size(1);
  const int64_t nqb = (Nq + QB - 1) / QB, Nkp = (Nk + KB - 1) / KB * KB;
  auto f32 = q.options().dtype(at::kFloat);
  // Queries, scaled so that 2^x gives the softmax's e^x, as (batch, heads, query block, head size, QB).
  auto qs = at::zeros({B, nqb * QB, H, D}, f32);
  qs.narrow(1, 0, Nq).copy_(q).mul_(scale * 1.4426950408889634);
  auto Qt = qs.view({B, nqb, QB, H, D}).permute({0, 3, 1, 4, 2}).contiguous();
  auto Kp = at::zeros({B, H, Nkp, D}, f32);
  auto Vp = at::zeros({B, H, Nkp, D}, f32);
  Kp.narrow(2, 0, Nk).copy_(k.permute({0, 2, 1, 3}));
  Vp.narrow(2, 0, Nk).copy_(v.permute({0, 2, 1, 3}));
  auto out = at::empty({B, Nq, H, D}, f32);
  const float* qt = Qt.data_ptr<float>();
  const float* kp = Kp.data_ptr<float>();
  const float* vp = Vp.data_ptr<float>();
  float* o = out.data_ptr<float>();
  at::parallel_for(0, B * H * nqb, 1, [&](int64_t begin, int64_t end) {
    // aligned_alloc wants a size that is a multiple of the alignment
    float* S = static_cast<float*>(std::aligned_alloc(64, (sizeof(float) * KB * QB + 63) / 64 * 64));
    float* O = static_cast<float*>(std::aligned_alloc(64, (sizeof(float) * D * QB + 63) / 64 * 64));
    TORCH_CHECK(S != nullptr && O != nullptr, "out of memory for the kernel's scratch");
    for (int64_t item = begin; item < end; ++item) {
      const int64_t bh = item / nqb, qb = item % nqb, b = bh / H, h = bh % H;
      query_block(qt + item * D * QB, kp + bh * Nkp * D, vp + bh * Nkp * D, o + ((b * Nq + qb * QB) * H + h) * D, D,
                  Nk, std::min<int64_t>(QB, Nq - qb * QB), H * D, S, O);
    }
    std::free(S);
    std::free(O);
  });
  return q.scalar_type() == at::kFloat ? out : out.to(q.scalar_type());
}

// An operator of its own (torch.ops.efficient_diffusion.flash_attention), so that torch.compile calls the kernel
// as it is; attention.py gives it the shape rule that tracing needs.
TORCH_LIBRARY(efficient_diffusion, m) {
  m.def("flash_attention(Tensor query, Tensor key, Tensor value, float scale) -> Tensor");
}

TORCH_LIBRARY_IMPL(efficient_diffusion, CPU, m) { m.impl("flash_attention", &flash_attention); }
