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
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
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

template <typename T>
void decode(const at::Tensor& q, const at::Tensor& k_pages, const at::Tensor& v_pages,
            const at::Tensor& block_table, const at::Tensor& seq_lens, double scale,
            int64_t partition_size, at::Tensor& out) {
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
    for (int64_t i = begin; i < end; ++i) {
      const Item it = items[i];
      const int64_t n = it.key_end - it.key_begin;
      const T* qs = qp + it.seq * num_heads * dim;
      for (int64_t x = 0; x < num_heads * dim; ++x) qf[x] = to_float(qs[x]) * static_cast<float>(scale);
      const int32_t* row = table + it.seq * table_width;
      // Each key row is converted to float once and used by the `group` query heads
      // that share its KV head (GQA), for both the logits and, below, the values.
      for (int64_t t = 0; t < n; ++t) {
        const int64_t key = it.key_begin + t;
        const T* k = kp + (static_cast<int64_t>(row[key / block_size]) * block_size + key % block_size) * token_stride;
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
        const T* v = vp + (static_cast<int64_t>(row[key / block_size]) * block_size + key % block_size) * token_stride;
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
                        int64_t partition_size) {
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
    decode<float>(q, k_pages, v_pages, block_table, seq_lens, scale, partition_size, out);
  } else if (q.scalar_type() == at::kBFloat16) {
    decode<at::BFloat16>(q, k_pages, v_pages, block_table, seq_lens, scale, partition_size, out);
  } else {
    TORCH_CHECK(false, "paged_decode: float32 or bfloat16 only, got ", q.scalar_type());
  }
  return out;
}

}  // namespace

TORCH_LIBRARY(semipd, m) {
  m.def("paged_decode(Tensor q, Tensor k_pages, Tensor v_pages, Tensor block_table, "
        "Tensor seq_lens, float scale, int partition_size) -> Tensor");
}

TORCH_LIBRARY_IMPL(semipd, CPU, m) { m.impl("paged_decode", &paged_decode); }
