// Decode attention over the paged KV cache: one query token per sequence, keys and values
// read in place through the block table (no gathered or padded copy).
//
// Why a kernel and not torch ops: decode attention is a batch of matrix-vector products
// whose sizes differ per sequence. Torch can only batch them by padding every sequence to
// the longest context (the old path: one 1,800-token sequence among 47 of 330 made a step
// 2.6x slower) or by gathering the pages into a copy and issuing many small matmuls, each
// dominated by call overhead (see benchmarks/attention_step.py for the measured paths).
// Here the work is exactly the sum of the context lengths, as in vLLM's CPU backend.
//
// Work items are (sequence, partition of at most `partition_size` keys), so a long context
// is split across threads (flash-decoding); each item writes its normalised output and
// log-sum-exp, and a second pass merges a sequence's partitions by log-sum-exp.
// Accumulation is float32 whatever the cache dtype (float32 or bfloat16).
//
// Two implementations of one work item: a portable one (plain loops the compiler
// vectorises) and, for bfloat16 on CPUs with AVX512-BF16 (built with -march=native), one
// with intrinsics: key dot products with vdpbf16ps (bf16 pairs multiplied exactly,
// accumulated in float32), a vectorised exp for the softmax, values widened 16 at a time
// and used by every query head of their KV head, and software prefetch of the pages.
// On 2 AVX-512 cores (small_llama heads, 32 sequences x 160 keys, 2 threads) one call
// took 0.18-0.22 ms against the portable item's 0.48-0.56 ms. `portable=true` forces the
// portable item (tests run both).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <limits>
#include <vector>

namespace {

inline float to_float(float x) { return x; }
inline float to_float(at::BFloat16 x) {
  uint32_t bits = static_cast<uint32_t>(x.x) << 16;
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

inline float dot(const float* q, const float* k, int64_t dim) {
  float sum = 0.f;
#pragma omp simd reduction(+ : sum)
  for (int64_t d = 0; d < dim; ++d) sum += q[d] * k[d];
  return sum;
}

template <typename T>
inline void convert(const T* x, float* y, int64_t n) {
#pragma omp simd
  for (int64_t d = 0; d < n; ++d) y[d] = to_float(x[d]);
}

template <typename T>
inline void axpy(float a, const T* x, float* y, int64_t dim) {
#pragma omp simd
  for (int64_t d = 0; d < dim; ++d) y[d] += a * to_float(x[d]);
}

struct Item {
  int64_t seq, key_begin, key_end;
};

// One item's pages: key (or value) row of `key` for all KV heads is at
// pages + slot(key) * token_stride.
struct Pages {
  const int32_t* row;  // the sequence's block-table row
  int64_t block_size, token_stride;
  inline int64_t offset(int64_t key) const {
    return (static_cast<int64_t>(row[key / block_size]) * block_size + key % block_size) * token_stride;
  }
};

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512BF16__)
#define SEMIPD_AVX512_BF16 1
namespace avx512 {

inline __mmask32 mask32(int64_t left) { return left >= 32 ? 0xFFFFFFFFu : ((1u << left) - 1u); }
inline __mmask16 mask16(int64_t left) {
  return left >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << left) - 1u);
}

// 16 bf16 (masked) -> 16 float: a bf16 is the top half of a float's bits.
inline __m512 load_bf16(const uint16_t* x, __mmask16 m) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, x)), 16));
}

// exp(x) for x <= 0 (softmax after subtracting the max): x = n ln2 + r, |r| <= ln2/2,
// exp(r) by its degree-6 Taylor polynomial (relative error < 2e-7), times 2^n by scalef.
inline __m512 exp_nonpositive(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-104.f));  // exp underflows to 0 below ~-103.9
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);  // ln2 in two parts
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.f / 720.f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 120.f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 24.f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f / 6.f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.f));
  return _mm512_scalef_ps(p, n);
}

constexpr int64_t kPrefetchAhead = 16;

inline void prefetch_row(const uint16_t* row, int64_t bytes) {
  const char* p = reinterpret_cast<const char*>(row);
  for (int64_t b = 0; b < bytes; b += 64) _mm_prefetch(p + b, _MM_HINT_T0);
}

