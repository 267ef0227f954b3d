"""Sample sources for the generate stage: vLLM (base + LoRA adapters), OpenAI-compatible HTTP,
the benchmark's references, and imported samples files, all behind `base.SampleSource`.

Kept import-free: `vllm_worker` runs from this package under the vLLM venv, which has none of
the main environment's packages.
"""
