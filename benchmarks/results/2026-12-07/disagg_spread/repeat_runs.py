import sys
sys.path.insert(0, "/work/main")
from pathlib import Path
from harness.fidelity import one_run, overrides
if __name__ == "__main__":
    ex = ["executor=torch", "executor.dtype=bfloat16"]
    for k in range(4):
        for name, n, seed in (("cal", 20, 1000 + k), ("cmp", 60, 0)):
            d = Path(f"/tmp/fd/rep/{name}{k}")
            one_run(overrides("small_llama", "disagg", 2.0, n, "cpu_small_llama_sharegpt_tight", ex, seed=seed), d)
            print("done", d, flush=True)
