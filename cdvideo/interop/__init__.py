"""Interop with the formats people already use: single-file SD1.5 checkpoints and AnimateDiff motion modules,
Custom Diffusion / ClassDiffusion folders, textual-inversion and A1111 embeddings, kohya LoRA, and full pipelines.

Every import and export is checked by loading it with the other side's own loader (diffusers' `from_single_file`,
`load_attn_procs`, `load_textual_inversion`, `load_lora_weights`) in the tests.
"""