// Sums of 4 vectors: {sum(a), sum(b), sum(c), sum(d)} (fewer shuffles than 4 reductions).
inline __m128 sum4(__m512 a, __m512 b, __m512 c, __m512 d) {
  const __m512 ab = _mm512_add_ps(_mm512_shuffle_f32x4(a, b, 0x44), _mm512_shuffle_f32x4(a, b, 0xEE));
  const __m512 cd = _mm512_add_ps(_mm512_shuffle_f32x4(c, d, 0x44), _mm512_shuffle_f32x4(c, d, 0xEE));
  // ab = [a0+a2, a1+a3, b0+b2, b1+b3] in 128-bit blocks; pair them up across ab and cd.
  __m512 x = _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, 0x88), _mm512_shuffle_f32x4(ab, cd, 0xDD));
  // x = [a, b, c, d] as 4-float partial sums; finish each block.
  x = _mm512_add_ps(x, _mm512_permute_ps(x, 0x4E));
  x = _mm512_add_ps(x, _mm512_permute_ps(x, 0xB1));
  // lane 0 of each block holds its sum: gather lanes 0, 4, 8, 12.
  return _mm512_castps512_ps128(_mm512_permutexvar_ps(_mm512_setr_epi32(0, 4, 8, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), x));
}

// Values: out[h] += p[t][h] * v[t] for the G query heads h0..h0+G-1 sharing KV head
// `v_head`, over all n keys, one 16-float slice of dim at a time so that the G
// accumulators stay in registers.
template <int G>
inline void values(const uint16_t* vp, const int64_t* offs, int64_t n, const float* probs, int64_t num_heads,
                   int64_t h0, int64_t v_head, int64_t dim, float* out) {
  for (int64_t d = 0; d < dim; d += 16) {
    const __mmask16 m = mask16(dim - d);
    __m512 acc[G];
    for (int g = 0; g < G; ++g) acc[g] = _mm512_setzero_ps();
    for (int64_t t = 0; t < n; ++t) {
      const __m512 vf = load_bf16(vp + offs[t] + v_head * dim + d, m);  // widened once for G heads
      const float* p = probs + t * num_heads + h0;
      for (int g = 0; g < G; ++g) acc[g] = _mm512_fmadd_ps(_mm512_set1_ps(p[g]), vf, acc[g]);
    }
    for (int g = 0; g < G; ++g) _mm512_mask_storeu_ps(out + (h0 + g) * dim + d, m, acc[g]);
  }
}

