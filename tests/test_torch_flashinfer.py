"""flashinfer backend: CPU-checkable metadata, and (GPU only) the kernels vs torch."""
import random

import pytest
import torch

from engines.torch.flashinfer_backend import flashinfer_available, flashinfer_metadata
from engines.torch.paged_attention import SeqSlice


def test_csr_page_tables_from_block_tables():
    seqs = [SeqSlice(0, 5, [3, 1]),        # 5 tokens: 1 page, 5 in the last
            SeqSlice(16, 1, [4, 2, 9]),    # 17 tokens: 3 pages, 1 in the last
            SeqSlice(7, 9, [5, 6, 8, 0])]  # 16 tokens: 2 full pages; spare block unused
    meta = flashinfer_metadata(seqs, block_size=8)
    assert meta.qo_indptr.tolist() == [0, 5, 6, 15]
    assert meta.kv_indptr.tolist() == [0, 1, 4, 6]
    assert meta.kv_indices.tolist() == [3, 4, 2, 9, 5, 6]
    assert meta.kv_last_page_len.tolist() == [5, 1, 8]
    assert meta.qo_indptr.dtype == meta.kv_indices.dtype == torch.int32


def test_csr_rejects_short_block_table():
    with pytest.raises(ValueError, match="need 3"):
        flashinfer_metadata([SeqSlice(16, 1, [0, 1])], block_size=8)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_flashinfer_matches_torch_paged_attention():
    if not flashinfer_available():
        pytest.skip("flashinfer not installed")
    from engines.torch.flashinfer_backend import FlashInferAttention
    from engines.torch.paged_attention import KVCache, TorchAttention, order_for_attention, write_kv
    rng, dev, bs = random.Random(0), torch.device("cuda"), 16
    pool = rng.sample(range(64), 64)
    seqs = [SeqSlice(c, n, [pool.pop() for _ in range(-(-(c + n) // bs))])
            for c, n in [(0, 37), (40, 1), (17, 9), (100, 1)]]
    seqs = [seqs[i] for i in order_for_attention(seqs)]
    cache = KVCache(1, 64, bs, 2, 128, torch.bfloat16, dev)
    cache.data.normal_()
    k_pages, v_pages = cache.layer(0)
    tokens = sum(s.num_new for s in seqs)
    q = torch.randn(tokens, 8, 128, dtype=torch.bfloat16, device=dev)
    k, v = (torch.randn(tokens, 2, 128, dtype=torch.bfloat16, device=dev) for _ in "kv")
    fi = FlashInferAttention(dev, 8, 2, 128, torch.bfloat16, 128 ** -0.5)
    outs = []
    for backend in (TorchAttention(dev), fi):
        meta = backend.build(seqs, bs)
        write_kv(k_pages, v_pages, meta.slot_mapping, k, v)
        outs.append(backend.attend(q, k, v, k_pages, v_pages, meta, 128 ** -0.5).float())
    torch.testing.assert_close(outs[1], outs[0], atol=2e-2, rtol=2e-2)
