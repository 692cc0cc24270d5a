"""The S-CMRL network and its baselines (docs/reference.md §1).

- `config`: ModelConfig, everything that fixes an architecture and its loss
- `choices`: the values of its string settings (torch-free, for scmrl-train's --help)
- `models`: S-CMRL, the fusion baselines and the unimodal Spikformer; `build_model`
- `embedding`: spiking patch embeddings (SPS, and the shallow one for 28x28 event frames)
- `attention`: spiking self- and cross-modal attention (spatial, temporal, both)
- `fusion`: the blocks built on attention: MLP, Spikformer, cross-modal residual, baselines' interactions
- `losses`: label-smoothed cross-entropy, the semantic-alignment loss, CMCI's three heads
- `lif`: LIF neurons (the plain loop and the fused autograd Function)
- `lif_triton`, `lif_pool_triton`: CUDA kernels for the LIF and for LIF + max-pool; `kernel_check`
  tests them against the PyTorch path on first use
"""