// One item (keys [key_begin, key_begin + n) of one sequence), every head: writes the
// normalised output out[num_heads * dim] and lse[num_heads]. Scratch: probs of
// n * num_heads floats (laid out [key][head], so that the softmax runs across heads with
// full vectors and a key's logits for a KV head's group are stored together), offs of n.
void item_bf16(const uint16_t* q, const uint16_t* kp, const uint16_t* vp, const Pages& pages,
               int64_t key_begin, int64_t n, int64_t num_heads, int64_t num_kv_heads, int64_t dim,
               float scale, float* probs, int64_t* offs, float* out, float* lse) {
  const int64_t group = num_heads / num_kv_heads;
  // Row offsets of the item's keys, one division per page rather than per key.
  for (int64_t t = 0, key = key_begin; t < n;) {
    const int64_t in_block = key % pages.block_size;
    const int64_t base = static_cast<int64_t>(pages.row[key / pages.block_size]) * pages.block_size + in_block;
    const int64_t take = std::min(pages.block_size - in_block, n - t);
    for (int64_t j = 0; j < take; ++j) offs[t + j] = (base + j) * pages.token_stride;
    t += take;
    key += take;
  }
  // Logits: 4 query heads at a time against one bf16 key row (no widening). The cache is
  // mostly cold here (a step streams all weights and every layer's KV through the
  // caches), and the hardware prefetcher stops at each page's end, so the K row
  // `kPrefetchAhead` keys on and this key's V row (read after the softmax) are
  // prefetched by hand: in the engine (small_llama, batch 32, 128-192 keys) this cut the
  // median decode-attention call from 0.49 to 0.28 ms.
  const int64_t row_bytes = pages.token_stride * 2;
  for (int64_t t = 0; t < std::min(n, kPrefetchAhead); ++t) prefetch_row(kp + offs[t], row_bytes);
  for (int64_t t = 0; t < n; ++t) {
    if (t + kPrefetchAhead < n) prefetch_row(kp + offs[t + kPrefetchAhead], row_bytes);
    prefetch_row(vp + offs[t], row_bytes);
    for (int64_t kh = 0; kh < num_kv_heads; ++kh) {
      const uint16_t* k = kp + offs[t] + kh * dim;
      float* l = probs + t * num_heads;
      int64_t h = kh * group;
      for (; h + 4 <= (kh + 1) * group; h += 4) {
        __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int64_t d = 0; d < dim; d += 32) {
          const __mmask32 m = mask32(dim - d);
          const __m512bh kv = (__m512bh)_mm512_maskz_loadu_epi16(m, k + d);
          a0 = _mm512_dpbf16_ps(a0, (__m512bh)_mm512_maskz_loadu_epi16(m, q + h * dim + d), kv);
          a1 = _mm512_dpbf16_ps(a1, (__m512bh)_mm512_maskz_loadu_epi16(m, q + (h + 1) * dim + d), kv);
          a2 = _mm512_dpbf16_ps(a2, (__m512bh)_mm512_maskz_loadu_epi16(m, q + (h + 2) * dim + d), kv);
          a3 = _mm512_dpbf16_ps(a3, (__m512bh)_mm512_maskz_loadu_epi16(m, q + (h + 3) * dim + d), kv);
        }
        _mm_storeu_ps(l + h, _mm_mul_ps(sum4(a0, a1, a2, a3), _mm_set1_ps(scale)));
      }
      for (; h < (kh + 1) * group; ++h) {
        __m512 a = _mm512_setzero_ps();
        for (int64_t d = 0; d < dim; d += 32) {
          const __mmask32 m = mask32(dim - d);
          a = _mm512_dpbf16_ps(a, (__m512bh)_mm512_maskz_loadu_epi16(m, q + h * dim + d),
                               (__m512bh)_mm512_maskz_loadu_epi16(m, k + d));
        }
        l[h] = _mm512_reduce_add_ps(a) * scale;
      }
    }
  }
  // Softmax over keys, 16 heads per vector.
  for (int64_t h = 0; h < num_heads; h += 16) {
    const __mmask16 m = mask16(num_heads - h);
    __m512 vmax = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
    for (int64_t t = 0; t < n; ++t) vmax = _mm512_max_ps(vmax, _mm512_maskz_loadu_ps(m, probs + t * num_heads + h));
    __m512 vsum = _mm512_setzero_ps();
    for (int64_t t = 0; t < n; ++t) {
      float* l = probs + t * num_heads + h;
      const __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, l), vmax));
      _mm512_mask_storeu_ps(l, m, e);
      vsum = _mm512_add_ps(vsum, e);
    }
    // Normalise the probabilities here (n x heads) rather than the output (heads x dim).
    const __m512 inv = _mm512_div_ps(_mm512_set1_ps(1.f), vsum);
    for (int64_t t = 0; t < n; ++t) {
      float* l = probs + t * num_heads + h;
      _mm512_mask_storeu_ps(l, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, l), inv));
    }
    alignas(64) float mx[16], sm[16];
    _mm512_store_ps(mx, vmax);
    _mm512_store_ps(sm, vsum);
    for (int64_t j = 0; j < std::min<int64_t>(16, num_heads - h); ++j) lse[h + j] = mx[j] + std::log(sm[j]);
  }
  for (int64_t kh = 0; kh < num_kv_heads; ++kh) {
    int64_t h = kh * group;
    const int64_t stop = (kh + 1) * group;
    for (; h + 8 <= stop; h += 8) values<8>(vp, offs, n, probs, num_heads, h, kh, dim, out);
    for (; h + 4 <= stop; h += 4) values<4>(vp, offs, n, probs, num_heads, h, kh, dim, out);
    for (; h < stop; ++h) values<1>(vp, offs, n, probs, num_heads, h, kh, dim, out);
  }
}

}  // namespace avx512
#endif

