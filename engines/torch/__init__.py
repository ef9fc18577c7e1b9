"""The real reference executor: a Llama-family model over a paged KV cache.

The only package of the project that imports torch. Modules:
  sizes.py / config.py   model-size table and the config dataclass (torch-free)
  checkpoint.py          Hugging Face-format load/save with clear errors
  make_model.py          CLI writing a random-weight checkpoint
  model.py, rope.py      the decoder, run on a whole StepPlan as one flat batch
  paged_attention.py     KV-cache writes and paged attention (CPU / torch SDPA)
  flashinfer_backend.py  CUDA paged attention via flashinfer (unverified here)
  executor.py            TorchExecutor: StepPlan -> StepResult
  bench_step.py          step-time sanity benchmark (python -m engines.torch.bench_step)
Import the submodules directly; this file stays import-light so that
`engines.torch.sizes` and `engines.torch.config` can be used without torch.
"""