template <typename T>
void decode(const at::Tensor& q, const at::Tensor& k_pages, const at::Tensor& v_pages,
            const at::Tensor& block_table, const at::Tensor& seq_lens, double scale,
            int64_t partition_size, bool portable, at::Tensor& out) {
  const int64_t num_seqs = q.size(0), num_heads = q.size(1), dim = q.size(2);
  const int64_t block_size = k_pages.size(1), num_kv_heads = k_pages.size(2);
  const int64_t group = num_heads / num_kv_heads, table_width = block_table.size(1);
  const int32_t* table = block_table.data_ptr<int32_t>();
  const int32_t* lens = seq_lens.data_ptr<int32_t>();
  const T* qp = q.data_ptr<T>();
  const T* kp = k_pages.data_ptr<T>();
  const T* vp = v_pages.data_ptr<T>();
  T* op = out.data_ptr<T>();

  std::vector<Item> items;
  std::vector<int64_t> first_item(num_seqs + 1);
  for (int64_t s = 0; s < num_seqs; ++s) {
    first_item[s] = static_cast<int64_t>(items.size());
    for (int64_t b = 0; b < lens[s]; b += partition_size)
      items.push_back({s, b, std::min<int64_t>(lens[s], b + partition_size)});
  }
  first_item[num_seqs] = static_cast<int64_t>(items.size());
  const int64_t num_items = static_cast<int64_t>(items.size());
  // Per item and head: normalised output [dim] and log-sum-exp.
  std::vector<float> part_out(num_items * num_heads * dim);
  std::vector<float> part_lse(num_items * num_heads);
  const int64_t token_stride = num_kv_heads * dim;  // one token's row in a page

  at::parallel_for(0, num_items, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> qf(num_heads * dim), logits(num_heads * partition_size), kvf(token_stride);
    std::vector<int64_t> offs(partition_size);
    for (int64_t i = begin; i < end; ++i) {
      const Item it = items[i];
      const int64_t n = it.key_end - it.key_begin;
#ifdef SEMIPD_AVX512_BF16
      if constexpr (std::is_same_v<T, at::BFloat16>) {
        if (!portable) {
          auto bits = [](const T* p) { return reinterpret_cast<const uint16_t*>(p); };
          avx512::item_bf16(bits(qp + it.seq * num_heads * dim), bits(kp), bits(vp),
                            Pages{table + it.seq * table_width, block_size, token_stride}, it.key_begin, n,
                            num_heads, num_kv_heads, dim, static_cast<float>(scale), logits.data(),
                            offs.data(), &part_out[i * num_heads * dim], &part_lse[i * num_heads]);
          continue;
        }
      }
#endif
      const T* qs = qp + it.seq * num_heads * dim;
      for (int64_t x = 0; x < num_heads * dim; ++x) qf[x] = to_float(qs[x]) * static_cast<float>(scale);
      const Pages pages{table + it.seq * table_width, block_size, token_stride};
      // Each key row is converted to float once and used by the `group` query heads
      // that share its KV head (GQA), for both the logits and, below, the values.
      for (int64_t t = 0; t < n; ++t) {
        const int64_t key = it.key_begin + t;
        const T* k = kp + pages.offset(key);
        convert(k, kvf.data(), token_stride);
        for (int64_t h = 0; h < num_heads; ++h)
          logits[h * partition_size + t] = dot(&qf[h * dim], &kvf[(h / group) * dim], dim);
      }
      float* out_i = &part_out[i * num_heads * dim];
      std::fill(out_i, out_i + num_heads * dim, 0.f);
      for (int64_t h = 0; h < num_heads; ++h) {
        float* l = &logits[h * partition_size];
        float m = -std::numeric_limits<float>::infinity();
        for (int64_t t = 0; t < n; ++t) m = std::max(m, l[t]);
        float sum = 0.f;
        for (int64_t t = 0; t < n; ++t) {
          l[t] = std::exp(l[t] - m);
          sum += l[t];
        }
        const float inv = 1.f / sum;
        for (int64_t t = 0; t < n; ++t) l[t] *= inv;
        part_lse[i * num_heads + h] = m + std::log(sum);
      }
      for (int64_t t = 0; t < n; ++t) {
        const int64_t key = it.key_begin + t;
        const T* v = vp + pages.offset(key);
        convert(v, kvf.data(), token_stride);
        for (int64_t h = 0; h < num_heads; ++h)
          axpy(logits[h * partition_size + t], &kvf[(h / group) * dim], out_i + h * dim, dim);
      }
    }
  });

  at::parallel_for(0, num_seqs, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> acc(dim);
    for (int64_t s = begin; s < end; ++s) {
      const int64_t i0 = first_item[s], i1 = first_item[s + 1];
      for (int64_t h = 0; h < num_heads; ++h) {
        float m = -std::numeric_limits<float>::infinity();
        for (int64_t i = i0; i < i1; ++i) m = std::max(m, part_lse[i * num_heads + h]);
        std::fill(acc.begin(), acc.end(), 0.f);
        float total = 0.f;
        for (int64_t i = i0; i < i1; ++i) {
          const float w = std::exp(part_lse[i * num_heads + h] - m);
          total += w;
          axpy(w, &part_out[(i * num_heads + h) * dim], acc.data(), dim);
        }
        T* o = op + (s * num_heads + h) * dim;
        for (int64_t d = 0; d < dim; ++d) o[d] = static_cast<T>(acc[d] / total);
      }
    }
  });
}

at::Tensor paged_decode(const at::Tensor& q, const at::Tensor& k_pages, const at::Tensor& v_pages,
                        const at::Tensor& block_table, const at::Tensor& seq_lens, double scale,
                        int64_t partition_size, bool portable) {
  TORCH_CHECK(q.dim() == 3 && k_pages.dim() == 4 && v_pages.sizes() == k_pages.sizes(),
              "paged_decode: q [seqs, heads, dim], pages [blocks, block_size, kv_heads, dim]");
  TORCH_CHECK(q.is_contiguous() && k_pages.is_contiguous() && v_pages.is_contiguous(),
              "paged_decode: q and pages must be contiguous");
  TORCH_CHECK(q.scalar_type() == k_pages.scalar_type() && q.scalar_type() == v_pages.scalar_type(),
              "paged_decode: q and pages must share a dtype");
  TORCH_CHECK(q.size(2) == k_pages.size(3) && q.size(1) % k_pages.size(2) == 0,
              "paged_decode: head_dim mismatch or heads not a multiple of kv_heads");
  TORCH_CHECK(block_table.scalar_type() == at::kInt && seq_lens.scalar_type() == at::kInt &&
                  block_table.is_contiguous() && seq_lens.is_contiguous() &&
                  block_table.size(0) == q.size(0) && seq_lens.size(0) == q.size(0),
              "paged_decode: block_table [seqs, width] and seq_lens [seqs], contiguous int32");
  TORCH_CHECK(partition_size > 0, "paged_decode: partition_size must be positive");
  auto out = at::empty_like(q);
  if (q.scalar_type() == at::kFloat) {
    decode<float>(q, k_pages, v_pages, block_table, seq_lens, scale, partition_size, portable, out);
  } else if (q.scalar_type() == at::kBFloat16) {
    decode<at::BFloat16>(q, k_pages, v_pages, block_table, seq_lens, scale, partition_size, portable, out);
  } else {
    TORCH_CHECK(false, "paged_decode: float32 or bfloat16 only, got ", q.scalar_type());
  }
  return out;
}

}  // namespace

bool has_avx512_bf16() {
#ifdef SEMIPD_AVX512_BF16
  return true;
#else
  return false;
#endif
}

TORCH_LIBRARY(semipd, m) {
  m.def("paged_decode(Tensor q, Tensor k_pages, Tensor v_pages, Tensor block_table, "
        "Tensor seq_lens, float scale, int partition_size, bool portable=False) -> Tensor");
  // Whether this build has the AVX512-BF16 item (else bf16 uses the portable one).
  m.def("has_avx512_bf16() -> bool", &has_avx512_bf16);
}

TORCH_LIBRARY_IMPL(semipd, CPU, m) { m.impl("paged_decode", &paged_decode); }
